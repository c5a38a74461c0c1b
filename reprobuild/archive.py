"""Deterministic tar writing (sources and dependencies in) and paranoid parsing (outputs out).

Sources go into the sandbox as a tar streamed on stdin and unpacked into a tmpfs; the member
order of that stream becomes the directory order there, which is how the file-ordering
variation is applied without FUSE (see NOTES.md §5). Outputs come back as a tar produced by an
untrusted build: it is parsed with ``tarfile`` in streaming mode and only regular files are
written, by us, with ``O_NOFOLLOW|O_EXCL`` under directories we created ourselves. We never call
``tarfile.extract``/``extractall`` or rely on extraction filters (CVE-2025-4517 and relatives).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from reprobuild.errors import EnvironmentFailure, UnsafeArchiveError
from reprobuild.source import EntryKind, SourceEntry

__all__ = [
    "ExtractLimits",
    "ExtractedFile",
    "FileOrder",
    "StreamedFile",
    "build_tar",
    "extract_regular_files",
    "files_tar",
    "write_tar",
]

GiB = 1024 * 1024 * 1024
_CHUNK = 1024 * 1024
#: Bytes of headers (ustar + PAX/GNU long names) we tolerate per member on top of file data.
_HEADER_ALLOWANCE = 16 * 1024
_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})


class FileOrder(Enum):
    """Member order in a built tar; the sandbox's tmpfs lists entries in reverse creation order.

    SORTED walks the tree depth-first with siblings in ascending name order; REVERSED walks it
    depth-first with siblings in descending order. Either way a directory precedes its contents.
    """

    SORTED = "sorted"
    REVERSED = "reversed"


@dataclass(frozen=True)
class ExtractLimits:
    """Caps on what an untrusted archive may make us write to the host."""

    max_files: int = 10_000
    max_file_bytes: int = 1 * GiB
    max_total_bytes: int = 2 * GiB
    max_depth: int = 64
    """Path components per member: a tree nested deeper is refused while streaming (a
    build can nest thousands of levels; the host should never walk such a tree)."""


@dataclass(frozen=True)
class ExtractedFile:
    """A regular file written by :func:`extract_regular_files`; ``path`` is posix, relative."""

    path: str
    size: int
    sha256: str


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class StreamedFile:
    """A regular file whose bytes are read only while the tar is written (cached blobs),
    so a large archive never sits in memory."""

    path: str
    size: int
    open: Callable[[], IO[bytes]]
    mode: int = 0o644


_Leaf = SourceEntry | StreamedFile


@dataclass
class _Dir:
    children: dict[str, _Dir | _Leaf]


def _split_clean(path: str, what: str) -> list[str]:
    parts = path.split("/")
    if not path or path.startswith("/") or "\0" in path:
        raise ValueError(f"unsafe {what} {path!r}")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe {what} {path!r}")
    return parts


def build_tar(
    entries: Sequence[SourceEntry], *, order: FileOrder, mtime: int, prefix: str = ""
) -> bytes:
    """An uncompressed PAX tar of ``entries`` in memory (see :func:`write_tar`)."""
    buf = io.BytesIO()
    write_tar(buf, entries, order=order, mtime=mtime, prefix=prefix)
    return buf.getvalue()


def write_tar(
    out: IO[bytes] | io.RawIOBase, entries: Sequence[_Leaf], *, order: FileOrder, mtime: int,
    prefix: str = "",
) -> None:
    """Write an uncompressed PAX tar of ``entries``, byte-identical for identical inputs.

    The one deterministic tar writer (sources into the sandbox, the fetched-dependencies
    archive, files for image build steps). Owner is 0:0 with empty user/group names, every
    mtime is ``mtime``, directories are emitted explicitly before their contents (0o755,
    including those of ``prefix``), files are 0o644 or 0o755 (only the executable bit is
    kept), symlinks stay symlinks (only unpacked in a sandbox). tarfile pads the archive
    to whole 10240-byte records, so it can follow another such tar on one stream and be
    unpacked by a second ``tar -x -f -``.
    """
    root = _Dir({})
    for entry in entries:
        parts = _split_clean(entry.path, "entry path")
        node = root
        for part in parts[:-1]:
            child = node.children.setdefault(part, _Dir({}))
            if not isinstance(child, _Dir):
                raise ValueError(f"{entry.path!r} needs {part!r} to be a directory")
            node = child
        if parts[-1] in node.children:
            raise ValueError(f"duplicate entry {entry.path!r}")
        node.children[parts[-1]] = entry

    prefix_parts = _split_clean(prefix.strip("/"), "prefix") if prefix.strip("/") else []
    with tarfile.open(fileobj=cast(IO[bytes], out), mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8") as tar:

        def add(name: str, info_type: bytes, mode: int, *, link: str = "", size: int = 0,
                handle: IO[bytes] | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.type = info_type
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.linkname = link
            info.size = size
            tar.addfile(info, handle)

        for i in range(len(prefix_parts)):
            add("/".join(prefix_parts[: i + 1]), tarfile.DIRTYPE, 0o755)

        def walk(node: _Dir, base: str) -> None:
            names = sorted(node.children, reverse=order is FileOrder.REVERSED)
            for name in names:
                child = node.children[name]
                path = f"{base}/{name}" if base else name
                if isinstance(child, _Dir):
                    add(path, tarfile.DIRTYPE, 0o755)
                    walk(child, path)
                elif isinstance(child, StreamedFile):
                    with child.open() as handle:
                        add(path, tarfile.REGTYPE, 0o755 if child.mode & 0o111 else 0o644,
                            size=child.size, handle=handle)
                elif child.kind is EntryKind.SYMLINK:
                    add(path, tarfile.SYMTYPE, 0o777,
                        link=child.data.decode("utf-8", "surrogateescape"))
                else:
                    add(path, tarfile.REGTYPE, 0o755 if child.mode & 0o111 else 0o644,
                        size=len(child.data), handle=io.BytesIO(child.data))

        walk(root, "/".join(prefix_parts))


def files_tar(files: Mapping[str, bytes], *, mtime: int = 0) -> bytes:
    """A deterministic tar of plain files by relative path (mode 0o644, parents included)."""
    return build_tar([SourceEntry(path=path, kind=EntryKind.FILE, mode=0o644, data=data)
                      for path, data in files.items()], order=FileOrder.SORTED, mtime=mtime)


# --------------------------------------------------------------------------- extraction


class _CappedReader(io.RawIOBase):
    """Counts raw bytes read, so malformed headers cannot make us read without bound."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        super().__init__()
        self._inner = inner
        self._cap = cap
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = self._cap + 1 - self.count if size is None or size < 0 else size
        data = self._inner.read(min(want, self._cap + 1 - self.count))
        self.count += len(data)
        if self.count > self._cap:
            raise UnsafeArchiveError(f"archive stream is longer than {self._cap} bytes")
        return data


