"""Write files so that a reader never sees one half-written.

Reports, caches and anything a user already has are replaced only by a complete file:
the content goes to a temporary file in the same directory, is flushed to disk, and is
renamed over the target. On any error the temporary file is removed and the old file,
if any, stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def write_bytes_atomic(data: bytes, path: Path) -> None:
    """Replace ``path`` with ``data`` in one step."""
    with atomic_file(path) as handle:
        handle.write(data)


def write_output(data: bytes, path: Path) -> None:
    """Write a file the user named (a report) without replacing what the name points at.

    A regular file (or a missing one) is replaced atomically; through a symlink, the file
    it points at is, and the link stays. A device or FIFO (``/dev/stdout``, a pipe, or a
    symlink to one) is written through, never renamed over. A directory is refused
    (:class:`IsADirectoryError`).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"{path} is a directory")
    if info is not None and not stat.S_ISREG(info.st_mode):
        with path.open("wb") as handle:
            handle.write(data)
        return
    write_bytes_atomic(data, Path(os.path.realpath(path)) if path.is_symlink() else path)
