"""Hashing files: one streaming implementation for every digest reprobuild records.

Artifacts, cached dependency blobs, fetched wheels and bootstrap tarballs are all hashed
the same way (1 MiB blocks, never the whole file in memory).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_digest", "sha256_file"]

_BLOCK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """The sha256 of a file, as hex."""
    return file_digest(path, "sha256").split(":", 1)[1]


def file_digest(path: Path, algo: str) -> str:
    """A file's digest as ``algo:hex`` (``sha256``, ``sha512``, ...: what locks pin)."""
    digest = hashlib.new(algo)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return f"{algo}:{digest.hexdigest()}"
