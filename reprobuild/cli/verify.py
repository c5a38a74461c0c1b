"""``reprobuild verify``: options in, :class:`~reprobuild.pipeline.verify.VerifyOptions` to
the core, the report out in every format asked for, the summary, the exit code, and the
attestation of a match."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from reprobuild import ecosystems
from reprobuild.atomic import write_output
from reprobuild.cli.check import (
    ReportFiles,
    check_output_path,
    run_and_report,
    stdout_taken,
    timeout_option,
    with_report_options,
)
from reprobuild.cli.console import err, escape
from reprobuild.cli.summary import print_summary
from reprobuild.errors import InputError
from reprobuild.report import Verdict
from reprobuild.variations import parse_variations

__all__ = ["parse_env", "verify"]


def parse_env(items: list[str]) -> tuple[tuple[str, str | None], ...]:
    """``KEY=VALUE`` pairs; ``KEY=`` leaves KEY unset in the rebuild."""
    found = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"--env {item!r} is not KEY=VALUE",
                             "write --env SOURCE_DATE_EPOCH=1700000000, or KEY= to unset it")
        found.append((key, value if value else None))
    return tuple(found)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@with_report_options(before="out_dir")
def verify(
    source: Annotated[str, typer.Argument(
        help="git URL, local repository or directory; a release, "
             f"{ecosystems.release_forms()} (its source archive); or a local source archive")],
    report_files: ReportFiles,
    ref: Annotated[str | None, typer.Option(help="branch, tag or commit (git sources)")] = None,
    subdir: Annotated[str | None, typer.Option(help="project directory inside a monorepo")] = None,
    recipe: Annotated[str | None, typer.Option(help="recipe name (default: detect)")] = None,
    against: Annotated[list[str] | None, typer.Option(
        "--against", help="published artifact: a file, an https URL, or a release, "
                          f"{ecosystems.release_forms()} (repeatable; default: the "
                          "release the project's own metadata names)")]
    = None,
    env: Annotated[list[str] | None, typer.Option(
        "--env", help="KEY=VALUE for the rebuild, KEY= to unset (repeatable; overrides what "
                      "was inferred)")] = None,
    pin: Annotated[list[str] | None, typer.Option(
        "--pin", help="NAME==VERSION build requirement for the rebuild (repeatable)")] = None,
    twice: Annotated[bool, typer.Option(
        "--twice", help="also build twice in varied environments and compare, as check does")]
    = False,
    variations: Annotated[str, typer.Option(help="with --twice: what build B varies")] = "all",
    timeout: Annotated[float | None, typer.Option(
        help="wall-clock seconds per build [default: recipe's, else 1800]")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="keep reports, logs, diffoscope output, published and rebuilt files here "
                      "(must not exist or be empty)", file_okay=False)] = None,
    attest: Annotated[Path | None, typer.Option(
        "--attest", help="on a match, write an in-toto/SLSA provenance statement here",
        dir_okay=False)] = None,
    ca_cert: Annotated[Path | None, typer.Option(
        help="PEM CA bundle for the fetch phase (registries behind an intercepting proxy)",
        envvar="REPROBUILD_CA_CERT", exists=True, dir_okay=False)] = None,
    no_diffoscope: Annotated[bool, typer.Option(
        "--no-diffoscope", help="report differences without explaining them")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, no summary")] = False,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Rebuild SOURCE and prove it is (or is not) what the registry serves."""
    del debug  # read by main() before Typer runs
    from reprobuild.pipeline.verify import VerifyOptions, run_verify  # noqa: PLC0415 - not for check

    started = time.time()

    def options() -> VerifyOptions:
        if attest is not None:
            check_output_path("--attest", attest)
        return VerifyOptions(
            source=source, ref=ref, subdir=subdir, recipe=recipe,
            against=tuple(against or ()), env=parse_env(env or []), pins=tuple(pin or ()),
            twice=twice, variations=parse_variations(variations),
            timeout_s=timeout_option(timeout), out_dir=out_dir, ca_cert=ca_cert,
            diffoscope=not no_diffoscope)

    report = run_and_report(options, run_verify, report_files=report_files,
                            out_dir=out_dir, quiet=quiet)
    if attest is not None:
        if report.verdict is Verdict.REPRODUCIBLE:
            from reprobuild import attestation  # noqa: PLC0415 - only for a match

            write_output(attestation.render(attestation.statement(
                report, started=_iso(started), finished=_iso(time.time()))), attest)
        elif not quiet:
            err.print(f"[yellow]warning:[/yellow] no attestation written to {escape(str(attest))}: "
                      "the release did not match bit for bit")
    if not quiet:
        print_summary(report, to_stderr=stdout_taken(report_files))
    raise typer.Exit(int(report.exit_code))
