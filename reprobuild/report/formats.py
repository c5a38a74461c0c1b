"""The output formats, behind one registry the CLI builds its options from.

Each format is its own module rendering a :class:`~reprobuild.report.model.Report` to
bytes; :data:`FORMATS` is the only list of them. Adding a format (Markdown, HTML) is a
module plus one entry here, and ``check`` grows the option by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reprobuild.atomic import write_output
from reprobuild.report import json, junit, markdown, sarif
from reprobuild.report.model import Report

__all__ = ["FORMATS", "ReportFormat", "by_name", "write_error", "write_report"]


@dataclass(frozen=True)
class ReportFormat:
    """One output format: its command-line option and how it renders."""

    name: str
    """The option is ``--<name>``; the parameter name is ``<name>_file``."""
    help: str
    render: Callable[[Report], bytes]
    render_error: Callable[[str, int], bytes] | None = None
    """How a run that ended in an error is written, when the format says anything then."""


FORMATS: tuple[ReportFormat, ...] = (
    ReportFormat("json", "write the JSON report here", json.render, json.render_error),
    ReportFormat("junit", "write a JUnit XML summary here (for CI dashboards)", junit.render,
                 junit.render_error),
    ReportFormat("sarif", "write a SARIF 2.1.0 log here (for code-scanning dashboards)",
                 sarif.render, sarif.render_error),
    ReportFormat("markdown", "write a Markdown summary here (also appended to "
                 "$GITHUB_STEP_SUMMARY in GitHub Actions)", markdown.render,
                 markdown.render_error),
)


def by_name(name: str) -> ReportFormat:
    """The format called ``name``."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(name)


def write_report(fmt: ReportFormat, report: Report, path: Path) -> None:
    """Write ``report`` as ``fmt`` so a reader never sees a half-written file (a device or
    a symlink is written through, see :func:`~reprobuild.atomic.write_output`)."""
    write_output(fmt.render(report), path)


def write_error(fmt: ReportFormat, message: str, exit_code: int, path: Path) -> bool:
    """Write the error report of a format that has one; whether anything was written."""
    if fmt.render_error is None:
        return False
    write_output(fmt.render_error(message, exit_code), path)
    return True
