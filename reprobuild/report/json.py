"""The JSON report (``--json``, and ``report.json`` under ``--out``): the model as-is.

Field names and order are the public ``reprobuild.report/v1`` schema (README, "Report
format"): ``schema``, ``tool``, ``verdict`` and ``exit_code`` first, then the model's
fields in declaration order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from reprobuild import __version__
from reprobuild.evidence import EgressAttempt
from reprobuild.report.model import SCHEMA, Report, Verdict

__all__ = ["error_dict", "render", "render_error", "to_dict"]


def to_dict(report: Report) -> dict[str, Any]:
    """The JSON object for a report (field order is stable: schema first)."""
    raw = asdict(report)
    for optional in ("verify", "explanation"):
        if raw[optional] is None:
            del raw[optional]  # a check's report is exactly the v1 schema it always was
    raw["verdict"] = report.verdict.value
    raw["exit_code"] = int(report.exit_code)
    ordered = {"schema": raw.pop("schema"), "tool": raw.pop("tool"),
               "verdict": raw.pop("verdict"), "exit_code": raw.pop("exit_code")}
    ordered.update(raw)
    return ordered


def error_dict(message: str, exit_code: int,
               egress: Sequence[EgressAttempt] = ()) -> dict[str, Any]:
    """A minimal report for runs that ended before a verdict (bad input, no Docker, an
    interrupt), with the network attempts the trap saw before it (evidence survives)."""
    return {"schema": SCHEMA, "tool": {"name": "reprobuild", "version": __version__},
            "verdict": Verdict.ERROR.value, "exit_code": exit_code, "message": message,
            "builds": [], "differences": [], "egress": [asdict(a) for a in egress]}


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def render(report: Report) -> bytes:
    """The report as indented JSON."""
    return _dump(to_dict(report))


def render_error(message: str, exit_code: int,
                 egress: Sequence[EgressAttempt] = ()) -> bytes:
    """The minimal report of a run that ended with an error."""
    return _dump(error_dict(message, exit_code, egress))
