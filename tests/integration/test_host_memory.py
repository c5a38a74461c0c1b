"""reprobuild's own memory stays bounded however large the artifacts are: outputs are
copied off the sandbox and handed to diffoscope a chunk at a time (issue: two 900 MB
differing artifacts took the host process to 3.6 GB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, check_on_small_tmpfs, git, make_repo

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")

BOUND_MB = 300


def test_two_900_mb_differing_artifacts_keep_the_host_process_small(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "big-artifacts")
    out, report = tmp_path / "out", tmp_path / "r.json"
    argv = [sys.executable, "-m", "reprobuild", "check", str(repo), "--variations", "hostname",
            "--no-explain", "--out", str(out), "--json", str(report), "-q"]
    with (tmp_path / "stderr.txt").open("wb") as errors:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 1, (tmp_path / "stderr.txt").read_text()
    data = json.loads(report.read_text())
    sizes = {o["path"]: o["size"] for o in data["builds"][0]["outputs"]}
    assert sizes == {"big.bin": 900 << 20}
    assert [d["path"] for d in data["differences"]] == ["big.bin"]
    assert all(d["diffoscope"] is not None for d in data["differences"])
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    assert peak_mb < BOUND_MB, f"reprobuild's peak RSS was {peak_mb:.0f} MB"


def test_a_full_disk_while_copying_outputs_is_one_line_and_exit_5(tmp_path: Path) -> None:
    """The host runs out of space mid-copy: one clear line, exit 5, nothing left behind."""
    repo = make_repo(tmp_path, "big-artifacts")
    (repo / "SIZE_MB").write_text("24\n")
    git(repo, "commit", "-qam", "24 MiB artifacts")
    small = tmp_path / "small"
    proc = check_on_small_tmpfs(small, "16m", f"{repo} --variations none --out {small}/out")
    assert proc.returncode == 5, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "ReadTimeout" not in proc.stderr
