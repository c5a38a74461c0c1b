"""The SARIF 2.1.0 log (``--sarif``) for code-scanning dashboards: one result per finding.

Rules: RB001 an unreproducible artifact, RB002 egress (one result per destination, not
per packet), RB003 a failed build; for ``verify``, RB004 a published artifact whose
content differs, RB005 one only repacked.

What GitHub code scanning needs beyond the schema (checked against its ingestion rules):
rules with ``fullDescription`` and ``help``; every result located on a file with a start
line (the project's manifest: a directory cannot be fingerprinted, so alerts would
duplicate on every upload); ``partialFingerprints`` built from the rule, the target and
the artifact or destination, so the same finding keeps one alert night after night;
``security`` tags and a ``security-severity`` on security results; and an
``automationDetails.id`` per target, so several targets can upload into one repository.

Text from a build, a repository or a recipe goes in with its control characters made
visible (:func:`reprobuild.errors.visible`; JSON would carry them escaped, and a dashboard
would show them live) and file locations percent-encoded, as URIs are.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote

from reprobuild import __version__
from reprobuild.errors import visible
from reprobuild.report.model import Report

__all__ = ["RULES", "render", "render_error", "target_id", "to_sarif"]

_HELP_URI = "https://reproducible-builds.org/docs/"

RULES: tuple[dict[str, Any], ...] = (
    {"id": "RB001", "name": "unreproducible-artifact",
     "short": "An artifact differs between two builds of the same commit",
     "full": "Two builds of the same commit in deliberately different environments produced "
             "different bytes, so nobody can check that a release came from this source.",
     "help": "Look at the diffoscope output for the artifact (reprobuild keeps it under "
             "--out): timestamps, paths, locale or ordering leaking into the artifact are the "
             "usual causes. Make the build ignore the varied environment, then check again.",
     "level": "error", "tags": ["reproducibility"]},
    {"id": "RB002", "name": "build-egress",
     "short": "The build (or its fetch phase) tried to reach the network",
     "full": "A build step tried to reach a host while building offline, or the fetch phase "
             "asked for a host outside its allow-list. Nothing left the sandbox, but the "
             "attempt is evidence of a step that downloads code at build time.",
     "help": "Find the build step that contacts the destination (the report lists the "
             "attempt, the process and the time). A legitimate dependency belongs in the "
             "lockfile; anything else is a possible injected step and should be reviewed.",
     "level": "error", "tags": ["security", "supply-chain"], "severity": "8.0"},
    {"id": "RB003", "name": "build-failed",
     "short": "A build failed or timed out",
     "full": "The build did not finish in the sandbox (it exited non-zero or ran out of "
             "time), so its reproducibility could not be checked.",
     "help": "Read the build log's tail in the report (or build.log under --out); builds "
             "run offline with only the fetched dependencies.",
     "level": "warning", "tags": ["reproducibility"]},
    {"id": "RB004", "name": "published-content-differs",
     "short": "A published artifact's content is not what its source builds",
     "full": "The file a registry serves for this release has members or bytes that a "
             "rebuild of the claimed source does not produce.",
     "help": "Compare the members the report lists as only published, only rebuilt or "
             "changed; a file only in the published artifact was not built from this "
             "commit and deserves a review.",
     "level": "error", "tags": ["security", "supply-chain"], "severity": "7.0"},
    {"id": "RB005", "name": "published-repacked",
     "short": "A published artifact has the rebuild's content, packed differently",
     "full": "Every member of the published file matches the rebuild; only the packaging "
             "(member order, times, modes, compression) differs.",
     "help": "Nothing was added or changed; pinning the release's packing conditions "
             "(shown in the report) makes the files bit-identical.",
     "level": "note", "tags": ["reproducibility"]},
)


def target_id(report: Report) -> str:
    """A stable name of what was checked: source plus project directory."""
    source = report.source.url.rstrip("/")
    return f"{source}/{report.source.subdir}" if report.source.subdir else source


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()


def _location(report: Report) -> dict[str, Any]:
    """The project's manifest, first line (what dashboards need to place and track it)."""
    path = report.recipe.manifest
    if path is None:
        path = f"{report.source.subdir}/" if report.source.subdir else "."
        return {"physicalLocation": {"artifactLocation": {"uri": quote(path)}}}
    return {"physicalLocation": {"artifactLocation": {"uri": quote(path)},
                                 "region": {"startLine": 1}}}


