"""Hostile builds against the sandbox: what they leave in /out, how they end, and the
signals the user sends meanwhile. Whatever a build does after a network attempt, the
attempt reaches the report (verdict egress, exit 3) and nothing is left on the engine.

Attackers use only documentation addresses, from inside the sandbox (see test_egress).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from reprobuild import images
from reprobuild.archive import FileOrder, build_tar
from reprobuild.errors import UnsafeArchiveError
from reprobuild.sandbox.container import Sandbox
from reprobuild.sandbox.engine import RunLabels
from reprobuild.sandbox.spec import SandboxLimits, SandboxResult, SandboxSpec
from reprobuild.source import EntryKind, SourceEntry

from .conftest import REPO_ROOT, git, make_repo, managed_objects, wait_for_build_b

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")

BEACON = ("203.0.113.7", 4444)


def _sandbox_run(client: docker.DockerClient, image: images.ToolchainImage, tmp_path: Path,
                 script: str, **limits: Any) -> SandboxResult:
    source = build_tar([SourceEntry("x", EntryKind.FILE, 0o644, b"x")],
                       order=FileOrder.SORTED, mtime=315532800)
    spec = SandboxSpec(
        role="build-a", image=image.image_id, uid=1000, gid=1000, hostname="hostile",
        domainname="test", writable=("/build", "/tmp"), stdin=source, trap=True,
        script="tar -x -f - -C /build\n" + script, image_python=image.python,
        limits=SandboxLimits(**{"timeout_s": 120, **limits}))
    return Sandbox(client, RunLabels.new()).run(spec, output_dir=tmp_path / "artifacts",
                                                log_path=tmp_path / "build.log")


def _attack_repo(tmp_path: Path, attack: str) -> Path:
    repo = make_repo(tmp_path, "egress")
    (repo / "ATTACK").write_text(attack + "\n")
    git(repo, "commit", "-qam", attack)
    return repo


def _cli(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The real CLI with its own TMPDIR, so what it leaves in temp can be seen."""
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "reprobuild", *args, "--json", str(report)],
                          cwd=REPO_ROOT, env={**os.environ, "TMPDIR": str(temp)},
                          capture_output=True, text=True, timeout=600, check=False)
    return proc, json.loads(report.read_text()) if report.exists() else {}


def _beacons(report: dict[str, Any]) -> set[str]:
    return {a["build"] for a in report.get("egress", [])
            if (a["dst"], a["dport"]) == BEACON and a["kind"] in ("tcp", "other")}


# --------------------------------------------------------------- item 1: egress survives


@pytest.mark.parametrize(("attack", "extra"), [
    ("beacon-then-link", ()),
    ("beacon-then-fail", ()),
    ("beacon-then-hang", ("--timeout", "15")),
    ("beacon-then-many-files", ()),
    ("beacon-then-link-and-big", ()),
    ("beacon-then-deep", ()),
])
def test_an_attempt_survives_whatever_the_build_does_next(
        tmp_path: Path, attack: str, extra: tuple[str, ...]) -> None:
    """One network attempt, then a refused output (a link, too many files, a link before a
    big file, a tree too deep), a failure or a hang: still exit 3 with the attempt listed,
    nothing left in temp or on the engine."""
    repo = _attack_repo(tmp_path, attack)
    proc, report = _cli(tmp_path, "check", str(repo), "--variations", "none",
                        "--no-diffoscope", *extra)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert report["verdict"] == "egress"
    assert _beacons(report) == {"a", "b"}, report["egress"]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    # The evidence stays in the results directory the report names; nothing else.
    assert set((tmp_path / "tmp").iterdir()) == {Path(report["out_dir"])}


def test_an_interrupted_run_still_carries_what_the_trap_saw(tmp_path: Path) -> None:
    """Ctrl-C after the attempt: the Interrupted error the CLI reports carries it."""
    repo = _attack_repo(tmp_path, "beacon-then-hang")
    driver = ("import dataclasses, json, sys\n"
              "from reprobuild.errors import Interrupted\n"
              "from reprobuild.pipeline.check import CheckOptions, run_check\n"
              "try:\n"
              "    run_check(CheckOptions(source=sys.argv[1], variations=frozenset(),\n"
              "                           diffoscope=False))\n"
              "except Interrupted as exc:\n"
              "    print(json.dumps([dataclasses.asdict(a) for a in exc.egress]))\n"
              "    sys.exit(130)\n")
    out = _interrupt(tmp_path, [sys.executable, "-c", driver, str(repo)],
                     (signal.SIGINT,), wait_for_log=BEACON[0])
    assert out.returncode == 130, out.stderr
    seen = json.loads(out.stdout)
    assert {a["build"] for a in seen if (a["dst"], a["dport"]) == BEACON} == {"a", "b"}, seen


def test_an_interrupted_check_lists_the_attempts_in_its_json_report(tmp_path: Path) -> None:
    """The CLI side: Ctrl-C after the attempt, and --json still has them (exit 130)."""
    repo = _attack_repo(tmp_path, "beacon-then-hang")
    report = tmp_path / "r.json"
    out = _interrupt(tmp_path, [sys.executable, "-m", "reprobuild", "check", str(repo),
                                "--variations", "none", "--json", str(report)],
                     (signal.SIGINT,), wait_for_log=BEACON[0])
    assert out.returncode == 130, out.stderr
    data = json.loads(report.read_text())
    assert data["verdict"] == "error" and data["exit_code"] == 130
    assert {a["build"] for a in data["egress"] if (a["dst"], a["dport"]) == BEACON} == \
        {"a", "b"}, data
    assert f"{BEACON[0]}:{BEACON[1]}" in data["message"]


