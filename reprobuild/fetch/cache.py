"""The content-addressed cache of fetched dependencies (``~/.cache/reprobuild``).

Every fetched file is stored once as ``blobs/sha256/<hex>``; ``deps/<key>.tar`` is the
archive handed to the builds and ``deps/<key>.json`` its manifest (members with hashes,
pins, env, notes). Writes are atomic (temp file + rename) under a per-key lock; a hit
checks the tar against its manifest and rebuilds it from blobs if needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from reprobuild.archive import ExtractedFile, FileOrder, StreamedFile, write_tar
from reprobuild.atomic import atomic_file, write_bytes_atomic
from reprobuild.hashing import sha256_file

__all__ = ["BLOB_GRACE_S", "DEPS_MTIME", "CacheEntry", "DepsCache", "write_deps_tar"]

DEPS_MTIME = 315532800
"""Member mtime in the deps tar (1980-01-01), like the source tar's fallback."""


class _HashingWriter(io.RawIOBase):
    """Passes writes through while hashing and counting them (one pass over the tar)."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._target.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)
        return len(chunk)


def write_deps_tar(out: IO[bytes] | io.RawIOBase, members: Sequence[ExtractedFile],
                   open_member: Callable[[ExtractedFile], IO[bytes]],
                   executables: Collection[str] = ()) -> None:
    """The deps archive: :func:`~reprobuild.archive.write_tar` of the members, sorted;
    ``executables`` (fetched tools) are 0755, everything else 0644."""
    files = [StreamedFile(m.path, m.size, functools.partial(open_member, m),
                          mode=0o755 if m.path in executables else 0o644) for m in members]
    write_tar(out, files, order=FileOrder.SORTED, mtime=DEPS_MTIME)


BLOB_GRACE_S = 3600.0
"""A blob younger than this is never collected: a fetch may be storing a key that uses it
(store() touches the blobs it reuses)."""


@dataclass(frozen=True)
class CacheEntry:
    """One cached key as ``reprobuild cache`` sees it."""

    key: str
    tar_bytes: int
    last_used: float
    """The manifest's mtime: written on store, touched on every hit."""
    blobs: frozenset[str]


class DepsCache:
    """The content-addressed cache under ``root`` (see the module docstring)."""

    FORMAT = 1

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives."""
        return self.root / "blobs" / "sha256" / sha256

    def tar_path(self, key: str) -> Path:
        """The archive of one key."""
        return self.root / "deps" / f"{key}.tar"

    def meta_path(self, key: str) -> Path:
        """The manifest of one key."""
        return self.root / "deps" / f"{key}.json"

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Serialise fetches of one key across processes on this host."""
        path = self.root / "locks" / f"deps-{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, key: str) -> dict[str, Any] | None:
        """The manifest of a usable cached archive, or None (rebuilds the tar from blobs)."""
        try:
            meta = json.loads(self.meta_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("format") != self.FORMAT \
                or meta.get("key") != key:
            return None
        tar = self.tar_path(key)
        with contextlib.suppress(OSError):  # the manifest's mtime is the key's last use
            os.utime(self.meta_path(key))
        try:
            if tar.stat().st_size == meta["tar_size"] and sha256_file(tar) == meta["tar_sha256"]:
                return meta
        except (OSError, KeyError):
            pass
        members = [ExtractedFile(path=str(p), sha256=str(h), size=int(s))
                   for p, h, s in meta.get("files", [])]
        if not all(self.blob(m.sha256).is_file() for m in members):
            return None
        try:
            digest, size = self._write_tar(key, members, verify=True,
                                           executables=frozenset(meta.get("executable", [])))
        except (OSError, ValueError):
            return None
        if digest != meta.get("tar_sha256") or size != meta.get("tar_size"):
            return None
        return meta

    def store(self, key: str, staging: Path, members: Sequence[ExtractedFile],
              meta: dict[str, Any], executables: Collection[str] = ()) -> dict[str, Any]:
        """Move staged files into blobs, write the archive and then its manifest."""
        for member in members:
            target = self.blob(member.sha256)
            if target.is_file():
                with contextlib.suppress(OSError):  # young blobs are never collected
                    os.utime(target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".blob.", dir=target.parent)
            os.close(fd)
            shutil.copyfile(staging / member.path, tmp)
            Path(tmp).chmod(0o644)
            Path(tmp).replace(target)
        digest, size = self._write_tar(key, members, verify=False, executables=executables)
        full = {**meta, "format": self.FORMAT, "key": key, "tar_sha256": digest,
                "tar_size": size, "files": [[m.path, m.sha256, m.size] for m in members]}
        if executables:
            full["executable"] = sorted(executables)
        write_bytes_atomic(json.dumps(full, indent=1, sort_keys=True).encode(),
                           self.meta_path(key))
        return full

    def _open(self, member: ExtractedFile, *, verify: bool) -> IO[bytes]:
        path = self.blob(member.sha256)
        if verify and sha256_file(path) != member.sha256:
            raise ValueError(f"cached blob {path} is corrupt")
        return path.open("rb")

    def _write_tar(self, key: str, members: Sequence[ExtractedFile], *, verify: bool,
                   executables: Collection[str] = ()) -> tuple[str, int]:
        target = self.tar_path(key)
        with atomic_file(target) as raw:
            hashing = _HashingWriter(raw)
            write_deps_tar(hashing, members, functools.partial(self._open, verify=verify),
                           executables)
        return hashing.digest.hexdigest(), hashing.size

    def entries(self) -> list[CacheEntry]:
        """Every cached key (a manifest that cannot be read counts, with no blobs)."""
        found = []
        for meta_path in sorted((self.root / "deps").glob("*.json")):
            key = meta_path.stem
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                blobs = frozenset(str(f[1]) for f in meta.get("files", []))
            except (OSError, ValueError, TypeError, IndexError, AttributeError):
                blobs = frozenset()
            try:
                used = meta_path.stat().st_mtime
            except OSError:
                continue
            tar = self.tar_path(key)
            found.append(CacheEntry(key=key, tar_bytes=tar.stat().st_size if tar.is_file()
                                    else 0, last_used=used, blobs=blobs))
        return found

    def blob_sizes(self) -> dict[str, int]:
        """Every stored blob's size, by sha256."""
        found = {}
        for path in (self.root / "blobs" / "sha256").glob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    found[path.name] = path.stat().st_size
        return found

    def remove(self, key: str) -> bool:
        """Remove one key's archive and manifest, unless a fetch holds it (False)."""
        path = self.root / "locks" / f"deps-{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            try:
                for target in (self.meta_path(key), self.tar_path(key)):
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            path.unlink()
        return True

    def collect_blobs(self, keep: Collection[str], *, now: float) -> tuple[int, int]:
        """Remove blobs no kept key uses (older than :data:`BLOB_GRACE_S`): (count, bytes)."""
        count = size = 0
        for path in (self.root / "blobs" / "sha256").glob("*"):
            if path.name in keep:
                continue
            try:
                info = path.stat()
                if now - info.st_mtime < BLOB_GRACE_S:
                    continue
                path.unlink()
            except OSError:
                continue
            count += 1
            size += info.st_size
        return count, size
