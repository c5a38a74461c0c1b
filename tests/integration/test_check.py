"""End-to-end `reprobuild check` against a real Docker engine, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from reprobuild import images
from reprobuild.sandbox.engine import MANAGED, ROLE

from .conftest import REPO_ROOT, git, make_repo, managed_objects, run_cli, wait_for_build_b

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")

VARIATIONS = ["build_path", "hostname", "user", "umask", "timezone", "locale", "home",
              "clock", "cpus", "env_order", "file_order"]


def test_example_is_reproducible(tmp_path: Path,
                                 toolchains: dict[str, images.ToolchainImage]) -> None:
    out = tmp_path / "out"
    result = run_cli("check", "examples/mcp-notes-server", "--out", str(out),
                     json_path=tmp_path / "report.json")
    assert result.code == 0, result.stdout + result.stderr
    report = result.report
    assert report is not None
    assert report["verdict"] == "reproducible"
    assert report["exit_code"] == 0
    assert report["schema"] == "reprobuild.report/v1"
    assert len(report["source"]["commit"]) == 40
    assert report["source"]["subdir"] == "examples/mcp-notes-server"
    assert len(report["source"]["tree_sha256"]) == 64
    assert report["recipe"]["name"] == "python"
    assert report["toolchain"]["image_id"] == toolchains["python"].image_id
    assert "hatchling" in report["toolchain"]["versions"]
    assert sorted(report["variations"]) == sorted(VARIATIONS)
    a, b = report["builds"]
    names = sorted(o["path"] for o in a["outputs"])
    assert names == ["mcp_notes_server-0.3.1-py3-none-any.whl", "mcp_notes_server-0.3.1.tar.gz"]
    assert a["outputs"] == b["outputs"], "same digests for sdist and wheel in both builds"
    assert a["variations"]["hostname"] != b["variations"]["hostname"]
    assert report["differences"] == []
    assert report["egress"] == []
    for build in (a, b):
        assert (out / build["log"]).is_file()
        for output in build["outputs"]:
            assert (out / build["name"] / "artifacts" / output["path"]).stat().st_size == \
                output["size"]
    assert json.loads((out / "report.json").read_text())["verdict"] == "reproducible"
    assert "REPRODUCIBLE" in result.stdout


@pytest.mark.parametrize("variation", VARIATIONS)
def test_each_variation_is_caught_and_only_by_itself(tmp_path: Path, variation: str) -> None:
    """The probe fixture embeds one environment fact; exactly one variation must see it."""
    repo = make_repo(tmp_path, "probe", probe=variation)
    caught = run_cli("check", str(repo), "--variations", variation,
                     "--out", str(tmp_path / "caught"), json_path=tmp_path / "caught.json")
    assert caught.code == 1, caught.stdout + caught.stderr
    assert caught.report is not None
    assert caught.report["verdict"] == "unreproducible"
    paths = sorted(d["path"] for d in caught.report["differences"])
    assert paths == ["probe_mcp_server-1.0.0-py3-none-any.whl", "probe_mcp_server-1.0.0.tar.gz"]
    for diff in caught.report["differences"]:
        text = (tmp_path / "caught" / diff["diffoscope"]["text"]).read_text()
        assert "_probe.txt" in text, text[:2000]
        assert diff["diffoscope"]["exit_code"] == 1
        assert (tmp_path / "caught" / diff["diffoscope"]["html"]).is_file()
    assert "_probe.txt" in caught.stdout

    others = run_cli("check", str(repo), "--variations", f"all,-{variation}",
                     json_path=tmp_path / "others.json")
    assert others.code == 0, others.stdout + others.stderr


def test_a_stamp_to_the_second_is_caught_without_the_clock_variation(tmp_path: Path) -> None:
    """Both builds run at once, so a build stamping the time to the second used to agree
    with itself 9 times in 10 unless the clock variation shifted B by 398 days: B's clock
    now always runs a few seconds ahead, with ``-clock`` and with ``none`` alike."""
    repo = make_repo(tmp_path, "probe", probe="second")
    for n, variations in enumerate(("all,-clock", "all,-clock", "none")):
        result = run_cli("check", str(repo), "--variations", variations, "--no-explain",
                         json_path=tmp_path / f"r{n}.json")
        assert result.code == 1, (variations, result.stdout + result.stderr)
        assert result.report is not None
        a, b = result.report["builds"]
        assert a["variations"]["clock"] == "real"
        assert b["variations"]["clock"].startswith("real +"), b["variations"]
        assert "clock" not in result.report["variations"]
        assert sorted(d["path"] for d in result.report["differences"]) == [
            "probe_mcp_server-1.0.0-py3-none-any.whl", "probe_mcp_server-1.0.0.tar.gz"]


def test_failing_build_is_exit_4(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="fail")
    result = run_cli("check", str(repo), json_path=tmp_path / "r.json")
    assert result.code == 4, result.stdout + result.stderr
    assert result.report is not None
    assert result.report["verdict"] == "build-failed"
    assert all(b["exit_code"] not in (0, None) for b in result.report["builds"])
    assert "deliberate build failure" in result.report["builds"][0]["log_tail"]
    assert "deliberate build failure" in result.stdout
    assert "Traceback (most recent call last)" not in result.stderr


def test_hung_build_times_out_with_exit_4(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="hang")
    timeout = 10
    result = run_cli("check", str(repo), "--timeout", str(timeout),
                     json_path=tmp_path / "r.json")
    assert result.code == 4, result.stdout + result.stderr
    assert result.report is not None
    assert all(b["timed_out"] for b in result.report["builds"])
    assert "timed out" in result.report["message"]
    # Functional bound, not a benchmark: the deadline is enforced, not merely requested.
    assert result.seconds < timeout + 60


def test_ctrl_c_stops_quickly_and_cleans_up(tmp_path: Path, client: docker.DockerClient) -> None:
    repo = make_repo(tmp_path, "probe", probe="hang")
    # A CI runner may start us with SIGINT ignored (a background job inherits SIG_IGN);
    # give the CLI the default disposition a terminal user has, so Python handles Ctrl-C.
    proc = subprocess.Popen([sys.executable, "-m", "reprobuild", "check", str(repo)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        wait_for_build_b(client, timeout=120)
        time.sleep(1)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert stopped_in < 20
    assert managed_objects(client) == []


def test_sandbox_hardening_seen_from_inside(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "inspect")
    out = tmp_path / "out"
    result = run_cli("check", str(repo), "--out", str(out), "--variations", "user",
                     json_path=tmp_path / "r.json")
    # The inspector's connect to a documentation address is caught by the trap: exit 3.
    assert result.code == 3, result.stdout + result.stderr
    assert result.report is not None
    assert result.report["recipe"]["name"] == "sandbox-inspector"
    assert {(a["build"], a["dst"], a["dport"]) for a in result.report["egress"]} == {
        ("a", "192.0.2.1", 80), ("b", "192.0.2.1", 80)}
    for build, uid in (("a", 1000), ("b", 2000)):
        facts = json.loads((out / build / "artifacts" / "sandbox.json").read_text())
        assert facts["uid"] == facts["euid"] == uid
        assert facts["CapEff"] == "0000000000000000"
        assert facts["CapPrm"] == "0000000000000000"
        # setpriv emptied every set, the bounding set included: nothing can be regained.
        assert facts["CapBnd"] == facts["CapInh"] == facts["CapAmb"] == "0000000000000000"
        assert facts["groups"] == []
        assert facts["oom_score_adj"] == "1000"  # out of memory: the build goes, not the agent
        # The trusted agent (PID 1 of the sandbox) is out of the build's reach.
        assert facts["signal_pid1"] == "PermissionError"
        assert facts["read_pid1_fds"] == "PermissionError"
        assert facts["become_root"] == "PermissionError"
        # The agent's capabilities did not widen Docker's seccomp profile (SYS_PTRACE would
        # let kcmp through).
        assert facts["kcmp"] == "EPERM"
        assert facts["NoNewPrivs"] == "1"
        assert facts["Seccomp"] == "2"
        assert facts["writable_system_dirs"] == []
        assert facts["docker_socket"] is False
        assert facts["list_run"] == "PermissionError"  # the agent's scratch space
        assert facts["pids_max"] is not None and facts["pids_max"].isdigit()
        assert facts["memory_max"] is not None and facts["memory_max"].isdigit()
        assert int(facts["memory_max"]) <= 8 * 1024**3
        assert facts["interfaces"] == ["lo"]
        # Answered by the trap inside the namespace (it never leaves: see test_egress).
        assert facts["connect"] == "connected"


def test_leftovers_of_a_killed_run_are_swept(tmp_path: Path,
                                             client: docker.DockerClient,
                                             toolchains: dict[str, images.ToolchainImage]) -> None:
    dead_pid = 2**22 + 12345  # above pid_max on Linux: never a live process
    labels = {MANAGED: "true", "org.reprobuild.run": "deadbeef0000",
              "org.reprobuild.pid": str(dead_pid), "org.reprobuild.host": os.uname().nodename,
              ROLE: "build-a"}
    client.containers.create(toolchains["python"].image_id, ["true"], labels=labels,
                             network_mode="none")
    client.volumes.create(name="reprobuild-deadbeef0000-leftover", labels=labels)
    result = run_cli("check", "examples/mcp-notes-server", "--variations", "none")
    assert result.code == 0, result.stdout + result.stderr
    assert managed_objects(client) == []


def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = run_cli("check", str(tmp_path / "nope"))
    assert missing.code == 2
    assert "Traceback" not in missing.stderr
    assert "error:" in missing.stderr and "hint:" in missing.stderr

    repo = make_repo(tmp_path, "probe", probe="none")
    unknown_ref = run_cli("check", str(repo), "--ref", "no-such-branch")
    assert unknown_ref.code == 2, unknown_ref.stderr
    assert "no-such-branch" in unknown_ref.stderr

    bad = make_repo(tmp_path, "probe", probe="none", name="bad-recipe")
    (bad / ".reprobuild.toml").write_text('schema = 1\n[recipe]\nextends = "python"\n'
                                          '[build]\ncomands = ["true"]\n')
    subprocess.run(["git", "-C", str(bad), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(bad), "-c", "user.name=t", "-c", "user.email=t@t.invalid",
                    "commit", "-qm", "recipe"], check=True)
    malformed = run_cli("check", str(bad), json_path=tmp_path / "bad.json")
    assert malformed.code == 2
    assert ".reprobuild.toml: unknown key [build].comands" in malformed.stderr
    assert "did you mean '[build].commands'" in malformed.stderr
    assert malformed.report is not None and malformed.report["verdict"] == "error"

    variations = run_cli("check", str(repo), "--variations", "hostnme")
    assert variations.code == 2
    assert "did you mean 'hostname'" in variations.stderr

    out = tmp_path / "occupied"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    occupied = run_cli("check", str(repo), "--out", str(out))
    assert occupied.code == 2
    assert (out / "keep.txt").read_text() == "precious"


def test_no_docker_engine_is_exit_5(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="none")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    proc = subprocess.run([sys.executable, "-m", "reprobuild", "check", str(repo)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 5, proc.stderr
    assert "no Docker engine reachable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_python_server_with_release_tooling_in_package_json_is_built_as_python(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "examples" / "mcp-notes-server", repo)
    (repo / "package.json").write_text('{"private": true, "devDependencies": '
                                       '{"semantic-release": "^24.0.0"}}\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "with release tooling")
    result = run_cli("check", str(repo), "--variations", "none", "--no-diffoscope",
                     json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.report is not None and result.report["recipe"]["name"] == "python"
    assert "chosen over node" in result.report["recipe"]["reason"]
    assert "chosen over node" in result.stdout
