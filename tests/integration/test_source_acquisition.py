"""Acquiring a source through the real CLI: hostile or broken repositories, interrupted
clones, a full temporary directory, what a URL fetch keeps and what the builds get.

Every "remote" here is a local repository (``file://``) or a server bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT, check_on_small_tmpfs, git, make_repo, run_cli


def _processes_mentioning(needle: str) -> list[str]:
    """Command lines of live processes that contain ``needle`` (from /proc)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode("utf-8", "replace"))
    return found


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung host)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_during_a_clone_stops_gits_helper_processes(silent_server: int,
                                                          tmp_path: Path,
                                                          signum: signal.Signals) -> None:
    """Ctrl-C, or the terminal closing (SIGHUP), before any sandbox exists."""
    url = f"http://127.0.0.1:{silent_server}/hung-{tmp_path.name}.git"
    proc = subprocess.Popen([sys.executable, "-m", "reprobuild", "check", url],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not any("remote-http" in p for p in _processes_mentioning(url)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "git's http helper never started"
            time.sleep(0.1)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert _processes_mentioning(url) == []


def test_a_full_temporary_directory_is_one_line_and_exit_5(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe")
    (repo / "blob.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-q", "-m", "a blob larger than the temporary directory")
    small = tmp_path / "small-tmp"
    proc = check_on_small_tmpfs(small, "1m", f"file://{repo}",
                                env=f"TMPDIR={small} XDG_CACHE_HOME={small}/cache")
    assert proc.returncode == 5, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_name_that_is_not_utf8_is_exit_2_with_the_name_escaped(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe")
    (repo / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"x")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a latin-1 name")
    result = run_cli("check", str(repo))
    assert result.code == 2, result.stderr
    assert "caf\\xe9.txt" in result.stderr and "not UTF-8" in result.stderr
    assert "UnicodeEncodeError" not in result.stderr


def test_a_damaged_repository_names_the_missing_object_exit_2(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe")
    head = git(repo, "rev-parse", "HEAD")
    (repo / ".git" / "objects" / head[:2] / head[2:]).unlink()
    result = run_cli("check", str(repo))
    assert result.code == 2, result.stderr
    assert f"lacks object {head}" in result.stderr


@pytest.mark.usefixtures("toolchains", "no_leftovers")
def test_a_url_subdir_builds_from_the_member_and_what_its_workspace_needs(
        tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "pnpm-server")
    (repo / "docs").mkdir()
    (repo / "docs" / "recording.bin").write_bytes(os.urandom(1 << 20))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a large file no build needs")
    git(repo, "config", "uploadpack.allowFilter", "true")
    result = run_cli("check", f"file://{repo}", "--subdir", "packages/notes-mcp",
                     "--variations", "none", json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.report is not None
    source = result.report["source"]
    assert set(source["sent"]) == {"package.json", "pnpm-lock.yaml", "pnpm-workspace.yaml",
                                   "packages/notes-core"}
    assert source["kind"] == "git-remote"
    committed = git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    sent = [p for p in committed if p.startswith("packages/") or p in source["sent"]]
    assert source["files"] == len(sent) < len(committed)


@pytest.mark.usefixtures("toolchains", "no_leftovers")
def test_uncommitted_changes_are_said_in_the_summary(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "pnpm-server")
    (repo / "packages" / "notes-mcp" / "src" / "index.js").write_text("// edited\n")
    result = run_cli("check", str(repo), "--subdir", "packages/notes-mcp", "--variations",
                     "none", json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.report is not None
    (warning,) = [w for w in result.report["warnings"] if "uncommitted" in w]
    assert "packages/notes-mcp/src/index.js" in warning and "not built" in warning
    assert "uncommitted change(s)" in result.stdout + result.stderr
