"""The JUnit XML view (``--junit``) for CI dashboards: one test case per question.

``build-<name>`` fails when that build failed or timed out, ``no-egress`` when a build
(or the fetch phase) tried to reach the network, ``reproducible`` when artifacts differ
(skipped when the builds failed and there was nothing to compare); for ``verify``,
``published:<file>`` fails when that published file's content differs from the rebuild's.

What dashboards read (GitLab, Jenkins, GitHub test reporters): every test case has a
``time`` (its build's, or the phase's), a ``classname`` naming the target (matrix runs of
several targets must not merge into one history), a ``failure@type`` per rule, and the
first differences or destinations in the failure message; the suite has a ``timestamp``
and ``hostname``. A run that ended with an error is one failing ``run`` case, so the file
exists on every exit path.

Text from a build, a repository or a recipe (log tails, names, egress details, error
messages) goes in with its control characters made visible
(:func:`reprobuild.errors.visible`): XML 1.0 cannot carry most of them at all, so one ESC
in a log would make the whole file unparseable, and a dashboard would show the rest live.
"""

from __future__ import annotations

import re
import socket
import time
from datetime import datetime, timezone
from xml.etree import ElementTree as ET

from reprobuild.errors import visible
from reprobuild.evidence import destinations
from reprobuild.report.model import Report, Verdict
from reprobuild.report.sarif import target_id

__all__ = ["classname", "render", "render_error", "to_junit"]

_TOP = 3


def classname(target: str) -> str:
    """A dotted classname from a target ("github.com/o/r/src/x" -> "reprobuild.github_com.o.r.
    src.x"), stable and free of characters dashboards split on."""
    words = [re.sub(r"[^0-9A-Za-z_-]+", "_", w) for w in re.split(r"[/:]+", target) if w]
    return ".".join(["reprobuild", *words]) if words else "reprobuild"


def _stamp(started: float) -> str:
    return datetime.fromtimestamp(started, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _top(lines: list[str]) -> str:
    shown = "; ".join(lines[:_TOP])
    return shown + (f"; and {len(lines) - _TOP} more" if len(lines) > _TOP else "")


def _suite(name: str, cls: str, cases: list[tuple[str, str | None, str, str, float]],
           total: float, *, skipped: frozenset[str] = frozenset()) -> ET.Element:
    suite = ET.Element("testsuite", name=visible(name), tests=str(len(cases)),
                       failures=str(sum(1 for c in cases if c[1] and c[0] not in skipped)),
                       errors="0", skipped=str(len(skipped)), time=f"{total:.3f}",
                       timestamp=_stamp(time.time() - total), hostname=socket.gethostname())
    for case_name, problem, kind, text, seconds in cases:
        case = ET.SubElement(suite, "testcase", classname=cls, name=visible(case_name),
                             time=f"{seconds:.3f}")
        if case_name in skipped:
            ET.SubElement(case, "skipped", message="builds failed; nothing to compare")
        elif problem:
            failure = ET.SubElement(case, "failure", message=visible(problem),
                                    type=visible(kind))
            failure.text = visible(text, lines=True)
    return suite


def to_junit(report: Report) -> str:
    """The JUnit document for one report."""
    cases: list[tuple[str, str | None, str, str, float]] = []
    for build in report.builds:
        problem = None
        if build.timed_out:
            problem = "timed out"
        elif build.exit_code != 0:
            problem = f"exited with {build.exit_code}"
        cases.append((f"build-{build.name}", problem, "build-failed", build.log_tail,
                      build.duration_s))
    tried = destinations(report.egress)
    egress = [f"{a.build}: {a.kind} {a.name or a.dst}:{a.dport} {a.detail or ''}".rstrip()
              for a in report.egress]
    cases.append(("no-egress", f"tried to reach {_top(tried)}" if egress else None,
                  "build-egress", "\n".join(egress), report.timings.get("fetch_s", 0.0)))
    diffs = [f"{d.path}: {d.sha256_a} != {d.sha256_b}" + "".join(
        f"\n  {f.label} ({', '.join(f.culprits) or f.attribution}): {f.what}; fix: {f.hint}"
        for f in d.findings) for d in report.differences]
    skipped = frozenset({"reproducible"} if report.verdict is Verdict.BUILD_FAILED and not diffs
                        else ())
    cases.append(("reproducible",
                  f"{len(diffs)} artifact(s) differ: {_top([d.path for d in report.differences])}"
                  if diffs else None, "unreproducible-artifact", "\n".join(diffs),
                  report.timings.get("compare_s", 0.0)))
    for item in report.verify.artifacts if report.verify else ():
        problem = None
        if item.equivalence in ("content-differs", "not-rebuilt"):
            changed = [*item.only_published, *item.changed, *item.only_rebuilt]
            problem = f"{item.name}: {item.equivalence}" + (f": {_top(changed)}"
                                                             if changed else "")
        text = "\n".join([*(f"only in the published file: {n}" for n in item.only_published),
                          *(f"only in the rebuild: {n}" for n in item.only_rebuilt),
                          *(f"changed: {n}" for n in item.changed),
                          *(f"packaging: {line}" for line in item.packaging)])
        cases.append((f"published:{item.name}", problem, "published-content-differs", text,
                      0.0))
    target = target_id(report)
    root = ET.Element("testsuites")
    root.append(_suite(f"reprobuild {target}", classname(target), cases,
                       report.timings.get("total_s", 0.0), skipped=skipped))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def render(report: Report) -> bytes:
    """The JUnit document as UTF-8."""
    return to_junit(report).encode("utf-8")


def render_error(message: str, exit_code: int) -> bytes:
    """A run that ended before a verdict: one failing ``run`` case with the error."""
    root = ET.Element("testsuites")
    root.append(_suite("reprobuild", "reprobuild", [("run", message, f"exit-{exit_code}",
                                                     message, 0.0)], 0.0))
    ET.indent(root)
    return (ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n").encode()