def _findings(report: Report) -> list[tuple[str, str, str]]:
    """(rule, what it is about, message) for every finding, egress merged per destination."""
    found: list[tuple[str, str, str]] = []
    for diff in report.differences:
        text = f"{diff.path} is not reproducible: sha256 {diff.sha256_a} vs {diff.sha256_b}"
        if diff.diffoscope and diff.diffoscope.text:
            text += f" (diffoscope: {diff.diffoscope.text})"
        for finding in diff.findings:
            culprits = ", ".join(finding.culprits) or finding.attribution
            text += f". {finding.label} ({culprits}): {finding.what}; fix: {finding.hint}"
        found.append(("RB001", diff.path, text))
    destinations: dict[str, list[str]] = {}
    for attempt in report.egress:
        where = f"{attempt.name or attempt.dst}:{attempt.dport}"
        destinations.setdefault(where, []).append(
            f"{attempt.phase} {attempt.build}: {attempt.kind} {attempt.detail or ''}".rstrip())
    for where, attempts in destinations.items():
        seen = list(dict.fromkeys(attempts))
        text = (f"the build tried to reach {where} ({len(attempts)} attempt(s): "
                f"{'; '.join(seen[:3])}{'; ...' if len(seen) > 3 else ''})")
        found.append(("RB002", where, text))
    for build in report.builds:
        if build.timed_out or build.exit_code != 0:
            how = "timed out" if build.timed_out else f"exited with {build.exit_code}"
            found.append(("RB003", f"build-{build.name}", f"build {build.name} {how}"))
    for item in report.verify.artifacts if report.verify else ():
        if item.equivalence in ("content-differs", "not-rebuilt"):
            parts = [f"only in the published file: {', '.join(item.only_published)}"
                     if item.only_published else "",
                     f"changed: {', '.join(item.changed)}" if item.changed else "",
                     f"only in the rebuild: {', '.join(item.only_rebuilt)}"
                     if item.only_rebuilt else ""]
            detail = "; ".join(p for p in parts if p) or item.equivalence
            found.append(("RB004", item.name, f"{item.name}: {detail}"))
        elif item.equivalence == "content-equal":
            found.append(("RB005", item.name,
                          f"{item.name}: " + "; ".join(item.packaging or ("repacked",))))
    return found


def _rules() -> list[dict[str, Any]]:
    rules = []
    for rule in RULES:
        properties: dict[str, Any] = {"tags": rule["tags"]}
        if "severity" in rule:
            properties["security-severity"] = rule["severity"]
        rules.append({"id": rule["id"], "name": rule["name"],
                      "shortDescription": {"text": rule["short"]},
                      "fullDescription": {"text": rule["full"]},
                      "help": {"text": rule["help"]}, "helpUri": _HELP_URI,
                      "defaultConfiguration": {"level": rule["level"]},
                      "properties": properties})
    return rules


def _run(report: Report | None, target: str, results: list[dict[str, Any]],
         *, success: bool, message: str | None = None) -> dict[str, Any]:
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "reprobuild", "version": __version__,
                            "informationUri": _HELP_URI, "rules": _rules()}},
        "automationDetails": {"id": f"reprobuild/{visible(target)}/"},
        "invocations": [{"executionSuccessful": success, **(
            {"toolExecutionNotifications": [{"level": "error",
                                             "message": {"text": visible(message)}}]}
            if message else {})}],
        "results": results,
    }
    if report is not None:
        url = report.source.url
        if "://" in url:  # a local path is not a repository URI
            run["versionControlProvenance"] = [{
                "repositoryUri": visible(url),
                "revisionId": visible(report.source.commit or "")}]
        run["properties"] = {"verdict": report.verdict.value, "target": visible(target)}
    return run


def to_sarif(report: Report) -> dict[str, Any]:
    """The SARIF log of one report."""
    target = target_id(report)
    levels = {r["id"]: r["level"] for r in RULES}
    location = _location(report)
    results = [{"ruleId": rule, "level": levels[rule], "message": {"text": visible(text)},
                "locations": [location],
                "partialFingerprints": {"reprobuild/v1": _fingerprint(rule, target, about)}}
               for rule, about, text in _findings(report)]
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
            "runs": [_run(report, target, results, success=True)]}


def render(report: Report) -> bytes:
    """The SARIF log as indented JSON."""
    return (json.dumps(to_sarif(report), indent=2) + "\n").encode("utf-8")


def render_error(message: str, exit_code: int) -> bytes:
    """A run that ended before a verdict: no results, the error as a notification."""
    log = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
           "runs": [_run(None, "error", [], success=False,
                         message=f"{message} (exit {exit_code})")]}
    return (json.dumps(log, indent=2) + "\n").encode("utf-8")