def _member_parts(name: str, strip: list[str]) -> list[str]:
    """Validated path components of a member name, after removing ``strip``."""
    if not name:
        raise UnsafeArchiveError("refusing archive member with an empty name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafeArchiveError(f"refusing member {name!r}: control character in name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArchiveError(f"refusing member {name!r}: name is not UTF-8") from None
    if "\\" in name:
        raise UnsafeArchiveError(f"refusing member {name!r}: backslash in name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"refusing member {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing member {name!r}: '..' in path")
    if strip:
        if parts[: len(strip)] != strip:
            raise UnsafeArchiveError(
                f"refusing member {name!r}: outside the expected {'/'.join(strip)}/"
            )
        parts = parts[len(strip) :]
    return parts


class _Writer:
    """Creates directories and files under ``dest`` via dir fds and ``O_NOFOLLOW`` only.

    Every path is walked from ``dest`` one component at a time, so a link planted anywhere
    (by anyone) is never followed; only the last directory fd is kept open (fd budget).
    """

    def __init__(self, dest_fd: int) -> None:
        self.dest_fd = dest_fd
        self.dirs: set[tuple[str, ...]] = set()  # directories we created
        self.files: set[tuple[str, ...]] = set()  # files we created
        self._cached: tuple[tuple[str, ...], int] | None = None

    def ensure_dir(self, parts: tuple[str, ...], member: str) -> int:
        """Fd of our directory ``parts`` (created if needed); valid until the next call."""
        if not parts:
            return self.dest_fd
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        # Going one level down from the directory we hold (how a tree is streamed) opens
        # one component, not the whole path again: a deep tree costs linear time.
        start = 0
        if self._cached is not None and parts[: len(self._cached[0])] == self._cached[0]:
            start = len(self._cached[0])
            fd = self._cached[1]
            self._cached = None
        else:
            self.close()
            fd = self.dest_fd
        try:
            for i in range(start, len(parts)):
                name = parts[i]
                sub = parts[: i + 1]
                if sub in self.files:
                    raise UnsafeArchiveError(
                        f"refusing member {member!r}: {'/'.join(sub)} is a file"
                    )
                fresh = sub not in self.dirs
                if fresh:
                    os.mkdir(name, 0o755, dir_fd=fd)  # fails if anything is already there
                    self.dirs.add(sub)
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                child = os.open(name, flags, dir_fd=fd)
                if fd != self.dest_fd:
                    os.close(fd)
                fd = child
                if fresh:
                    os.fchmod(fd, 0o755)  # independent of the umask
        except BaseException:
            if fd != self.dest_fd:
                os.close(fd)
            raise
        self._cached = (parts, fd)
        return fd

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _clear_dir(dest_fd: int) -> None:
    """Remove everything below the directory open as ``dest_fd`` (which we populated).

    Iterative and by directory fds: no recursion limit and no path-length limit however
    deep the tree, and a link is never followed (it is unlinked like a file).
    """

    def level(fd: int) -> list[str]:
        subdirs: list[str] = []
        with os.scandir(fd) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
        return subdirs

    top = os.dup(dest_fd)
    stack: list[tuple[int, list[str], str]] = [(top, level(top), "")]
    try:
        while stack:
            fd, pending, _name = stack[-1]
            if pending:
                name = pending.pop()
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                stack.append((child, [], name))  # on the stack first: closed if level fails
                stack[-1] = (child, level(child), name)
                continue
            stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(_name, dir_fd=stack[-1][0])
    finally:
        for fd, _pending, _name in stack:
            os.close(fd)


def extract_regular_files(
    stream: bytes | BinaryIO,
    dest: Path,
    limits: ExtractLimits,
    *,
    strip_prefix: str | None = None,
) -> list[ExtractedFile]:
    """Write the regular files of an UNTRUSTED tar under ``dest``; refuse anything else.

    ``dest`` must be an empty directory (it is created if missing). Links, devices, fifos,
    absolute or ``..`` paths, control characters, backslashes, duplicates and anything over
    ``limits`` raise :class:`UnsafeArchiveError` naming the member, after ``dest`` has been
    emptied again. ``strip_prefix`` (e.g. ``"out"`` for docker's ``get_archive``) is removed
    from every member name; members outside it are refused. Returns files sorted by path.
    """
    if not dest.exists():
        dest.mkdir(mode=0o755)
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with os.scandir(dest_fd) as listing:
            not_empty = next(listing, None) is not None
        if not_empty:
            raise ValueError(f"extraction destination {dest} is not empty")
        writer = _Writer(dest_fd)
        try:
            return _extract(stream, writer, limits, strip_prefix)
        except BaseException:
            writer.close()
            _clear_dir(dest_fd)
            raise
        finally:
            writer.close()
    finally:
        os.close(dest_fd)


def _extract(
    stream: bytes | BinaryIO,
    writer: _Writer,
    limits: ExtractLimits,
    strip_prefix: str | None,
) -> list[ExtractedFile]:
    strip = [p for p in (strip_prefix or "").split("/") if p not in ("", ".")]
    if ".." in strip:
        raise ValueError(f"bad strip_prefix {strip_prefix!r}")
    max_members = 2 * limits.max_files + 16  # directories count separately from files
    raw = io.BytesIO(stream) if isinstance(stream, bytes) else stream
    reader = _CappedReader(
        cast(IO[bytes], raw), limits.max_total_bytes + max_members * _HEADER_ALLOWANCE
    )
    seen: set[tuple[str, ...]] = set()
    results: list[ExtractedFile] = []
    total = 0
    members = 0
    try:
        with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as tar:
            for member in tar:
                members += 1
                if members > max_members:
                    raise UnsafeArchiveError(
                        f"refusing member {member.name!r}: more than {max_members} members"
                    )
                parts = tuple(_member_parts(member.name, strip))
                if len(parts) > limits.max_depth:
                    raise UnsafeArchiveError(
                        f"refusing member {_shown(member.name)}: more than "
                        f"{limits.max_depth} levels deep")
                kind = _kind_error(member)
                if kind:
                    raise UnsafeArchiveError(f"refusing member {member.name!r}: {kind}")
                if member.isdir():
                    if parts in seen:
                        raise UnsafeArchiveError(f"refusing member {member.name!r}: duplicate")
                    if parts:
                        seen.add(parts)
                        with _os_guard(member.name):
                            writer.ensure_dir(parts, member.name)
                    continue
                if not parts:
                    raise UnsafeArchiveError(f"refusing member {member.name!r}: empty file name")
                if parts in seen:
                    raise UnsafeArchiveError(f"refusing member {member.name!r}: duplicate")
                seen.add(parts)
                if len(results) >= limits.max_files:
                    raise UnsafeArchiveError(
                        f"refusing member {member.name!r}: more than {limits.max_files} files"
                    )
                if member.size > limits.max_file_bytes:
                    raise UnsafeArchiveError(
                        f"refusing member {member.name!r}: {member.size} bytes is over the "
                        f"{limits.max_file_bytes}-byte limit"
                    )
                if total + member.size > limits.max_total_bytes:
                    raise UnsafeArchiveError(
                        f"refusing member {member.name!r}: archive is over the "
                        f"{limits.max_total_bytes}-byte total limit"
                    )
                source = tar.extractfile(member)
                if source is None:
                    raise UnsafeArchiveError(f"refusing member {member.name!r}: no content")
                with _os_guard(member.name):
                    size, digest = _write_file(
                        writer, parts, source, member=member.name, limits=limits, total_before=total
                    )
                total += size
                results.append(ExtractedFile("/".join(parts), size, digest))
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"malformed archive: {exc}") from exc
    except EOFError as exc:
        raise UnsafeArchiveError(f"truncated archive: {exc}") from exc
    return sorted(results, key=lambda f: f.path)


def _shown(name: str, limit: int = 120) -> str:
    """A member name for a one-line refusal: quoted, and shortened when it is long."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} chars)"


def _kind_error(member: tarfile.TarInfo) -> str | None:
    """Why a member's type is refused, or None for regular files and directories."""
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device node"
    if member.isfifo():
        return "fifo"
    if member.issparse():
        return "sparse file"
    if member.isdir() or member.type in _FILE_TYPES:
        return None
    return f"unsupported member type {member.type!r}"


@contextmanager
def _os_guard(member: str) -> Iterator[None]:
    """Turn OS errors into refusals naming the member (or environment failures)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise EnvironmentFailure(
                f"cannot write build output {member!r}: {exc.strerror}",
                hint="free disk space on the host",
            ) from exc
        raise UnsafeArchiveError(f"refusing member {member!r}: {exc.strerror}") from exc


def _write_file(
    writer: _Writer,
    parts: tuple[str, ...],
    source: IO[bytes],
    *,
    member: str,
    limits: ExtractLimits,
    total_before: int,
) -> tuple[int, str]:
    parent = writer.ensure_dir(parts[:-1], member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
    writer.files.add(parts)
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o644)
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if size > limits.max_file_bytes:
                raise UnsafeArchiveError(
                    f"refusing member {member!r}: over the {limits.max_file_bytes}-byte limit"
                )
            if total_before + size > limits.max_total_bytes:
                raise UnsafeArchiveError(
                    f"refusing member {member!r}: archive is over the "
                    f"{limits.max_total_bytes}-byte total limit"
                )
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


class _ChunkReader(io.RawIOBase):
    """A file-like view of the byte chunks the Docker API streams."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def chunk_reader(chunks: Iterable[bytes]) -> BinaryIO:
    """Wrap a stream of byte chunks (``get_archive``) for :func:`extract_regular_files`."""
    return cast(BinaryIO, io.BufferedReader(_ChunkReader(iter(chunks)), buffer_size=_CHUNK))
