"""The SARIF 2.1.0 log (``--sarif``) for code-scanning dashboards: one result per finding.

Rules: RB001 an unreproducible artifact, RB002 egress, RB003 a failed build; for
``verify``, RB004 a published artifact whose content differs, RB005 one only repacked. Results
point at the project directory: a build finding belongs to the project, not to one line.
"""

from __future__ import annotations

import json
from typing import Any

from reprobuild import __version__
from reprobuild.report.model import Report

__all__ = ["RULES", "render", "to_sarif"]

RULES = (
    ("RB001", "unreproducible-artifact",
     "An artifact differs between two builds of the same commit"),
    ("RB002", "build-egress",
     "The build (or its fetch phase) tried to reach the network"),
    ("RB003", "build-failed", "A build failed or timed out"),
    ("RB004", "published-content-differs",
     "A published artifact's content is not what its source builds"),
    ("RB005", "published-repacked",
     "A published artifact has the rebuild's content, packed differently"),
)


def to_sarif(report: Report) -> dict[str, Any]:
    """The SARIF log of one report."""
    where = f"{report.source.subdir}/" if report.source.subdir else "."
    location = [{"physicalLocation": {"artifactLocation": {"uri": where}}}]
    results: list[dict[str, Any]] = []
    for diff in report.differences:
        text = f"{diff.path} is not reproducible: sha256 {diff.sha256_a} vs {diff.sha256_b}"
        if diff.diffoscope and diff.diffoscope.text:
            text += f" (diffoscope: {diff.diffoscope.text})"
        results.append({"ruleId": "RB001", "level": "error", "message": {"text": text},
                        "locations": location})
    for attempt in report.egress:
        target = attempt.name or attempt.dst
        text = (f"{attempt.phase} {attempt.build}: {attempt.kind} to "
                f"{target}:{attempt.dport} {attempt.detail or ''}").rstrip()
        results.append({"ruleId": "RB002", "level": "error", "message": {"text": text},
                        "locations": location})
    for build in report.builds:
        if build.timed_out or build.exit_code != 0:
            how = "timed out" if build.timed_out else f"exited with {build.exit_code}"
            results.append({"ruleId": "RB003", "level": "warning",
                            "message": {"text": f"build {build.name} {how}"},
                            "locations": location})
    for item in report.verify.artifacts if report.verify else ():
        if item.equivalence in ("content-differs", "not-rebuilt"):
            parts = [f"only in the published file: {', '.join(item.only_published)}"
                     if item.only_published else "",
                     f"changed: {', '.join(item.changed)}" if item.changed else "",
                     f"only in the rebuild: {', '.join(item.only_rebuilt)}"
                     if item.only_rebuilt else ""]
            detail = "; ".join(p for p in parts if p) or item.equivalence
            results.append({"ruleId": "RB004", "level": "error",
                            "message": {"text": f"{item.name}: {detail}"},
                            "locations": location})
        elif item.equivalence == "content-equal":
            results.append({"ruleId": "RB005", "level": "note",
                            "message": {"text": f"{item.name}: "
                                        + "; ".join(item.packaging or ("repacked",))},
                            "locations": location})
    rules = [{"id": rid, "name": name, "shortDescription": {"text": text}}
             for rid, name, text in RULES]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "reprobuild", "version": __version__,
                                "rules": rules}},
            "versionControlProvenance": [{"repositoryUri": report.source.url,
                                          "revisionId": report.source.commit or ""}],
            "properties": {"verdict": report.verdict.value},
            "results": results,
        }],
    }


def render(report: Report) -> bytes:
    """The SARIF log as indented JSON."""
    return (json.dumps(to_sarif(report), indent=2) + "\n").encode("utf-8")
