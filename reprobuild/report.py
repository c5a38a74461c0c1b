"""The check report: one frozen data model, rendered as JSON for machines.

The JSON field names are a public interface (nightly CI jobs parse them), documented in
README.md under "Report format"; ``SCHEMA`` changes whenever a field changes meaning.
Human rendering lives in ``cli.py``; this module never prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from reprobuild import __version__
from reprobuild.atomic import write_bytes_atomic
from reprobuild.errors import ExitCode

SCHEMA = "reprobuild.report/v1"


class Verdict(str, Enum):
    """The one-word answer; each maps to exactly one exit code."""

    REPRODUCIBLE = "reproducible"
    UNREPRODUCIBLE = "unreproducible"
    EGRESS = "egress"
    BUILD_FAILED = "build-failed"
    ERROR = "error"


def exit_code_for(verdict: Verdict) -> ExitCode:
    """The process exit code that goes with a verdict."""
    match verdict:
        case Verdict.REPRODUCIBLE:
            return ExitCode.REPRODUCIBLE
        case Verdict.UNREPRODUCIBLE:
            return ExitCode.UNREPRODUCIBLE
        case Verdict.EGRESS:
            return ExitCode.EGRESS
        case Verdict.BUILD_FAILED:
            return ExitCode.BUILD_FAILED
        case Verdict.ERROR:
            return ExitCode.ENVIRONMENT


@dataclass(frozen=True)
class SourceInfo:
    """Where the source came from and exactly which tree was built."""

    url: str
    kind: str
    ref: str | None
    commit: str | None
    commit_time: int | None
    subdir: str
    tree_sha256: str
    files: int


@dataclass(frozen=True)
class RecipeInfo:
    """Which recipe built it, and from which file."""

    name: str
    origin: str
    commands: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class ToolchainInfo:
    """The pinned image the builds ran in, and every package version inside it."""

    image: str
    image_id: str
    definition_sha256: str
    versions: dict[str, str]


@dataclass(frozen=True)
class OutputInfo:
    """One artifact a build produced."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BuildInfo:
    """One of the two builds: its environment, result, outputs and log."""

    name: str
    variations: dict[str, str]
    exit_code: int | None
    timed_out: bool
    duration_s: float
    outputs: tuple[OutputInfo, ...]
    log: str
    log_tail: str


@dataclass(frozen=True)
class DiffoscopeInfo:
    """Where diffoscope's explanation of one difference is, and how the run went."""

    text: str | None
    html: str | None
    exit_code: int | None
    timed_out: bool
    excerpt: str


@dataclass(frozen=True)
class DifferenceInfo:
    """One artifact whose bytes differ between the builds (or exists in only one)."""

    path: str
    sha256_a: str | None
    sha256_b: str | None
    diffoscope: DiffoscopeInfo | None


@dataclass(frozen=True)
class Report:
    """Everything a check found; ``verdict`` decides the exit code."""

    verdict: Verdict
    source: SourceInfo
    recipe: RecipeInfo
    toolchain: ToolchainInfo
    variations: tuple[str, ...]
    builds: tuple[BuildInfo, ...]
    differences: tuple[DifferenceInfo, ...]
    timings: dict[str, float]
    out_dir: str | None
    egress: tuple[dict[str, Any], ...] = ()
    fetch: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    message: str | None = None
    schema: str = SCHEMA
    tool: dict[str, str] = field(default_factory=lambda: {"name": "reprobuild",
                                                          "version": __version__})

    @property
    def exit_code(self) -> ExitCode:
        """The exit code this report's verdict maps to."""
        return exit_code_for(self.verdict)


def to_dict(report: Report) -> dict[str, Any]:
    """The JSON object for a report (field order is stable: schema first)."""
    raw = asdict(report)
    raw["verdict"] = report.verdict.value
    raw["exit_code"] = int(report.exit_code)
    ordered = {"schema": raw.pop("schema"), "tool": raw.pop("tool"),
               "verdict": raw.pop("verdict"), "exit_code": raw.pop("exit_code")}
    ordered.update(raw)
    return ordered


