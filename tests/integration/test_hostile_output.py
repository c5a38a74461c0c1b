"""A build that prints escape sequences and one 10 MB line, checked for real on a terminal.

The probe fixture's build hook is given a mode that writes a window title, a clear screen,
a C1 CSI, a bidi override and VT to its output before and after one line of 10 MB, then
fails. The
real ``reprobuild check`` runs on a pseudo-terminal: what reaches the terminal must hold
no live control sequence and stay small, and the JUnit, SARIF and Markdown files and the
results directory's ``report.json`` and ``summary.md`` must parse, carry no raw control
character and keep only a capped log tail.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import docker

from reprobuild.pipeline.plan import LOG_LINE_CHARS, LOG_TAIL_BYTES
from tests.integration.conftest import FIXTURES, REPO_ROOT, git
from tests.unit.test_terminal_safety import (
    _assert_junit_inert,
    _live_controls,
    _on_pty,
    _terminal_text,
)

HOSTILE_HOOK = '''

def _hostile() -> str:
    import sys
    sys.stderr.write("\\x1b]0;pwned\\x07\\x1b[2J\\x9b2J\\u202eevil\\x0b before the flood\\n")
    sys.stderr.write("x" * 10_000_000 + "\\n")
    sys.stderr.write("\\x1b]0;pwned\\x07\\x1b[2J\\x9b2J\\u202eevil\\x0b after the flood\\n")
    sys.stderr.flush()
    raise SystemExit("probe fixture: hostile output, then a failure")


PROBES["hostile"] = _hostile
'''
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x9b2J\\u202eevil\\x0b after the flood"


def _hostile_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "probe", repo)
    (repo / "PROBE").write_text("hostile\n")
    with (repo / "hatch_build.py").open("a") as hook:
        hook.write(HOSTILE_HOOK)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fixture probe hostile")
    return repo


def test_a_build_printing_escapes_and_a_10mb_line_reaches_nothing_live(
        tmp_path: Path, client: docker.DockerClient, no_leftovers: None) -> None:
    del client, no_leftovers
    repo = _hostile_repo(tmp_path)
    out = tmp_path / "out"
    files = {fmt: tmp_path / f"report.{fmt}" for fmt in ("junit", "sarif", "markdown")}
    argv = [sys.executable, "-m", "reprobuild", "check", str(repo), "--variations", "none",
            "--no-explain", "--out", str(out),
            *(arg for fmt, path in files.items() for arg in (f"--{fmt}", str(path)))]
    code, received = _on_pty(argv, cwd=REPO_ROOT, timeout=600)
    assert code == 4, received[-3000:]  # the build failed
    assert len(received.encode()) < 200_000, "one huge build line flooded the terminal"
    shown = _terminal_text(received)
    assert _live_controls(shown) == [], shown[-3000:]
    assert SHOWN in shown  # the log tail is shown, made visible

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for build in report["builds"]:
        tail = build["log_tail"]
        assert len(tail.encode("utf-8")) <= LOG_TAIL_BYTES
        assert max(len(line) for line in tail.split("\n")) <= LOG_LINE_CHARS + 40
        assert "hostile output, then a failure" in tail
    _assert_junit_inert(files["junit"].read_text(encoding="utf-8"), SHOWN)
    sarif = json.loads(files["sarif"].read_text(encoding="utf-8"))
    assert sarif["runs"][0]["results"], "the failed builds are results"
    for text in (files["markdown"].read_text(encoding="utf-8"),
                 (out / "summary.md").read_text(encoding="utf-8"),
                 files["sarif"].read_text(encoding="utf-8")):
        assert _live_controls(text) == []
