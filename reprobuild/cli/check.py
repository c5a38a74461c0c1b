"""``reprobuild check``: options in, :class:`~reprobuild.pipeline.check.CheckOptions` to the
core, the report out in every format asked for, the summary, the exit code.

The report-file options (``--json``, ``--junit``, ``--sarif``) are not written here: they
come from :data:`reprobuild.report.formats.FORMATS` through :func:`with_report_options`,
so a new format is an option of every command that writes reports without touching this
file.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from reprobuild.cli.console import RichProgress, err
from reprobuild.cli.summary import print_summary
from reprobuild.errors import ReprobuildError
from reprobuild.pipeline.check import CheckOptions, run_check
from reprobuild.progress import Progress
from reprobuild.report import Report
from reprobuild.report.formats import FORMATS, by_name, write_error, write_report
from reprobuild.variations import parse_variations

__all__ = ["ReportFiles", "check", "run_and_report", "with_report_options",
           "write_error_reports", "write_reports"]

ReportFiles = Mapping[str, Path | None]
"""Format name -> the file the user asked for (None: not asked)."""


def with_report_options(before: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one ``--<format> FILE`` option per registered report format.

    The command takes ``report_files`` (format name -> path or None) instead; the options
    go just before its parameter ``before`` in ``--help``.
    """
    return functools.partial(_with_report_options, before=before)


def _with_report_options(func: Callable[..., None], *, before: str) -> Callable[..., None]:
    hints = get_type_hints(func, include_extras=True)
    own = [p.replace(annotation=hints[p.name])
           for p in inspect.signature(func).parameters.values() if p.name != "report_files"]
    added = [inspect.Parameter(
        f"{fmt.name}_file", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[Path | None, typer.Option(f"--{fmt.name}", help=fmt.help,
                                                       dir_okay=False)])
        for fmt in FORMATS]
    split = next(i for i, p in enumerate(own) if p.name == before)
    params = [*own[:split], *added, *own[split:]]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        files = {fmt.name: kwargs.pop(f"{fmt.name}_file") for fmt in FORMATS}
        func(report_files=files, **kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer must read the new signature, not func's
    return command


def write_reports(report: Report, files: ReportFiles) -> None:
    """Write every report file the user asked for."""
    for name, path in files.items():
        if path is not None:
            write_report(by_name(name), report, path)


def write_error_reports(exc: ReprobuildError, files: ReportFiles) -> None:
    """A run that ended in an error still leaves a report where a format has one."""
    for name, path in files.items():
        if path is not None:
            write_error(by_name(name), exc.message, int(exc.exit_code), path)


def run_and_report(run: Callable[[Progress], Report], *, report_files: ReportFiles,
                   out_dir: Path | None, quiet: bool) -> Report:
    """Run a command's core with progress, and write every report file it asked for, on
    an error too (where the format has an error form)."""
    try:
        with RichProgress(err, enabled=not quiet and err.is_terminal) as progress:
            report = run(progress)
    except ReprobuildError as exc:
        write_error_reports(exc, report_files)
        raise
    write_reports(report, report_files)
    if report.out_dir and out_dir is not None:
        write_report(by_name("json"), report, Path(report.out_dir) / "report.json")
    return report


@with_report_options(before="out_dir")
def check(
    source: Annotated[str, typer.Argument(help="git URL, local git repository, or directory")],
    report_files: ReportFiles,
    ref: Annotated[str | None, typer.Option(help="branch, tag or commit (default: HEAD)")] = None,
    subdir: Annotated[str | None, typer.Option(help="project directory inside a monorepo")] = None,
    recipe: Annotated[str | None, typer.Option(help="recipe name (default: detect)")] = None,
    variations: Annotated[str, typer.Option(
        help="what build B varies: 'all', 'none', or a list like 'hostname,clock' or "
             "'all,-cpus' (see 'reprobuild variations')")] = "all",
    timeout: Annotated[float | None, typer.Option(
        help="wall-clock seconds per build [default: recipe's, else 1800]", min=1)] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="keep reports, logs, diffoscope output and both builds' artifacts here "
                      "(must not exist or be empty)", file_okay=False)] = None,
    ca_cert: Annotated[Path | None, typer.Option(
        help="PEM CA bundle handed to the fetch phase (and registry image steps) only, for "
             "registries behind an intercepting proxy", envvar="REPROBUILD_CA_CERT",
        exists=True, dir_okay=False)] = None,
    no_diffoscope: Annotated[bool, typer.Option(
        "--no-diffoscope", help="report differing hashes without explaining them")] = False,
    no_trap: Annotated[bool, typer.Option(
        "--no-trap", help="block the network without recording attempts (for measuring "
                          "the trap's cost; never for real checks)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, no summary")] = False,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Build SOURCE twice in different environments and compare the outputs bit for bit."""
    del debug  # read by main() before Typer runs
    options = CheckOptions(
        source=source, ref=ref, subdir=subdir, recipe=recipe,
        variations=parse_variations(variations), timeout_s=timeout, out_dir=out_dir,
        ca_cert=ca_cert, diffoscope=not no_diffoscope, trap=not no_trap)
    report = run_and_report(lambda progress: run_check(options, progress),
                            report_files=report_files, out_dir=out_dir, quiet=quiet)
    if not quiet:
        print_summary(report)
    raise typer.Exit(int(report.exit_code))
