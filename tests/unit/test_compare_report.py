"""Comparison and the report model, without Docker."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from xml.etree import ElementTree as ET

import pytest

from reprobuild.archive import ExtractedFile
from reprobuild.atomic import write_bytes_atomic
from reprobuild.compare import DiffoscopeLimits, diffoscope_script, mismatches
from reprobuild.errors import ExitCode
from reprobuild.evidence import EgressAttempt
from reprobuild.report import (
    BuildInfo,
    DifferenceInfo,
    RecipeInfo,
    Report,
    SourceInfo,
    ToolchainInfo,
    Verdict,
    decide_verdict,
    exit_code_for,
)
from reprobuild.report.formats import FORMATS, by_name, write_error, write_report
from reprobuild.report.json import error_dict, to_dict
from reprobuild.report.junit import to_junit
from reprobuild.report.sarif import render_error as sarif_render_error
from reprobuild.report.sarif import to_sarif


def f(path: str, digest: str, size: int = 1) -> ExtractedFile:
    return ExtractedFile(path=path, size=size, sha256=digest * 64)


def test_equal_hashes_need_nothing() -> None:
    assert mismatches([f("x.whl", "a"), f("y.tar.gz", "b")],
                      [f("y.tar.gz", "b"), f("x.whl", "a")]) == []


def test_differences_and_missing_files_are_reported_sorted() -> None:
    found = mismatches([f("b.whl", "1"), f("a.tar.gz", "2"), f("only-a", "3")],
                       [f("b.whl", "9"), f("a.tar.gz", "2"), f("only-b", "4")])
    assert [(m.path, m.a is not None, m.b is not None) for m in found] == [
        ("b.whl", True, True), ("only-a", True, False), ("only-b", False, True)]


def test_diffoscope_script_is_capped_and_quoted() -> None:
    limits = DiffoscopeLimits(max_report_bytes=1234, max_diff_block_lines=56)
    script = diffoscope_script("we ird'name.whl", limits)
    command = script.splitlines()[-1]
    argv = shlex.split(command)
    assert argv[:2] == ["exec", "diffoscope"]
    assert argv[argv.index("--max-report-size") + 1] == "1234"
    assert argv[argv.index("--max-diff-block-lines") + 1] == "56"
    assert argv[-2:] == ["/in/a/we ird'name.whl", "/in/b/we ird'name.whl"]
    assert "--text" in argv and "--html" in argv


@pytest.mark.parametrize(("verdict", "code"), [
    (Verdict.REPRODUCIBLE, 0), (Verdict.UNREPRODUCIBLE, 1), (Verdict.EGRESS, 3),
    (Verdict.BUILD_FAILED, 4), (Verdict.ERROR, 5)])
def test_verdict_exit_codes(verdict: Verdict, code: int) -> None:
    assert exit_code_for(verdict) == code


def test_exit_codes_are_stable() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 130]


def write_json_atomic(data: object, path: Path) -> None:
    write_bytes_atomic(json.dumps(data).encode(), path)


def test_atomic_json_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"
    assert write_error(by_name("json"), "boom", 2, target)
    data = json.loads(target.read_text())
    assert data["verdict"] == "error" and data["exit_code"] == 2 and data["message"] == "boom"
    write_json_atomic({"x": 1}, target)
    assert json.loads(target.read_text()) == {"x": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]


def test_atomic_json_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        write_json_atomic({"bad": object()}, target)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _report(verdict: Verdict, *, exit_b: int | None = 0, diffs: int = 0,
            egress: int = 0) -> Report:
    build = BuildInfo(name="a", variations={}, exit_code=0, timed_out=False, duration_s=1.0,
                      outputs=(), log="a/build.log", log_tail="")
    return Report(
        verdict=verdict,
        source=SourceInfo(url="/r", kind="git-local", ref=None, commit="c" * 40,
                          commit_time=0, subdir="s", tree_sha256="t" * 64, files=1),
        recipe=RecipeInfo(name="python", origin="x", commands=(), outputs=()),
        toolchain=ToolchainInfo(image="i", image_id="sha256:x", definition_sha256="d",
                                versions={}),
        variations=(), builds=(build, replace(build, name="b", exit_code=exit_b,
                                              log_tail="boom")),
        differences=tuple(DifferenceInfo(path=f"p{i}.whl", sha256_a="1", sha256_b="2",
                                         diffoscope=None) for i in range(diffs)),
        timings={"total_s": 2.5}, out_dir=None,
        egress=tuple(EgressAttempt(
            build="a", phase="build", kind="http", proto="tcp", family=4, dst="198.18.0.1",
            dport=80, name="x.example", qtype=None, detail="GET / HTTP/1.1", uid=1000,
            pid=None, exe=None, cmdline=None, forged=False, count=None, time=0.1)
            for _ in range(egress)))


def _cases(xml: str) -> dict[str, ET.Element]:
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    return {c.attrib["name"]: c for c in suite.findall("testcase")}


def test_junit_all_pass() -> None:
    cases = _cases(to_junit(_report(Verdict.REPRODUCIBLE)))
    assert sorted(cases) == ["build-a", "build-b", "no-egress", "reproducible"]
    assert all(len(c) == 0 for c in cases.values())


def test_junit_failures_name_the_problem() -> None:
    cases = _cases(to_junit(_report(Verdict.EGRESS, diffs=2, egress=1)))
    egress = cases["no-egress"].find("failure")
    assert egress is not None and egress.attrib["message"] == "tried to reach x.example:80"
    assert egress.attrib["type"] == "build-egress"
    assert "x.example:80" in (egress.text or "")
    repro = cases["reproducible"].find("failure")
    assert repro is not None and "p0.whl" in (repro.text or "")
    assert repro.attrib["message"] == "2 artifact(s) differ: p0.whl; p1.whl"
    # What dashboards key on: a classname per target, times, timestamp and host.
    assert {c.attrib["classname"] for c in cases.values()} == {"reprobuild.r.s"}
    assert cases["build-a"].attrib["time"] == "1.000"
    suite = ET.fromstring(to_junit(_report(Verdict.REPRODUCIBLE))).find("testsuite")
    assert suite is not None and suite.attrib["time"] == "2.500"
    assert suite.attrib["hostname"] and len(suite.attrib["timestamp"]) == 19


def test_junit_failed_build_skips_comparison() -> None:
    cases = _cases(to_junit(_report(Verdict.BUILD_FAILED, exit_b=2)))
    failure = cases["build-b"].find("failure")
    assert failure is not None and failure.attrib["message"] == "exited with 2"
    assert failure.text == "boom"
    assert cases["reproducible"].find("skipped") is not None


def test_sarif_has_one_result_per_finding() -> None:
    log = to_sarif(_report(Verdict.EGRESS, diffs=2, egress=1, exit_b=1))
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {
        "RB001", "RB002", "RB003", "RB004", "RB005"}
    assert [r["ruleId"] for r in run["results"]] == ["RB001", "RB001", "RB002", "RB003"]
    assert "p0.whl" in run["results"][0]["message"]["text"]
    assert "x.example:80" in run["results"][2]["message"]["text"]
    uri = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "s/"  # no manifest known: the directory
    assert "versionControlProvenance" not in run  # "/r" is a path, not a repository URI
    assert run["automationDetails"]["id"] == "reprobuild//r/s/"
    json.dumps(log)  # serialisable as is


def _sarif_schema() -> dict[str, Any]:
    path = Path(__file__).parents[1] / "data" / "sarif-2.1.0-rtm.5.json"
    return cast(dict[str, Any], json.loads(path.read_text()))


def test_sarif_is_schema_valid_and_what_code_scanning_needs() -> None:
    import jsonschema  # noqa: PLC0415

    report = replace(_report(Verdict.EGRESS, diffs=2, egress=3, exit_b=1),
                     recipe=RecipeInfo(name="python", origin="x", commands=(), outputs=(),
                                       manifest="s/pyproject.toml"),
                     source=replace(_report(Verdict.EGRESS).source,
                                    url="https://git.example/o/r.git"))
    log = to_sarif(report)
    jsonschema.Draft4Validator(_sarif_schema()).validate(log)
    jsonschema.Draft4Validator(_sarif_schema()).validate(
        json.loads(sarif_render_error("bad input", 2)))
    run = log["runs"][0]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert all(r["fullDescription"]["text"] and r["help"]["text"] for r in rules.values())
    assert "security" in rules["RB002"]["properties"]["tags"]
    assert float(rules["RB002"]["properties"]["security-severity"]) >= 7
    # Three packets to one destination are one result.
    assert [r["ruleId"] for r in run["results"]].count("RB002") == 1
    assert "3 attempt(s)" in run["results"][2]["message"]["text"]
    location = run["results"][0]["locations"][0]["physicalLocation"]
    assert location == {"artifactLocation": {"uri": "s/pyproject.toml"},
                        "region": {"startLine": 1}}
    assert run["versionControlProvenance"][0]["repositoryUri"] == "https://git.example/o/r.git"
    # Fingerprints are stable across nights (timings, messages may change) and distinct.
    again = to_sarif(replace(report, timings={"total_s": 99.0}))
    prints = [r["partialFingerprints"] for r in run["results"]]
    assert prints == [r["partialFingerprints"] for r in again["runs"][0]["results"]]
    assert len({p["reprobuild/v1"] for p in prints}) == len(prints)


def test_sarif_clean_run_has_no_results() -> None:
    assert to_sarif(_report(Verdict.REPRODUCIBLE))["runs"][0]["results"] == []


@pytest.mark.parametrize(("found", "verdict"), [
    ({"egress": True, "built": False, "outputs": False, "differences": True}, Verdict.EGRESS),
    ({"egress": True, "built": True, "outputs": True, "differences": False}, Verdict.EGRESS),
    ({"egress": False, "built": False, "outputs": True, "differences": False},
     Verdict.BUILD_FAILED),
    ({"egress": False, "built": True, "outputs": False, "differences": False},
     Verdict.BUILD_FAILED),
    ({"egress": False, "built": True, "outputs": True, "differences": True},
     Verdict.UNREPRODUCIBLE),
    ({"egress": False, "built": True, "outputs": True, "differences": False},
     Verdict.REPRODUCIBLE),
])
def test_verdict_is_decided_by_what_was_found(found: dict[str, bool], verdict: Verdict) -> None:
    assert decide_verdict(**found) is verdict


def test_json_keeps_the_schema_field_order_and_typed_records(tmp_path: Path) -> None:
    report = _report(Verdict.EGRESS, egress=1)
    data = to_dict(report)
    assert list(data)[:4] == ["schema", "tool", "verdict", "exit_code"]
    assert data["schema"] == "reprobuild.report/v1" and data["exit_code"] == 3
    assert data["egress"][0]["name"] == "x.example" and data["egress"][0]["only_in"] is None
    assert set(error_dict("m", 2)) == {"schema", "tool", "verdict", "exit_code", "message",
                                       "builds", "differences", "egress"}
    for fmt in FORMATS:  # every registered format renders every report
        write_report(fmt, report, tmp_path / fmt.name)
        assert (tmp_path / fmt.name).stat().st_size > 0
    # Every format writes something on an error exit (exit 2, 5): CI finds its file.
    for fmt in FORMATS:
        assert write_error(fmt, "no Docker engine", 5, tmp_path / f"error.{fmt.name}")
    run = ET.fromstring((tmp_path / "error.junit").read_text()).find("testsuite/testcase")
    assert run is not None and run.attrib["name"] == "run"
    failure = run.find("failure")
    assert failure is not None and failure.attrib["type"] == "exit-5"
