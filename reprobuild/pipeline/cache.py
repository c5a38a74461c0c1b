"""``reprobuild cache info`` and ``prune``: what reprobuild keeps on this machine, and
removing what is no longer worth keeping.

Four things grow: the dependency cache (``deps/`` archives and the ``blobs/`` they are
made of), the image downloads (``wheels/``), the source cache (``git/``: one partial,
shallow repository per URL) and the evidence directories of runs that
were not reproducible and had no ``--out`` (``$TMPDIR/reprobuild-XXXXXXXX``, kept so the
report's paths stay valid). Pruning removes dependency keys unused for a while (their
manifest's mtime is touched on every hit) or the least recently used ones above a size,
then every blob no kept key uses, and evidence directories older than a limit. Never
prints; a key a running fetch holds is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from reprobuild.errors import InputError
from reprobuild.fetch.cache import DepsCache

__all__ = ["EVIDENCE", "EVIDENCE_GRACE_S", "PruneResult", "Usage", "evidence_dirs",
           "parse_duration", "parse_size", "prune", "repositories", "tree_bytes", "usage"]

EVIDENCE = re.compile(r"reprobuild-[a-z0-9_]{8}")
"""The name ``tempfile.mkdtemp(prefix="reprobuild-")`` gives a run's results directory."""

EVIDENCE_GRACE_S = 3600.0
"""Evidence younger than an hour is never pruned, whatever the limit: it may belong to a
check still running."""

_SCRATCH_GRACE_S = 86400.0
"""A fetch's scratch directory (``.fetch-*``, ``.download-*``) older than a day was left
by a killed run."""


@dataclass(frozen=True)
class Usage:
    """One kind of thing reprobuild keeps: where, how many, how big."""

    what: str
    where: Path
    items: int
    bytes: int


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (or would remove, dry run), and what it left because in use."""

    deps_keys: int
    blobs: int
    evidence_dirs: int
    scratch_dirs: int
    freed_bytes: int
    busy_keys: int
    repositories: int = 0
    """Source repositories (``git/``) unused for as long as dependency archives may be."""


def tree_bytes(path: Path) -> int:
    """Bytes a file or directory tree takes (links not followed, vanished files skipped)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def evidence_dirs(tmp: Path | None = None) -> list[Path]:
    """The results directories of runs without ``--out`` that kept their evidence."""
    where = tmp or Path(tempfile.gettempdir())
    try:
        found = sorted(where.iterdir())
    except OSError:
        return []
    return [p for p in found if EVIDENCE.fullmatch(p.name) and not p.is_symlink()
            and p.is_dir()]


def repositories(root: Path) -> list[Path]:
    """The source cache's repositories, one per URL (``git/<hash>.git``)."""
    where = root / "git"
    return sorted(p for p in where.glob("*.git") if p.is_dir() and not p.is_symlink()) \
        if where.is_dir() else []


def _last_used(repo: Path) -> float:
    """When a run last fetched into (or read) the repository: its newest top-level entry."""
    lock = repo.with_name(repo.name + ".lock")
    return max(p.stat().st_mtime for p in [repo, *repo.iterdir(),
                                           *([lock] if lock.exists() else [])])


def _remove_repository(repo: Path) -> bool:
    """Remove a repository unless a run holds its lock (then False)."""
    lock_path = repo.with_name(repo.name + ".lock")
    try:
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(repo, ignore_errors=True)
        with contextlib.suppress(OSError):
            lock_path.unlink()
        return not repo.exists()
    finally:
        os.close(lock)


def usage(root: Path, tmp: Path | None = None) -> list[Usage]:
    """What the cache under ``root`` and the evidence directories hold."""
    cache = DepsCache(root)
    entries = cache.entries()
    blobs = cache.blob_sizes()
    wheels = root / "wheels"
    evidence = evidence_dirs(tmp)
    return [
        Usage("dependency archives", root / "deps", len(entries),
              sum(e.tar_bytes for e in entries)),
        Usage("dependency files (blobs)", root / "blobs", len(blobs), sum(blobs.values())),
        Usage("image downloads", wheels,
              len(list(wheels.iterdir())) if wheels.is_dir() else 0,
              tree_bytes(wheels) if wheels.is_dir() else 0),
        Usage("source repositories", root / "git", len(repositories(root)),
              sum(tree_bytes(p) for p in repositories(root))),
        Usage("evidence of past runs", tmp or Path(tempfile.gettempdir()), len(evidence),
              sum(tree_bytes(p) for p in evidence)),
    ]


