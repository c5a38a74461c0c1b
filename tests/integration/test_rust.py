"""Rust (cargo) end to end: crates fetched from crates.io (checked against Cargo.lock), a
workspace built offline twice under every variation, and the two ways a build gets caught."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import git, make_repo, run_cli

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def test_a_rust_workspace_builds_bit_for_bit_from_crates_io(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "rust-server")
    result = run_cli("check", str(repo), "--out", str(tmp_path / "out"),
                     json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    report = result.report
    assert report is not None and report["recipe"]["name"] == "rust"
    assert report["toolchain"]["versions"]["rustc"].startswith("1.97.1")
    assert [o["path"] for o in report["builds"][0]["outputs"]] == ["linux-amd64/notes-mcp"]
    assert report["fetch"]["pins"]["serde_json"].startswith("1.")
    assert {r["host"] for r in report["fetch"]["requests"]} <= {"index.crates.io",
                                                                "static.crates.io"}
    binary = tmp_path / "out" / "a" / "artifacts" / "linux-amd64" / "notes-mcp"
    binary.chmod(0o755)
    answer = subprocess.run([str(binary)], input='{"id":1,"method":"notes/add","params":"b"}\n'
                            '{"id":2,"method":"notes/list"}\n', capture_output=True, text=True,
                            timeout=30, check=True).stdout.splitlines()
    assert json.loads(answer[1])["result"] == ["b"]
    # The build path was remapped: neither build's directory is in the binary.
    data = binary.read_bytes()
    assert b"/build/src" not in data and b"second-build" not in data


def test_a_tampered_cargo_lock_stops_the_fetch_naming_the_crate(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "rust-server")
    lock = repo / "Cargo.lock"
    text = lock.read_text()
    start = text.index('name = "itoa"')
    checksum = text.index('checksum = "', start) + len('checksum = "')
    lock.write_text(text[:checksum] + "0" * 64 + text[checksum + 64:])
    commit(repo, "tamper")
    result = run_cli("check", str(repo), json_path=tmp_path / "r.json")
    assert result.code == 2, result.stdout + result.stderr
    assert "itoa" in result.stderr and "Cargo.lock" in result.stderr


def test_a_rust_build_step_that_reaches_for_crates_io_is_caught(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "rust-server", name="net")
    (repo / ".reprobuild.toml").write_text(
        'schema = 1\n[recipe]\nextends = "rust"\n[build]\ncommands = ["CARGO_NET_OFFLINE='
        'false cargo update --dry-run || true", "cargo build --release --locked --offline", '
        '"mkdir -p \\"$REPROBUILD_OUT/linux-amd64\\" && cp target/release/notes-mcp '
        '\\"$REPROBUILD_OUT/linux-amd64/\\""]\n')
    commit(repo, "net")
    result = run_cli("check", str(repo), "--variations", "none", json_path=tmp_path / "r.json")
    assert result.code == 3, result.stdout + result.stderr
    report = result.report
    assert report is not None
    assert "index.crates.io" in {a["name"] for a in report["egress"]}, report["egress"]