# --------------------------------------------------------------- item 3c: /run


def test_the_agents_run_directory_is_closed_to_the_build(
        tmp_path: Path, client: docker.DockerClient,
        toolchains: dict[str, images.ToolchainImage]) -> None:
    result = _sandbox_run(client, toolchains["python"], tmp_path,
                          "stat -c %a /run > /out/mode.txt\n"
                          "if ls /run > /dev/null 2>&1; then echo listable; else echo refused;"
                          " fi > /out/ls.txt\n")
    assert result.exit_code == 0
    assert (tmp_path / "artifacts" / "mode.txt").read_text().strip() == "700"
    assert (tmp_path / "artifacts" / "ls.txt").read_text().strip() == "refused"


# --------------------------------------------------------------- items 10, 12: outputs


@pytest.mark.parametrize(("script", "through_engine"), [
    ("echo wheel > /out/a.whl && mkdir /out/sub && echo sdist > /out/sub/a.tar.gz", False),
    # Unreadable by its own owner: the agent (no DAC override) leaves it to the engine.
    ("echo wheel > /out/a.whl && mkdir /out/sub && echo sdist > /out/sub/a.tar.gz"
     " && chmod 000 /out/sub/a.tar.gz", True),
])
def test_small_plain_outputs_come_back_through_the_agent_and_the_rest_through_the_engine(
        tmp_path: Path, client: docker.DockerClient,
        toolchains: dict[str, images.ToolchainImage], monkeypatch: pytest.MonkeyPatch,
        script: str, through_engine: bool) -> None:
    from reprobuild.sandbox import container  # noqa: PLC0415 - the seam being watched

    calls: list[str] = []
    real = container._archive

    def watched(api: Any, container_id: str, path: str) -> Any:
        calls.append(path)
        return real(api, container_id, path)

    monkeypatch.setattr(container, "_archive", watched)
    result = _sandbox_run(client, toolchains["python"], tmp_path, script)
    assert result.exit_code == 0
    assert {f.path: f.size for f in result.outputs} == {"a.whl": 6, "sub/a.tar.gz": 6}
    assert (tmp_path / "artifacts" / "sub" / "a.tar.gz").read_text() == "sdist\n"
    assert calls == (["/out/."] if through_engine else [])


@pytest.mark.parametrize(("script", "refusal"), [
    # 100k small files: refused at the cap while streaming, not after a read timeout.
    ("mkdir /out/many && cd /out/many && seq -w 1 100000 | xargs touch",
     "more than 10000 files"),
    # A refused member followed by a big one: the rest of the stream is abandoned.
    ("ln -s /etc/passwd /out/a-link.txt && head -c 600000000 /dev/zero > /out/b-big.bin",
     "symbolic link"),
    # Thousands of levels deep: refused at the depth cap, not a RecursionError.
    ("cd /out && i=0; while [ $i -lt 1500 ]; do mkdir d && cd d; i=$((i+1)); done;"
     " touch bottom.txt", "levels deep"),
])
def test_hostile_outputs_are_refused_at_once_and_leave_nothing(
        tmp_path: Path, client: docker.DockerClient,
        toolchains: dict[str, images.ToolchainImage], script: str, refusal: str) -> None:
    started = time.monotonic()
    with pytest.raises(UnsafeArchiveError) as refused:
        _sandbox_run(client, toolchains["python"], tmp_path, script, output_mb=1024)
    # Functional bound, not a benchmark: well under the Docker SDK's 120 s read timeout.
    assert time.monotonic() - started < 90
    assert refusal in refused.value.message
    assert "\n" not in refused.value.message
    assert list((tmp_path / "artifacts").iterdir()) == []
    assert managed_objects(client) == []


# --------------------------------------------------------------- item 11: signals


def _interrupt(tmp_path: Path, argv: list[str], signals: tuple[signal.Signals, ...], *,
               wait_for_log: str | None = None,
               client: docker.DockerClient | None = None) -> subprocess.CompletedProcess[str]:
    """Start ``argv``, wait until build B runs (and its trap logged ``wait_for_log``),
    then send ``signals`` a moment apart (the later ones land during the cleanup)."""
    engine = client or docker.from_env()
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    # A CI runner may start us with SIGINT ignored; give the child the default disposition.
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TMPDIR": str(temp)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        wait_for_build_b(engine, timeout=180, log=wait_for_log)
        time.sleep(1)
        for index, signum in enumerate(signals):
            if index:
                time.sleep(0.15)
            proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("signals", [
    (signal.SIGINT, signal.SIGINT),
    (signal.SIGINT, signal.SIGINT, signal.SIGINT, signal.SIGINT),
    (signal.SIGTERM,),
    (signal.SIGHUP,),
    (signal.SIGTERM, signal.SIGHUP, signal.SIGINT),
], ids=lambda s: "-".join(signal.Signals(x).name for x in s))
def test_cleanup_survives_repeated_signals(tmp_path: Path, client: docker.DockerClient,
                                           signals: tuple[signal.Signals, ...]) -> None:
    repo = make_repo(tmp_path, "probe", probe="hang")
    out = _interrupt(tmp_path, [sys.executable, "-m", "reprobuild", "check", str(repo),
                                "--variations", "none", "--no-diffoscope"], signals,
                     client=client)
    # Interrupted: exit 130, or (a signal landing after the cleanup, as the CLI exits)
    # killed by that signal, which a shell reports as 128 + its number as well.
    assert out.returncode in (130, *(-s for s in signals)), out.stderr
    assert "interrupted" in out.stderr
    assert managed_objects(client) == []
    assert list((tmp_path / "tmp").iterdir()) == []