def prune(root: Path, tmp: Path | None = None, *, unused_for_s: float,
          max_bytes: int | None, evidence_older_than_s: float, dry_run: bool = False,
          now: float | None = None) -> PruneResult:
    """Remove dependency keys unused for ``unused_for_s`` (then the least recently used
    until archives and blobs fit in ``max_bytes``), blobs no kept key uses, evidence
    directories older than ``evidence_older_than_s`` and scratch left by killed fetches."""
    now = time.time() if now is None else now
    cache = DepsCache(root)
    entries = sorted(cache.entries(), key=lambda e: e.last_used)
    sizes = cache.blob_sizes()
    uses = Counter(blob for e in entries for blob in e.blobs)
    total = sum(e.tar_bytes for e in entries) + sum(sizes.get(b, 0) for b in uses)
    doomed = []
    for entry in entries:
        old = now - entry.last_used >= unused_for_s
        if not old and (max_bytes is None or total <= max_bytes):
            continue
        doomed.append(entry)
        total -= entry.tar_bytes
        for blob in entry.blobs:
            uses[blob] -= 1
            if uses[blob] == 0:
                total -= sizes.get(blob, 0)
    freed = removed = busy = 0
    for entry in doomed:
        if dry_run or cache.remove(entry.key):
            removed += 1
            freed += entry.tar_bytes
        else:
            busy += 1
            uses.update(entry.blobs)
    keep = {blob for blob, count in uses.items() if count > 0}
    if dry_run:
        unused = [b for b in sizes if b not in keep]
        blob_count, blob_bytes = len(unused), sum(sizes[b] for b in unused)
    else:
        blob_count, blob_bytes = cache.collect_blobs(keep, now=now)
    freed += blob_bytes
    evidence = 0
    for path in evidence_dirs(tmp):
        try:
            age = now - max(p.stat().st_mtime for p in [path, *path.iterdir()])
        except OSError:
            continue
        if age < max(evidence_older_than_s, EVIDENCE_GRACE_S):
            continue
        freed += tree_bytes(path)
        evidence += 1
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    repos = 0
    for repo in repositories(root):
        try:
            old = now - _last_used(repo) >= unused_for_s
        except OSError:
            continue
        if not old:
            continue
        size = tree_bytes(repo)
        if dry_run or _remove_repository(repo):
            repos += 1
            freed += size
        else:
            busy += 1
    scratch = 0
    # An archive without its manifest was left by a run killed between the two writes.
    kept = {e.key for e in entries}
    for path in (root / "deps").glob("*.tar") if (root / "deps").is_dir() else ():
        with contextlib.suppress(OSError):
            if path.stem not in kept and not path.with_suffix(".json").exists() \
                    and now - path.stat().st_mtime >= _SCRATCH_GRACE_S:
                freed += path.stat().st_size
                scratch += 1
                if not dry_run:
                    path.unlink()
    for path in [*root.glob(".fetch-*"), *root.glob(".download-*")]:
        with contextlib.suppress(OSError):
            if path.is_dir() and now - path.stat().st_mtime >= _SCRATCH_GRACE_S:
                freed += tree_bytes(path)
                scratch += 1
                if not dry_run:
                    shutil.rmtree(path, ignore_errors=True)
    return PruneResult(deps_keys=removed, blobs=blob_count, evidence_dirs=evidence,
                       scratch_dirs=scratch, freed_bytes=freed, busy_keys=busy,
                       repositories=repos)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SECONDS = {"": 86400.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_FACTOR = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_duration(text: str, *, option: str) -> float:
    """``30d``, ``12h``, ``90m``, ``0`` (a bare number is days), at most ten years."""
    match = _DURATION.match(text)
    seconds = float(match[1]) * _SECONDS[match[2]] if match else -1.0
    if match is None or seconds > 3650 * 86400.0:
        raise InputError(f"{option} {text!r} is not a duration of at most ten years",
                         "use e.g. '30d', '12h', '90m' or '0' (everything)")
    return seconds


def parse_size(text: str, *, option: str) -> int:
    """``2G``, ``500M``, ``0``: bytes, at most 1 PiB."""
    match = _SIZE.match(text)
    size = float(match[1]) * _FACTOR[match[2].upper()] if match else -1.0
    if match is None or size > 1 << 50:
        raise InputError(f"{option} {text!r} is not a size", "use e.g. '2G' or '500M'")
    return int(size)
