"""``reprobuild cache info/prune``, ``doctor``'s pure checks, ``--version``, completion and
the engine warning remembered once per version: real files in a private cache, the real
CLI in a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprobuild.archive import ExtractedFile
from reprobuild.fetch.cache import BLOB_GRACE_S, DepsCache
from reprobuild.pipeline import cache as cache_core
from reprobuild.pipeline.doctor import Status, ca_bundle, cgroups, disk

DAY = 86400.0


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprobuild", *args], cwd=cwd, text=True,
                          capture_output=True, check=False,
                          env={**os.environ, "COLUMNS": "200", **env})


def store(cache: DepsCache, tmp: Path, key: str, contents: dict[str, bytes], *,
          age_s: float) -> None:
    """A real key in the cache, last used ``age_s`` ago (its blobs as old)."""
    staging = tmp / f"staging-{key}"
    members = []
    for name, data in contents.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
        members.append(ExtractedFile(path=name, sha256=hashlib.sha256(data).hexdigest(),
                                     size=len(data)))
    cache.store(key, staging, members, {"pins": {}})
    then = time.time() - age_s
    for member in members:
        os.utime(cache.blob(member.sha256), (then, then))
    os.utime(cache.meta_path(key), (then, then))


def test_prune_removes_unused_keys_and_only_their_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = DepsCache(root)
    shared = b"shared" * 100
    store(cache, tmp_path, "old", {"a": b"only old" * 100, "s": shared}, age_s=40 * DAY)
    store(cache, tmp_path, "new", {"b": b"only new" * 100, "s": shared}, age_s=DAY)
    result = cache_core.prune(root, tmp_path / "tmp", unused_for_s=30 * DAY, max_bytes=None,
                              evidence_older_than_s=7 * DAY)
    assert result.deps_keys == 1 and result.blobs == 1
    assert [e.key for e in cache.entries()] == ["new"]
    assert cache.load("new") is not None, "the kept key is whole"
    assert not cache.blob(hashlib.sha256(b"only old" * 100).hexdigest()).exists()
    assert cache.blob(hashlib.sha256(shared).hexdigest()).exists()


def test_prune_to_a_size_drops_the_least_recently_used_first(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = DepsCache(root)
    for index, age in enumerate((3 * DAY, 2 * DAY, DAY)):
        store(cache, tmp_path, f"k{index}", {f"f{index}": bytes([index]) * 100_000},
              age_s=age)
    assert cache.load("k0") is not None  # a hit makes k0 the most recently used
    result = cache_core.prune(root, tmp_path / "tmp", unused_for_s=365 * DAY,
                              max_bytes=250_000, evidence_older_than_s=7 * DAY)
    assert result.deps_keys == 2
    assert [e.key for e in cache.entries()] == ["k0"]


def test_young_orphan_blobs_are_kept_a_fetch_may_be_storing_them(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = DepsCache(root)
    young = cache.blob("0" * 64)
    young.parent.mkdir(parents=True)
    young.write_bytes(b"being stored")
    assert cache.collect_blobs(set(), now=time.time()) == (0, 0)
    assert cache.collect_blobs(set(), now=time.time() + BLOB_GRACE_S + 1) == (1, 12)


def test_evidence_and_scratch_of_old_runs_are_pruned_recent_ones_kept(tmp_path: Path) -> None:
    root, tmp = tmp_path / "cache", tmp_path / "tmp"
    now = time.time()
    for name, age in (("reprobuild-old0_abc", 10 * DAY), ("reprobuild-new0_abc", 0),
                      ("reprobuild-src-old", 10 * DAY), ("reprobuild-lock0001", 10 * DAY)):
        where = tmp / name
        where.mkdir(parents=True)
        (where / "report.json").write_text("{}")
        for path in (where / "report.json", where):
            os.utime(path, (now - age, now - age))
    scratch = root / ".fetch-x1"
    scratch.mkdir(parents=True)
    os.utime(scratch, (now - 2 * DAY, now - 2 * DAY))
    # Even a limit of 0 keeps what is younger than an hour (a check may be running).
    result = cache_core.prune(root, tmp, unused_for_s=30 * DAY, max_bytes=None,
                              evidence_older_than_s=0)
    assert result.evidence_dirs == 2 and result.scratch_dirs == 1
    assert sorted(p.name for p in tmp.iterdir()) == ["reprobuild-new0_abc",
                                                      "reprobuild-src-old"]
    assert not scratch.exists()


def test_cache_commands_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "xdg" / "reprobuild"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    store(DepsCache(root), tmp_path, "old", {"a": b"x" * 5000}, age_s=40 * DAY)
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "TMPDIR": str(tmp)}
    info = cli("cache", "info", cwd=tmp_path, env=env)
    assert info.returncode == 0, info.stderr
    assert "dependency archives" in info.stdout and "evidence of past runs" in info.stdout
    dry = cli("cache", "prune", "--dry-run", cwd=tmp_path, env=env)
    assert dry.returncode == 0 and "would remove 1 dependency archive" in dry.stdout
    assert DepsCache(root).entries(), "a dry run removes nothing"
    done = cli("cache", "prune", cwd=tmp_path, env=env)
    assert done.returncode == 0 and "removed 1 dependency archive" in done.stdout
    assert DepsCache(root).entries() == []
    for option, value in (("--unused-for", "forever"), ("--max-size", "lots"),
                          ("--evidence-older-than", "99999999d")):
        bad = cli("cache", "prune", option, value, cwd=tmp_path, env=env)
        assert bad.returncode == 2 and option in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def test_version_option_and_shell_completion(tmp_path: Path) -> None:
    from reprobuild import __version__  # noqa: PLC0415

    result = cli("--version", cwd=tmp_path, env={})
    assert result.returncode == 0 and result.stdout.strip() == __version__
    completion = cli("--show-completion", "bash", cwd=tmp_path, env={})
    assert completion.returncode == 0, completion.stderr
    assert "complete" in completion.stdout and "reprobuild" in completion.stdout


def test_doctor_checks_are_functions_of_what_they_see(tmp_path: Path) -> None:
    full = {"MemoryLimit": True, "PidsLimit": True, "CpuCfsQuota": True, "CPUSet": True,
            "CgroupVersion": "2", "CgroupDriver": "systemd"}
    assert [f.status for f in cgroups(full, host_cpus=4)] == [Status.OK, Status.OK]
    found = cgroups({**full, "PidsLimit": False, "CPUSet": False,
                     "Warnings": ["WARNING: No swap limit support"]}, host_cpus=4)
    assert [f.status for f in found] == [Status.FAIL, Status.WARN, Status.WARN]
    assert "pids" in found[0].detail and "swap" in found[2].detail
    assert cgroups(full, host_cpus=1)[1].status is Status.WARN
    assert ca_bundle(None).status is Status.OK
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    assert ca_bundle(garbage).status is Status.FAIL
    assert ca_bundle(tmp_path / "missing.pem").status is Status.FAIL
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if system.is_file():
        assert ca_bundle(system).status is Status.OK
    assert disk(tmp_path / "not" / "yet", minimum=0).status is Status.OK
    assert disk(tmp_path, minimum=1 << 62).status is Status.WARN


def test_the_engine_warning_is_remembered_once_per_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.sandbox import engine  # noqa: PLC0415

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert engine._first_sight("20.10.24+dfsg1")
    assert not engine._first_sight("20.10.24+dfsg1")
    assert engine._first_sight("24.0.7"), "another version warns again"
    assert engine._first_sight("../../etc/passwd")  # a name, never a path
    assert (tmp_path / "reprobuild" / "engine-warned" / ".._.._etc_passwd").is_file()


def test_source_repositories_unused_for_long_are_pruned_held_ones_kept(tmp_path: Path) -> None:
    import fcntl  # noqa: PLC0415

    root = tmp_path / "cache"
    old, held, fresh = (root / "git" / f"{name}.git" for name in ("old", "held", "fresh"))
    for repo in (old, held, fresh):
        (repo / "objects").mkdir(parents=True)
        (repo / "HEAD").write_text("ref: refs/heads/main\n")
    then = time.time() - 60 * DAY
    for repo in (old, held):
        for path in (repo, repo / "objects", repo / "HEAD"):
            os.utime(path, (then, then))
    listed = {u.what: u for u in cache_core.usage(root, tmp_path / "tmp")}
    assert listed["source repositories"].items == 3
    lock = os.open(held.with_name("held.git.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    os.utime(held.with_name("held.git.lock"), (then, then))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = cache_core.prune(root, tmp_path / "tmp", unused_for_s=30 * DAY,
                                  max_bytes=None, evidence_older_than_s=7 * DAY)
    finally:
        os.close(lock)
    assert result.repositories == 1 and result.busy_keys == 1
    assert not old.exists() and held.exists() and fresh.exists()


def test_an_archive_left_without_its_manifest_is_pruned_once_old(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    deps = root / "deps"
    deps.mkdir(parents=True)
    orphan, fresh = deps / ("1" * 64 + ".tar"), deps / ("2" * 64 + ".tar")
    for path in (orphan, fresh):
        path.write_bytes(b"\0" * 10240)
    os.utime(orphan, (time.time() - 2 * DAY, time.time() - 2 * DAY))
    result = cache_core.prune(root, tmp_path / "tmp", unused_for_s=30 * DAY, max_bytes=None,
                              evidence_older_than_s=7 * DAY)
    assert result.scratch_dirs == 1 and result.freed_bytes >= 10240
    assert not orphan.exists() and fresh.exists()  # a fetch may be writing the young one
