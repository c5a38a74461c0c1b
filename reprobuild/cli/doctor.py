"""``reprobuild doctor``: the machine's fitness for checks, one line per check.

Exit 0 when nothing failed (warnings included), 5 (environment) when something did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reprobuild.cli.console import escape, out, table
from reprobuild.errors import EnvironmentFailure

__all__ = ["doctor"]

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor(
    ca_cert: Annotated[Path | None, typer.Option(
        help="the PEM CA bundle the fetch phase would get", envvar="REPROBUILD_CA_CERT",
        dir_okay=False)] = None,
) -> None:
    """Check the engine, cgroup limits, cpuset, cache disk, CA bundle and images."""
    from reprobuild.pipeline.doctor import Status, run_doctor  # noqa: PLC0415 - Docker side

    findings = run_doctor(ca_cert=ca_cert)
    grid = table()
    for column in ("check", "", "what was seen", "what to do"):
        grid.add_column(column, overflow="fold")
    for finding in findings:
        style = _STYLE[finding.status.value]
        grid.add_row(finding.check, f"[{style}]{finding.status.value}[/{style}]",
                     escape(finding.detail), escape(finding.hint))
    out.print(grid)
    failed = [f.check for f in findings if f.status is Status.FAIL]
    if failed:
        raise EnvironmentFailure(f"{len(failed)} check(s) failed: {', '.join(failed)}",
                                 "fix what the table says, then run 'reprobuild doctor' again")
