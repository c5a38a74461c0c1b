"""A batch's reports: the batch JSON, and JUnit, SARIF and Markdown made of the targets'.

Everything here works on the batch JSON (``reprobuild.batch/v1``), which embeds every
target's own reports, so ``batch`` and ``merge`` (shards from several machines) render the
same files the same way: JUnit is one ``testsuite`` per target, SARIF one ``run`` per
target (each with its own ``automationDetails.id``), Markdown a verdict table, then each
target's summary, regressions first when a history is kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

from reprobuild.report.markdown import ICON, cell

__all__ = ["FORMATS", "merge", "render_json", "render_junit", "render_markdown",
           "render_sarif"]

_ICON = {verdict.value: mark for verdict, mark in ICON.items()}


def merge(batches: Sequence[Mapping[str, Any]], *, combined_exit: Any) -> dict[str, Any]:
    """One batch result from several shards' (targets in batch-file order)."""
    targets = sorted((t for b in batches for t in b.get("targets", [])),
                     key=lambda t: (t.get("index", 0), t.get("name", "")))
    names = [t["name"] for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"target {duplicates[0]!r} is in more than one report")
    first = batches[0] if batches else {}
    return {"schema": first.get("schema", "reprobuild.batch/v1"),
            "exit_code": combined_exit([t["exit_code"] for t in targets]),
            "batch": first.get("batch", ""), "shard": "merged",
            "jobs": max((b.get("jobs", 1) for b in batches), default=1),
            "seconds": round(max((b.get("seconds", 0.0) for b in batches), default=0.0), 3),
            "targets": targets, "host": first.get("host", {}),
            **({"history": [e for b in batches for e in b.get("history", [])]}
               if any("history" in b for b in batches) else {})}


def render_json(batch: Mapping[str, Any]) -> bytes:
    """The batch JSON."""
    return (json.dumps(batch, indent=2) + "\n").encode()


def render_junit(batch: Mapping[str, Any]) -> bytes:
    """Every target's test suite in one document."""
    root = ET.Element("testsuites", name=f"reprobuild batch {batch.get('batch', '')}")
    for target in batch.get("targets", []):
        try:
            # Expat (>= 2.4.1, as every supported Python ships) caps entity expansion and
            # ElementTree resolves no external entities: the file is our own JUnit.
            doc = ET.fromstring(target.get("junit") or "<testsuites/>")  # noqa: S314
        except ET.ParseError:
            doc = ET.Element("testsuites")
        suites = doc.findall("testsuite")
        if not suites:  # the target's process died before writing one
            suite = ET.SubElement(root, "testsuite", name=f"reprobuild {target['name']}",
                                  tests="1", failures="1", errors="0", time="0")
            case = ET.SubElement(suite, "testcase", classname=f"reprobuild.{target['name']}",
                                 name="run", time="0")
            ET.SubElement(case, "failure", message=f"exit {target['exit_code']}",
                          type=f"exit-{target['exit_code']}").text = target.get(
                "stderr_tail", "")
        for suite in suites:
            suite.set("name", f"reprobuild {target['name']}")
            for case in suite.findall("testcase"):
                case.set("classname", f"reprobuild.{target['name']}")
            root.append(suite)
    ET.indent(root)
    return (ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n").encode()


def render_sarif(batch: Mapping[str, Any]) -> bytes:
    """Every target's run in one log; each run's automation id names its target."""
    runs = []
    for target in batch.get("targets", []):
        for run in (target.get("sarif") or {}).get("runs", []):
            runs.append({**run, "automationDetails": {"id": f"reprobuild/{target['name']}/"}})
    log = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
           "runs": runs}
    return (json.dumps(log, indent=2) + "\n").encode()


def render_markdown(batch: Mapping[str, Any]) -> bytes:
    """The verdict table (regressions first when known), then each target's summary."""
    targets = list(batch.get("targets", []))
    lines = [f"## reprobuild: {len(targets)} target(s), exit {batch.get('exit_code')}", ""]
    changes = [e for e in batch.get("history", []) if e.get("change")]
    if changes:
        lines += ["**Changes since the last run:**", ""]
        lines += [f"- **{cell(e['name'])}**: {cell(e['change'])}" for e in changes]
        lines.append("")
    lines += ["| target | verdict | exit | time |", "|---|---|---|---|"]
    for target in targets:
        verdict = str(target.get("verdict", "error"))
        lines.append(f"| {cell(target['name'])} | {_ICON.get(verdict, '')} {cell(verdict)} | "
                     f"{target['exit_code']} | {float(target.get('seconds', 0)):.0f} s |")
    lines.append("")
    for target in targets:
        if target.get("markdown"):
            lines += [target["markdown"].rstrip(), ""]
    return ("\n".join(lines) + "\n").encode()


FORMATS: dict[str, Any] = {"json": render_json, "junit": render_junit,
                           "sarif": render_sarif, "markdown": render_markdown}
"""Batch report options: ``--<name> FILE`` for each."""
