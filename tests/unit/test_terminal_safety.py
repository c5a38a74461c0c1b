"""Text from a build, a repository or a recipe never reaches a terminal or a report live.

A report whose every string carries escape sequences (a window title, a clear screen, a C1
CSI), bidi overrides, BEL, VT, NUL and rich markup is rendered the ways a person or a
dashboard sees it: ``reprobuild explain`` on a real pseudo-terminal, the summary, JUnit,
SARIF, Markdown and the ``summary.md`` index; an error naming a hostile recipe key goes
through ``cli.main`` on a pseudo-terminal and into every report file. Each must parse and
show the characters as ``\\xNN`` instead of acting on them. The log tail a report keeps is
capped by bytes and line length, so one 10 MB line cannot flood the summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from reprobuild.evidence import EgressAttempt
from reprobuild.report import (
    ArtifactInfo,
    ConditionsInfo,
    DifferenceInfo,
    DiffoscopeInfo,
    ExplainBuildInfo,
    ExplanationInfo,
    FetchInfo,
    FindingInfo,
    OutputInfo,
    PublishedInfo,
    Report,
    Verdict,
    VerifyInfo,
)
from reprobuild.report import json as json_report
from reprobuild.report.junit import render_error as junit_error
from reprobuild.report.junit import to_junit
from reprobuild.report.markdown import index_markdown, to_markdown
from reprobuild.report.markdown import render_error as markdown_error
from reprobuild.report.sarif import render_error as sarif_error
from reprobuild.report.sarif import to_sarif

from .test_compare_report import _report

REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b2J\u202eevil\x0b\x00\r\n[bold]x[/bold]"
"""A window title (OSC ... BEL), clear screen (CSI and C1 CSI), a bidi override, VT, NUL,
a carriage return and a newline, and rich markup."""
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x9b2J\\u202eevil"
"""How the start of :data:`HOSTILE` must look wherever it is shown."""
SGR = re.compile(r"\x1b\[[0-9;]*m")
"""rich's own styles."""
RICH = re.compile(r"\x1b\[(?:[0-9;]*m|\?25[lh]|[0-9]*A|2K)|\r")
"""Every sequence rich itself sends a terminal (styles; for the spinner: hide and show the
cursor, up a line, erase the line, carriage return); none is in :data:`HOSTILE` but CR,
which the tests without a terminal check."""


def _live_controls(text: str, *, allowed: str = "\n") -> list[str]:
    """Every character of ``text`` a terminal or parser would act on, but ``allowed``."""
    return sorted({repr(c) for c in text if c not in allowed and not c.isprintable()})


def _hostile(value: Any) -> Any:
    """``value`` with :data:`HOSTILE` in front of every string in it (enums aside)."""
    if isinstance(value, Enum):
        return value
    if isinstance(value, str):
        return HOSTILE + value
    if isinstance(value, tuple):
        return tuple(_hostile(v) for v in value)
    if isinstance(value, dict):
        return {_hostile(k): _hostile(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _hostile(getattr(value, f.name))
                                 for f in dataclasses.fields(value)
                                 if f.name not in ("schema", "tool", "out_dir")})
    return value