def error_dict(message: str, exit_code: int) -> dict[str, Any]:
    """A minimal report for runs that ended before a verdict (bad input, no Docker)."""
    return {"schema": SCHEMA, "tool": {"name": "reprobuild", "version": __version__},
            "verdict": Verdict.ERROR.value, "exit_code": exit_code, "message": message,
            "builds": [], "differences": [], "egress": []}


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    """Write JSON so a reader never sees a half-written file (temp file + rename)."""
    write_text_atomic(json.dumps(data, indent=2) + "\n", path)


def to_junit(report: Report) -> str:
    """A JUnit XML view for CI dashboards: one test case per question a check answers.

    ``build-a``/``build-b`` fail when a build failed or timed out, ``no-egress`` when the
    build tried to reach the network, ``reproducible`` when artifacts differ.
    """
    cases: list[tuple[str, str | None, str]] = []
    for build in report.builds:
        problem = None
        if build.timed_out:
            problem = "timed out"
        elif build.exit_code != 0:
            problem = f"exited with {build.exit_code}"
        cases.append((f"build-{build.name}", problem, build.log_tail))
    egress = [f"{a.get('build')}: {a.get('kind')} {a.get('name') or a.get('dst')}:"
              f"{a.get('dport')} {a.get('detail') or ''}".rstrip() for a in report.egress]
    cases.append(("no-egress", f"{len(egress)} network attempt(s)" if egress else None,
                  "\n".join(egress)))
    diffs = [f"{d.path}: {d.sha256_a} != {d.sha256_b}" for d in report.differences]
    skipped = report.verdict is Verdict.BUILD_FAILED and not diffs
    cases.append(("reproducible", f"{len(diffs)} artifact(s) differ" if diffs else None,
                  "\n".join(diffs)))
    name = report.source.url + (f"/{report.source.subdir}" if report.source.subdir else "")
    suite = ET.Element("testsuite", name=f"reprobuild {name}", tests=str(len(cases)),
                       failures=str(sum(1 for _, p, _ in cases if p)),
                       time=str(report.timings.get("total_s", 0)))
    for case_name, problem, text in cases:
        case = ET.SubElement(suite, "testcase", classname="reprobuild", name=case_name)
        if case_name == "reproducible" and skipped:
            ET.SubElement(case, "skipped", message="builds failed; nothing to compare")
        elif problem:
            failure = ET.SubElement(case, "failure", message=problem)
            failure.text = text
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


_SARIF_RULES = (
    ("RB001", "unreproducible-artifact",
     "An artifact differs between two builds of the same commit"),
    ("RB002", "build-egress",
     "The build (or its fetch phase) tried to reach the network"),
    ("RB003", "build-failed", "A build failed or timed out"),
)


def to_sarif(report: Report) -> dict[str, Any]:
    """A SARIF 2.1.0 log for code-scanning dashboards: one result per finding.

    Results point at the project directory: a build finding belongs to the project, not
    to one line of it.
    """
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
        target = attempt.get("name") or attempt.get("dst")
        text = (f"{attempt.get('phase')} {attempt.get('build')}: {attempt.get('kind')} to "
                f"{target}:{attempt.get('dport')} {attempt.get('detail') or ''}").rstrip()
        results.append({"ruleId": "RB002", "level": "error", "message": {"text": text},
                        "locations": location})
    for build in report.builds:
        if build.timed_out or build.exit_code != 0:
            how = "timed out" if build.timed_out else f"exited with {build.exit_code}"
            results.append({"ruleId": "RB003", "level": "warning",
                            "message": {"text": f"build {build.name} {how}"},
                            "locations": location})
    rules = [{"id": rid, "name": name, "shortDescription": {"text": text}}
             for rid, name, text in _SARIF_RULES]
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


def write_text_atomic(text: str, path: Path) -> None:
    """Write a text file so a reader never sees it half-written."""
    write_bytes_atomic(text.encode("utf-8"), path)
