"""Comparison and the report model, without Docker."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from reprobuild.archive import ExtractedFile
from reprobuild.compare import DiffoscopeLimits, diffoscope_script, mismatches
from reprobuild.errors import ExitCode
from reprobuild.report import (
    Verdict,
    error_dict,
    exit_code_for,
    write_json_atomic,
)


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
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 130]


def test_atomic_json_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"
    write_json_atomic(error_dict("boom", 2), target)
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