def hostile_report() -> Report:
    """A report with every section filled (check and verify alike), every string hostile."""
    base = _report(Verdict.EGRESS, exit_b=2)
    finding = FindingInfo(cause="timestamp", label="embedded timestamp", aspect="bytes",
                          what="a time", members=("m.py",), culprits=("clock",),
                          attribution="single", evidence=("e",), example="1 → 2",
                          hint="use SOURCE_DATE_EPOCH")
    diffoscope = DiffoscopeInfo(text="diffoscope/p.txt", html="diffoscope/p.html",
                                exit_code=1, timed_out=False, excerpt="@@ -1 +1 @@\n-a\n+b\n",
                                json="diffoscope/p.json")
    egress = EgressAttempt(build="a", phase="build", kind="http", proto="tcp", family=4,
                           dst="198.18.0.1", dport=80, name="x.example", qtype="A",
                           detail="GET / HTTP/1.1", uid=1000, pid=7, exe="/usr/bin/curl",
                           cmdline="curl x.example", forged=False, count=None, time=0.1)
    outputs = (OutputInfo(path="p.whl", sha256="1" * 64, size=3),)
    report = replace(
        base, variations=("clock", "umask"), message="the build tried the network",
        builds=tuple(replace(b, outputs=outputs, log_tail="line one\nboom") for b in base.builds),
        differences=(DifferenceInfo(path="p.whl", sha256_a="1" * 64, sha256_b="2" * 64,
                                    diffoscope=diffoscope, findings=(finding,)),),
        egress=(egress, replace(egress, kind="dropped", count=3)),
        warnings=("odd file",),
        fetch=FetchInfo(strategy="pip", key="k", cache_hit=False, seconds=1.0,
                        failure="no such package", pins={"hatchling": "1.0"}, hashes={},
                        notes=("n",), requests=()),
        explanation=ExplanationInfo(status="skipped", reason="budget", budget="8", bound=4,
                                    builds=(ExplainBuildInfo(
                                        name="x1", round=1, variations=("clock",),
                                        exit_code=0, timed_out=False, duration_s=1.0,
                                        log="x1/build.log", differs=("p.whl",)),),
                                    seconds=1.0, causes=("timestamp",)),
        verify=VerifyInfo(
            release="p 1.0", found_from="pypi", source_sha256=None,
            published=(PublishedInfo(name="p.whl", url=None, sha256="3" * 64,
                                     registry_digest=None, uploaded=None, size=3),),
            conditions=ConditionsInfo(facts=("built by hatchling",), pins=("hatchling==1",),
                                      env={"SOURCE_DATE_EPOCH": "1", "TZ": None}, cutoff=None,
                                      details={}, overrides=("x",)),
            artifacts=(ArtifactInfo(name="p.whl", equivalence="content-differs",
                                    published_sha256="3" * 64, rebuilt_sha256="1" * 64,
                                    only_published=("evil.py",), only_rebuilt=("r.py",),
                                    changed=("m.py",), packaging=("member order",),
                                    diffoscope=diffoscope),),
            rebuilt_only=("p.tar.gz",)))
    hostile: Report = _hostile(report)
    return hostile


# --------------------------------------------------------------------------- the terminal


@pytest.mark.parametrize("verbose", [False, True])
def test_the_summary_shows_hostile_text_inert(capsys: pytest.CaptureFixture[str],
                                              verbose: bool) -> None:
    from reprobuild.cli.summary import print_summary  # noqa: PLC0415 - rich, lazily

    print_summary(replace(hostile_report(), out_dir="/results"), verbose=verbose)
    captured = capsys.readouterr()
    assert _live_controls(captured.out) == [] and _live_controls(captured.err) == []
    assert SHOWN in captured.out and SHOWN in captured.err  # shown, not dropped
    assert "[bold]x[/bold]" in captured.out  # markup printed as text


def _on_pty(argv: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its stdin, stdout and stderr, as a person's
    shell would (so rich believes it draws on a real terminal); return its exit code and
    everything the terminal received."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower,
                            cwd=cwd, env=env, close_fds=True)
    os.close(follower)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    return code, received.decode("utf-8", errors="replace")


def _terminal_text(received: str) -> str:
    """What reached the terminal without rich's own sequences."""
    return RICH.sub("", received)


@pytest.mark.parametrize("verbose", [False, True])
def test_explain_on_a_terminal_sends_no_hostile_control_sequence(tmp_path: Path,
                                                                 verbose: bool) -> None:
    (tmp_path / "report.json").write_bytes(json_report.render(hostile_report()))
    argv = [sys.executable, "-m", "reprobuild", "explain", str(tmp_path / "report.json"),
            *(["--verbose"] if verbose else [])]
    code, received = _on_pty(argv, cwd=REPO_ROOT)
    assert code == 0, received
    assert SGR.search(received), "rich did not draw for a terminal: the test proves nothing"
    shown = _terminal_text(received)
    assert _live_controls(shown) == [], shown[-2000:]
    assert SHOWN in shown


