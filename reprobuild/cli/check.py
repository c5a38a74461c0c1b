"""``reprobuild check``: options in, :class:`~reprobuild.pipeline.check.CheckOptions` to the
core, the report out in every format asked for, the summary, the exit code.

The report-file options (``--json``, ``--junit``, ``--sarif``) are not written here: they
come from :data:`reprobuild.report.formats.FORMATS` through :func:`with_report_options`,
so a new format is an option of every command that writes reports without touching this
file.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from reprobuild.atomic import write_output
from reprobuild.cli.console import RichProgress, err
from reprobuild.cli.summary import print_summary
from reprobuild.errors import InputError, ReprobuildError, visible
from reprobuild.evidence import EgressAttempt, destinations
from reprobuild.explain.search import DEFAULT_BUDGET, parse_budget
from reprobuild.pipeline.check import CheckOptions, run_check
from reprobuild.progress import Progress
from reprobuild.recipes import MAX_TIMEOUT_S, check_number
from reprobuild.report import Report
from reprobuild.report import json as json_report
from reprobuild.report.formats import FORMATS, by_name, write_report
from reprobuild.report.markdown import INDEX_NAME, index_markdown
from reprobuild.variations import parse_variations

__all__ = [
    "STDOUT",
    "ReportFiles",
    "annotate",
    "check",
    "check_output_path",
    "check_report_files",
    "emit",
    "run_and_report",
    "stdout_taken",
    "step_summary",
    "timeout_option",
    "with_report_options",
    "write_error_reports",
    "write_evidence_index",
    "write_reports",
]

_Options = TypeVar("_Options")
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


STDOUT = Path("-")
"""``--json -``: the report on standard output (the summary then goes to stderr)."""


def check_report_files(files: ReportFiles) -> None:
    """Refuse report paths that cannot be written before any work starts: a directory, the
    same file for two formats, standard output twice."""
    seen: dict[str, str] = {}
    for name, path in files.items():
        if path is None:
            continue
        key = "-" if path == STDOUT else os.path.realpath(path)
        if key in seen:
            raise InputError(f"--{name} and --{seen[key]} both write to {path}",
                             "give each report its own file")
        seen[key] = name
        if path != STDOUT:
            check_output_path(f"--{name}", path)


def check_output_path(option: str, path: Path) -> None:
    """Refuse, before any work, a file the run could not write at its end: a directory, a
    device or FIFO not open to us, a parent directory that is missing or not writable
    (``--json /proc/x/r.json``). A device, FIFO or a symlink to one is written through
    (:func:`~reprobuild.atomic.write_output`), anything else is replaced atomically in its
    directory, which is probed by creating (and removing) a file there."""
    try:
        info: os.stat_result | None = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(f"{option} {path}: {exc.strerror or exc}",
                         "name a file in a directory you can write to") from exc
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise InputError(f"{option} {path} is a directory",
                         "name a file to write the report to (or - for stdout)")
    if info is not None and not stat.S_ISREG(info.st_mode):
        if not os.access(path, os.W_OK):
            raise InputError(f"{option} {path} is not writable", "name a file you can write")
        return
    parent = Path(os.path.realpath(path)).parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: directory {parent} does not exist",
                         "create it first, or name a file in an existing directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write in {parent}: "
                         f"{exc.strerror or exc}",
                         "name a file in a directory you can write to") from exc
    os.close(fd)
    Path(probe).unlink()


def timeout_option(value: float | None) -> float | None:
    """``--timeout``: finite, positive seconds, at most a week (``nan`` would be no limit,
    ``inf`` overflows the deadline)."""
    if value is None:
        return None
    return check_number(value, name="--timeout", maximum=MAX_TIMEOUT_S)


def emit(data: bytes, path: Path) -> None:
    if path == STDOUT:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            write_output(data, path)
        except OSError as exc:  # checked at the start; something changed since
            raise InputError(f"cannot write {path}: {exc.strerror or exc}",
                             "name a file in a directory you can write to") from exc


def step_summary(data: bytes) -> None:
    """Append the Markdown summary to GitHub Actions' job summary, when there is one."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with Path(target).open("ab") as handle:
            handle.write(data)


def write_reports(report: Report, files: ReportFiles) -> None:
    """Write every report file the user asked for (and the job summary in GitHub Actions)."""
    for name, path in files.items():
        if path is not None:
            emit(by_name(name).render(report), path)
    step_summary(by_name("markdown").render(report))
    annotate(report)


