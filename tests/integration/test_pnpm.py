"""pnpm end to end: a workspace member with ``workspace:`` and ``catalog:`` dependencies,
pnpm itself and the packages fetched from the npm registry (checked against packageManager
and pnpm-lock.yaml), built and packed offline twice under every variation, and the ways a
pnpm build gets caught."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from .conftest import git, make_repo, run_cli

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")

MEMBER = "packages/notes-mcp"


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def test_a_pnpm_workspace_member_packs_bit_for_bit_with_its_ranges_rewritten(
        tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "pnpm-server")
    result = run_cli("check", str(repo), "--subdir", MEMBER, "--out", str(tmp_path / "out"),
                     json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    report = result.report
    assert report is not None and report["recipe"]["name"] == "pnpm"
    assert report["fetch"]["strategy"] == "pnpm"
    assert report["fetch"]["pins"] == {"ms": "2.1.3"}
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", report["fetch"]["hashes"]["pnpm@11.8.0"])
    hosts = {r["host"] for r in report["fetch"]["requests"]}
    assert hosts <= {"registry.npmjs.org"}
    assert hosts or report["fetch"]["cache_hit"], "a fresh fetch lists its requests"
    assert [o["path"] for o in report["builds"][0]["outputs"]] == ["notes-mcp-1.2.0.tgz"]
    # What a release publishes: workspace: and catalog: became real ranges, the build ran
    # (dist/ with the version banner), and only the declared files are in.
    tgz = tmp_path / "out" / "a" / "artifacts" / "notes-mcp-1.2.0.tgz"
    with tarfile.open(fileobj=io.BytesIO(tgz.read_bytes()), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["package/dist/index.js", "package/package.json"]
        manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        index = tar.extractfile("package/dist/index.js").read()  # type: ignore[union-attr]
    assert manifest["dependencies"] == {"ms": "^2.1.3", "@notes/core": "^1.0.0"}
    assert b"/* @notes/mcp 1.2.0 */" in index
    # A second check is served from the dependency cache.
    again = run_cli("check", str(repo), "--subdir", MEMBER, "--variations", "none",
                    json_path=tmp_path / "r2.json")
    assert again.code == 0, again.stdout + again.stderr
    assert again.report is not None and again.report["fetch"]["cache_hit"] is True
    assert again.report["fetch"]["key"] == report["fetch"]["key"]


def test_a_tampered_pnpm_lock_integrity_stops_the_fetch_naming_the_package(
        tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "pnpm-server")
    lock = repo / "pnpm-lock.yaml"
    lock.write_text(lock.read_text().replace("sha512-6Flz", "sha512-7Flz"))
    commit(repo, "tamper")
    result = run_cli("check", str(repo), "--subdir", MEMBER, json_path=tmp_path / "r.json")
    assert result.code == 2, result.stdout + result.stderr
    assert "ms@2.1.3" in result.stderr and "pnpm-lock.yaml" in result.stderr


def test_a_pnpm_that_is_not_the_one_package_json_pins_never_runs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "pnpm-server")
    manifest = repo / "package.json"
    data = json.loads(manifest.read_text())
    data["packageManager"] = "pnpm@11.8.0+sha512." + "0" * 128
    manifest.write_text(json.dumps(data, indent=2) + "\n")
    commit(repo, "pin a hash the registry's pnpm does not have")
    result = run_cli("check", str(repo), "--subdir", MEMBER, json_path=tmp_path / "r.json")
    assert result.code == 2, result.stdout + result.stderr
    assert "pnpm@11.8.0" in result.stderr and "packageManager" in result.stderr


def test_a_pnpm_build_step_that_reaches_for_the_registry_is_caught(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "pnpm-server", name="net")
    (repo / MEMBER / ".reprobuild.toml").write_text(
        'schema = 1\n[recipe]\nextends = "pnpm"\n[build]\ncommands = ["pnpm install '
        "--frozen-lockfile --filter '{.}...'\", \"pnpm add is-number --offline=false "
        '--fetch-retries=0 || true", "pnpm pack --pack-destination \\"$REPROBUILD_OUT\\""]\n')
    commit(repo, "net")
    result = run_cli("check", str(repo), "--subdir", MEMBER, "--variations", "none",
                     json_path=tmp_path / "r.json")
    assert result.code == 3, result.stdout + result.stderr
    report = result.report
    assert report is not None
    assert "registry.npmjs.org" in {a["name"] for a in report["egress"]}, report["egress"]
