"""``reprobuild explain REPORT``: the summary and explanation of an earlier run, again.

A nightly job keeps ``--out`` as an artifact; on a laptop, ``reprobuild explain`` reads its
``report.json`` (or the directory) and prints what ``check`` printed: the verdict, each
difference's causes and fixes, the changed lines, and where the full reports are, with
paths under the directory the report is in now. Nothing is rebuilt and Docker is not
needed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from reprobuild.cli.summary import print_summary
from reprobuild.report.load import load

__all__ = ["explain"]


def explain(
    report_path: Annotated[Path, typer.Argument(
        metavar="REPORT", help="a report.json, or the --out directory of a run")],
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="every network attempt as its own row, every finding's "
                                "members")] = False,
) -> None:
    """Show the verdict, causes and fixes of an earlier run from its JSON report."""
    report = load(report_path)
    where = report_path if report_path.is_dir() else report_path.parent
    print_summary(replace(report, out_dir=str(where.resolve())), verbose=verbose)
