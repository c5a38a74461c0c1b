"""Issue "real projects": fetch phase, lockfiles, and a TypeScript + Python npm-workspaces
monorepo, through the real CLI against the real registries and a real Docker engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_repo, run_cli

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")


def _commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid",
                    "commit", "-qam", message], check=True)


def _check(tmp_path: Path, *args: str, name: str = "r") -> tuple[int, dict[str, Any], str]:
    result = run_cli("check", *args, json_path=tmp_path / f"{name}.json")
    assert result.report is not None, result.stderr
    return result.code, result.report, result.stdout + result.stderr


def test_typescript_server_in_npm_workspaces(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "monorepo")
    code, report, text = _check(tmp_path, str(repo), "--subdir", "src/notes-ts",
                                name="first")
    assert code == 0, text
    assert report["recipe"]["name"] == "node"
    assert report["toolchain"]["image"].startswith("reprobuild/node")
    fetch = report["fetch"]
    assert fetch["strategy"] == "npm" and fetch["failure"] is None
    assert any(p.endswith("@modelcontextprotocol/sdk") or p == "@modelcontextprotocol/sdk"
               for p in fetch["pins"]), sorted(fetch["pins"])[:10]
    if not fetch["cache_hit"]:
        assert fetch["requests"], "a cold fetch lists its requests"
        assert {r["host"] for r in fetch["requests"]} == {"registry.npmjs.org"}
        assert all(r["allowed"] for r in fetch["requests"])
    a, b = report["builds"]
    assert [o["path"] for o in a["outputs"]] == ["reprobuild-fixture-server-notes-0.3.1.tgz"]
    assert a["outputs"] == b["outputs"]
    assert report["egress"] == []

    # The second run reuses the cache: no downloads at all.
    code, again, text = _check(tmp_path, str(repo), "--subdir", "src/notes-ts",
                               "--variations", "none", name="second")
    assert code == 0, text
    assert again["fetch"]["cache_hit"] is True
    assert again["fetch"]["requests"] == []
    assert again["builds"][0]["outputs"] == a["outputs"]


def test_python_server_in_the_same_monorepo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "monorepo")
    code, report, text = _check(tmp_path, str(repo), "--subdir", "src/weather-py")
    assert code == 0, text
    assert report["recipe"]["name"] == "python"
    fetch = report["fetch"]
    assert fetch["strategy"] == "python-build"
    assert "hatchling" in fetch["pins"]
    assert all(h.startswith("sha256:") for h in fetch["hashes"].values())
    names = sorted(o["path"] for o in report["builds"][0]["outputs"])
    assert len(names) == 2 and names[0].endswith(".whl") and names[1].endswith(".tar.gz")


def test_tampered_lockfile_hash_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "tampered-lock")
    code, report, text = _check(tmp_path, str(repo))
    assert code == 2, text
    assert report["verdict"] == "error"
    assert "is-number@7.0.0" in report["message"]
    assert "Traceback" not in text


def test_off_allow_list_registry_in_the_lockfile_is_egress(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "tampered-lock")
    lock_path = repo / "package-lock.json"
    lock = json.loads(lock_path.read_text())
    entry = lock["packages"]["node_modules/is-number"]
    entry["resolved"] = "https://registry.attacker.example/is-number/-/is-number-7.0.0.tgz"
    lock_path.write_text(json.dumps(lock, indent=2) + "\n")
    _commit(repo, "point the lock at an attacker's registry")
    code, report, text = _check(tmp_path, str(repo))
    assert code == 3, text
    assert report["verdict"] == "egress"
    fetch_attempts = [a for a in report["egress"] if a["phase"] == "fetch"]
    assert fetch_attempts and fetch_attempts[0]["name"] == "registry.attacker.example"
    assert report["builds"] == [], "nothing is built from a fetch that was tampered with"
