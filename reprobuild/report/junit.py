"""The JUnit XML view (``--junit``) for CI dashboards: one test case per question.

``build-<name>`` fails when that build failed or timed out, ``no-egress`` when a build
(or the fetch phase) tried to reach the network, ``reproducible`` when artifacts differ
(skipped when the builds failed and there was nothing to compare); for ``verify``,
``published:<file>`` fails when that published file's content differs from the rebuild's.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from reprobuild.report.model import Report, Verdict

__all__ = ["render", "to_junit"]


def to_junit(report: Report) -> str:
    """The JUnit document for one report."""
    cases: list[tuple[str, str | None, str]] = []
    for build in report.builds:
        problem = None
        if build.timed_out:
            problem = "timed out"
        elif build.exit_code != 0:
            problem = f"exited with {build.exit_code}"
        cases.append((f"build-{build.name}", problem, build.log_tail))
    egress = [f"{a.build}: {a.kind} {a.name or a.dst}:{a.dport} {a.detail or ''}".rstrip()
              for a in report.egress]
    cases.append(("no-egress", f"{len(egress)} network attempt(s)" if egress else None,
                  "\n".join(egress)))
    diffs = [f"{d.path}: {d.sha256_a} != {d.sha256_b}" for d in report.differences]
    skipped = report.verdict is Verdict.BUILD_FAILED and not diffs
    cases.append(("reproducible", f"{len(diffs)} artifact(s) differ" if diffs else None,
                  "\n".join(diffs)))
    for item in report.verify.artifacts if report.verify else ():
        problem = None
        if item.equivalence in ("content-differs", "not-rebuilt"):
            problem = f"{item.name}: {item.equivalence}"
        text = "\n".join([*(f"only in the published file: {n}" for n in item.only_published),
                          *(f"only in the rebuild: {n}" for n in item.only_rebuilt),
                          *(f"changed: {n}" for n in item.changed),
                          *(f"packaging: {line}" for line in item.packaging)])
        cases.append((f"published:{item.name}", problem, text))
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


def render(report: Report) -> bytes:
    """The JUnit document as UTF-8."""
    return to_junit(report).encode("utf-8")
