"""Report files on every exit path, ``-`` for stdout, and paths that are not plain files:
the real CLI in a subprocess, with input that fails before any Docker work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from reprobuild.atomic import write_output
from reprobuild.cli.check import annotate
from reprobuild.report.markdown import cell


def cli(*args: str, cwd: Path,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprobuild", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, check=False)


def test_every_report_is_written_when_the_input_is_bad(tmp_path: Path) -> None:
    summary = tmp_path / "step-summary.md"
    result = cli("check", str(tmp_path / "missing"), "--json", "r.json", "--junit", "r.xml",
                 "--sarif", "r.sarif", "--markdown", "r.md", cwd=tmp_path,
                 env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode == 2, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 2
    failure = ET.parse(tmp_path / "r.xml").find("testsuite/testcase/failure")
    assert failure is not None and failure.attrib["type"] == "exit-2"
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    assert sarif["runs"][0]["invocations"][0]["executionSuccessful"] is False
    assert "does not exist" in (tmp_path / "r.md").read_text()
    assert "error (exit 2)" in summary.read_text()
    # An option parsed by reprobuild (not by the command line parser) leaves them too.
    result = cli("check", str(tmp_path), "--variations", "bogus", "--junit", "v.xml",
                 cwd=tmp_path)
    assert result.returncode == 2 and "unknown variation" in (tmp_path / "v.xml").read_text()


def test_in_github_actions_progress_is_a_log_group_and_errors_are_annotations(
        tmp_path: Path) -> None:
    result = cli("check", str(tmp_path / "missing"), cwd=tmp_path,
                 env={"GITHUB_ACTIONS": "true"})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "::group::reprobuild progress" and "::endgroup::" in lines
    assert any(line.startswith("::error title=reprobuild error (exit 2)::")
               and "does not exist" in line for line in lines)


def test_dash_is_stdout_and_the_summary_moves_to_stderr(tmp_path: Path) -> None:
    result = cli("check", str(tmp_path / "missing"), "--json", "-", cwd=tmp_path)
    assert result.returncode == 2
    assert json.loads(result.stdout)["message"].endswith("does not exist")
    assert "error:" in result.stderr


def test_report_paths_that_are_not_files_are_written_through_or_refused(
        tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_output(b"new", link)
    assert link.is_symlink() and target.read_text() == "new"  # the link stays a link
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    write_output(b"through the pipe", fifo)
    assert reader.communicate(timeout=10)[0] == b"through the pipe"
    assert fifo.is_fifo()  # written through, not renamed over
    with pytest.raises(IsADirectoryError):
        write_output(b"x", tmp_path)
    # The CLI refuses a directory and one file for two formats, before any work.
    (tmp_path / "d").mkdir()
    dup = cli("check", str(tmp_path), "--json", "a.json", "--sarif", "./a.json", cwd=tmp_path)
    assert dup.returncode == 2 and "both write to" in dup.stderr
    assert not (tmp_path / "a.json").exists()


def test_github_annotations_are_escaped_and_only_in_actions(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.report import Verdict  # noqa: PLC0415
    from tests.unit.test_compare_report import _report  # noqa: PLC0415

    report = _report(Verdict.EGRESS, diffs=1, egress=2)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    annotate(report)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    annotate(report)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["::error title=reprobuild egress::p0.whl is not reproducible",
                     "::error title=reprobuild egress::the build tried to reach x.example:80"]
    hostile = replace(report, egress=(), differences=(
        replace(report.differences[0], path="p\x1b]0;t\x07\n::error::fake 100%.whl"),))
    annotate(hostile)
    assert capsys.readouterr().err.splitlines() == [
        "::error title=reprobuild egress::p\\x1b]0;t\\x07\\x0a::error::fake 100%25.whl is "
        "not reproducible"]
    # Markdown cells from build output carry no markup; control characters are visible.
    assert cell("a|b\x1b[31m[x](http://e.example)\n") == \
        r"a\|b\\x1b\[31m\[x\]\(http://e.example\)\\x0a"


def test_build_text_never_reaches_the_terminal_with_live_control_characters(
        capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from reprobuild.cli.summary import print_summary  # noqa: PLC0415
    from reprobuild.report import Verdict  # noqa: PLC0415
    from tests.unit.test_compare_report import _report  # noqa: PLC0415

    report = _report(Verdict.BUILD_FAILED, exit_b=2)
    hostile = "\x1b]0;pwned\x07\x1b[2J"
    builds = (report.builds[0], replace(report.builds[1], log_tail=f"boom {hostile}"))
    report = replace(report, builds=builds, warnings=(f"odd file {hostile}",))
    print_summary(report)
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out
    assert "boom \\x1b]0;pwned\\x07\\x1b[2J" in captured.out