def write_error_reports(exc: ReprobuildError, files: ReportFiles) -> None:
    """A run that ended in an error still leaves every report it asked for, and what the
    trap saw before it (an interrupted run's network attempts) is in them."""
    seen: tuple[EgressAttempt, ...] = getattr(exc, "egress", ())
    message = exc.message
    if seen:
        where = destinations(seen)
        message += (f"; before that the build made {len(seen)} network attempt(s): "
                    f"{', '.join(where[:5])}{' …' if len(where) > 5 else ''}")
    for name, path in files.items():
        fmt = by_name(name)
        if path is None or fmt.render_error is None:
            continue
        with contextlib.suppress(OSError):  # the error itself is what the user needs
            data = (json_report.render_error(message, int(exc.exit_code), egress=seen)
                    if name == "json" else fmt.render_error(message, int(exc.exit_code)))
            emit(data, path)
    render_error = by_name("markdown").render_error
    if render_error is not None:
        step_summary(render_error(message, int(exc.exit_code)))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(f"::error title=reprobuild error (exit {int(exc.exit_code)})::"
              f"{_annotation(exc.message)}", file=sys.stderr)


def _annotation(text: str) -> str:
    """GitHub's workflow-command escaping; control characters are shown (``\x1b``), never
    live in the log, as everywhere else (:func:`reprobuild.errors.visible`)."""
    return visible(text).replace("%", "%25")


def annotate(report: Report) -> None:
    """``::error``/``::warning`` lines for GitHub Actions (only when running there)."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    title = f"reprobuild {report.verdict.value}"
    lines = [f"::error title={title}::{_annotation(d.path)} is not reproducible"
             for d in report.differences]
    lines += [f"::error title={title}::the build tried to reach {_annotation(where)}"
              for where in destinations(report.egress)]
    lines += [f"::warning title=reprobuild::{_annotation(w)}" for w in report.warnings]
    if report.message and not lines:
        lines.append(f"::{'notice' if report.exit_code == 0 else 'error'} title={title}::"
                     f"{_annotation(report.message)}")
    for line in lines:  # GitHub reads workflow commands from stdout and stderr alike
        print(line, file=sys.stderr)


def run_and_report(options: Callable[[], _Options], run: Callable[[_Options, Progress], Report],
                   *, report_files: ReportFiles, out_dir: Path | None, quiet: bool) -> Report:
    """Check the report paths, build the command's ``options`` (parsing them can fail with a
    bad-input error, which still leaves every report), run its core with progress, and
    write every report file it asked for, on an error too."""
    check_report_files(report_files)
    try:
        parsed = options()
        with RichProgress(err, enabled=not quiet) as progress:
            report = run(parsed, progress)
    except ReprobuildError as exc:
        write_error_reports(exc, report_files)
        raise
    write_reports(report, report_files)
    if report.out_dir:
        write_evidence_index(report, Path(report.out_dir))
    return report


def write_evidence_index(report: Report, where: Path) -> None:
    """``report.json`` and ``summary.md`` (an index linking every diffoscope report, log
    and the JSON) in the results directory, whether it is ``--out`` or a kept temporary
    one."""
    write_report(by_name("json"), report, where / "report.json")
    write_output(index_markdown(report).encode("utf-8"), where / INDEX_NAME)


def stdout_taken(files: ReportFiles) -> bool:
    """Whether a report goes to standard output (the summary must not)."""
    return any(path == STDOUT for path in files.values())


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
        help="wall-clock seconds per build [default: recipe's, else 1800]")] = None,
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
    explain: Annotated[bool | None, typer.Option(
        "--explain/--no-explain", help="find which variation caused each difference with "
        "extra builds [default: when unreproducible and the budget allows]",
        show_default=False)] = None,
    explain_budget: Annotated[str, typer.Option(
        help="what the explanation may spend: extra builds ('8') or time ('600s', '10m')")
    ] = str(DEFAULT_BUDGET),
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="every network attempt as its own row, every finding's "
                                "members")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, no summary")] = False,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Build SOURCE twice in different environments and compare the outputs bit for bit."""
    del debug  # read by main() before Typer runs
    report = run_and_report(lambda: CheckOptions(
        source=source, ref=ref, subdir=subdir, recipe=recipe,
        variations=parse_variations(variations), timeout_s=timeout_option(timeout),
        out_dir=out_dir, ca_cert=ca_cert, diffoscope=not no_diffoscope, trap=not no_trap,
        explain=explain,
        explain_budget=parse_budget(explain_budget)),
        run_check, report_files=report_files, out_dir=out_dir, quiet=quiet)
    if not quiet:
        print_summary(report, to_stderr=stdout_taken(report_files), verbose=verbose)
    raise typer.Exit(int(report.exit_code))