def test_an_error_naming_a_hostile_recipe_key_is_inert_everywhere(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "1"\n[build-system]\nrequires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n')
    key = "k\x1b]0;pwned\x07\x1b[2J\u202e\nerror: fake line"
    (project / ".reprobuild.toml").write_text(f"schema = 1\n{json.dumps(key)} = 1\n")
    files = {fmt: tmp_path / f"r.{fmt}" for fmt in ("junit", "sarif", "markdown")}
    argv = [sys.executable, "-m", "reprobuild", "check", str(project),
            *(arg for fmt, path in files.items() for arg in (f"--{fmt}", str(path)))]
    code, received = _on_pty(argv, cwd=REPO_ROOT)
    assert code == 2, received
    shown = _terminal_text(received)
    assert _live_controls(shown) == [], shown
    assert "k\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x0aerror: fake line" in shown
    assert not any(line.startswith("error: fake") for line in shown.splitlines())
    said = "k\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x0aerror: fake line"
    _assert_junit_inert(files["junit"].read_text(encoding="utf-8"), said)
    _assert_sarif_inert(files["sarif"].read_text(encoding="utf-8"), said)
    _assert_markdown_inert(files["markdown"].read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- report files


def _assert_junit_inert(xml: str, shown: str = SHOWN) -> None:
    root = ET.fromstring(xml.encode("utf-8"))  # parses at all: XML 1.0 forbids most controls
    texts = [t for e in root.iter() for t in (e.text, e.tail, *e.attrib.values()) if t]
    assert [t for t in texts if _live_controls(t)] == []
    assert any(shown in t for t in texts)


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for k, v in data.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(data, list):
        return [s for item in data for s in _strings(item)]
    return []


def _assert_sarif_inert(text: str, shown: str = SHOWN) -> None:
    strings = _strings(json.loads(text))
    assert [s for s in strings if _live_controls(s, allowed="")] == []
    assert any(shown in s for s in strings)


def _assert_markdown_inert(text: str) -> None:
    assert _live_controls(text) == []
    # In a table cell Markdown escapes the backslash: a reader sees \x07 where BEL was.
    assert re.search(r"pwned\\+x07", text), text


def test_junit_parses_and_carries_no_raw_controls() -> None:
    xml = to_junit(hostile_report())
    _assert_junit_inert(xml)
    _assert_junit_inert(junit_error(HOSTILE, 2).decode("utf-8"))
    # A log tail keeps its lines, each with its controls made visible.
    failures = [f.text or "" for f in ET.fromstring(xml).iter("failure")]
    assert any(SHOWN in text and "line one\nboom" in text
               for text in failures), failures


def test_sarif_carries_no_raw_controls_and_locations_are_uris() -> None:
    log = to_sarif(hostile_report())
    _assert_sarif_inert(json.dumps(log))
    _assert_sarif_inert(sarif_error(HOSTILE, 2).decode("utf-8"))
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"][
        "artifactLocation"]["uri"]
    assert uri.startswith("%1B%5D0%3Bpwned%07") and "\x1b" not in uri


def test_markdown_and_the_index_carry_no_raw_controls() -> None:
    report = hostile_report()
    _assert_markdown_inert(to_markdown(report))
    _assert_markdown_inert(index_markdown(report))
    _assert_markdown_inert(markdown_error(HOSTILE, 2).decode("utf-8"))


def test_visible_shows_every_control_and_keeps_printable_text() -> None:
    from reprobuild.errors import visible  # noqa: PLC0415 - the helper under test

    assert visible("naïve → 名前 ok") == "naïve → 名前 ok"
    assert visible("a\x1b[2J\x9b\x7f\u202e\u200b\U000e0041") == \
        "a\\x1b[2J\\x9b\\x7f\\u202e\\u200b\\U000e0041"
    assert visible("one\ntwo\tthree") == "one\\x0atwo\\x09three"
    assert visible("one\ntwo\tthree\r", lines=True) == "one\ntwo\tthree\\x0d"


# --------------------------------------------------------------------------- the log tail


def test_the_log_tail_is_capped_by_bytes_and_line_length(tmp_path: Path) -> None:
    from reprobuild.pipeline.plan import LOG_LINE_CHARS, LOG_TAIL_BYTES, _log_tail  # noqa: PLC0415

    log = tmp_path / "build.log"
    with log.open("w", encoding="utf-8") as handle:
        handle.write("early line\n" * 1000)
        handle.write("\x1b]0;pwned\x07 before\n")
        handle.write("x" * 10_000_000 + "\n")
        handle.write("error: the last line\n")
    tail = _log_tail(log)
    assert len(tail.encode("utf-8")) <= LOG_TAIL_BYTES
    assert max(len(line) for line in tail.split("\n")) <= LOG_LINE_CHARS + 40
    assert tail.endswith("error: the last line")
    assert "[line cut at" in tail
    many = tmp_path / "many.log"
    many.write_text("".join(f"{i:04d} " + "y" * 450 + "\n" for i in range(200)))
    tail = _log_tail(many)
    assert len(tail.encode("utf-8")) <= LOG_TAIL_BYTES
    assert tail.split("\n")[-1].startswith("0199 ")
