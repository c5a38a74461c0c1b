"""Comparing two release archives like a forensic tool, not a checksum.

A published artifact and its rebuild either have the same sha256 (``identical``), or the
same members with the same bytes packed differently (``content-equal``: member order,
times, modes, owners, compression, gzip header, zip extra fields), or different content
(``content-differs``: members only in one of them, or changed). Content and packaging are
judged apart, in the manner of Google OSS Rebuild's stabilizers, so a report can say
*exactly* how two archives differ, and a file present only in the published artifact is
named.

Published artifacts are untrusted input. This module parses them itself (``zipfile``, and
``tarfile`` in streaming mode over gzip it decompresses and counts itself; nothing is ever
extracted to disk) and refuses links, devices, absolute or ``..`` member names, duplicates,
encrypted members, sizes that lie and oversize input (:class:`ArchiveLimits`), raising
:class:`~reprobuild.errors.UnsafeArchiveError` naming the member.

:func:`detect_kind` sniffs magic bytes, :func:`read_manifest` lists members with their
digests and metadata, :func:`read_member` and :func:`read_files` return member bytes (a
wheel's metadata, a source archive's files), :func:`compare` gives the verdict.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import stat
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import IO, cast

from reprobuild.errors import UnsafeArchiveError

__all__ = [
    "ArchiveKind",
    "ArchiveLimits",
    "Comparison",
    "Equivalence",
    "Manifest",
    "Member",
    "compare",
    "detect_kind",
    "read_files",
    "read_manifest",
    "read_member",
]

MiB = 1024 * 1024


class ArchiveKind(str, Enum):
    """What a file is, by its name and its first bytes."""

    ZIP = "zip"  # wheels too
    TAR_GZ = "tar.gz"  # sdists, package tarballs (.tgz)
    TAR = "tar"
    FILE = "file"  # anything else: compared as bytes only


class Equivalence(str, Enum):
    """How a published artifact relates to its rebuild."""

    IDENTICAL = "identical"
    CONTENT_EQUAL = "content-equal"
    CONTENT_DIFFERS = "content-differs"


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what an untrusted archive may make us read."""

    max_members: int = 100_000
    max_member_bytes: int = 512 * MiB
    max_total_bytes: int = 2048 * MiB
    max_ratio: int = 200
    """Zip members whose uncompressed size is more than this many times their compressed
    size are refused (zip bombs)."""


@dataclass(frozen=True)
class Member:
    """One archive member: its bytes' digest and every piece of packaging metadata."""

    name: str
    kind: str
    """``file`` or ``dir``."""
    sha256: str
    """Of the member's bytes ("" for directories)."""
    size: int
    mode: int | None
    mtime: float | None
    """Unix seconds (zip: the stored local date-time read as UTC)."""
    uid: int | None = None
    gid: int | None = None
    uname: str | None = None
    gname: str | None = None
    compression: str | None = None
    """zip: ``stored``, ``deflated``, ...; tar: None (the whole stream is compressed)."""
    extra: str = ""
    """zip: the member's extra field, hex."""
    compressed_size: int | None = None
    """zip: bytes the member takes in the archive (tar: None)."""


@dataclass(frozen=True)
class Manifest:
    """Everything a file says about itself, in archive order."""

    kind: ArchiveKind
    sha256: str
    size: int
    members: tuple[Member, ...] = ()
    container: dict[str, str] = field(default_factory=dict)
    """Archive-level packaging: gzip header (``gzip_mtime``, ``gzip_os``, ``gzip_xfl``,
    ``gzip_name``), zip comment (``zip_comment``), tar format (``tar_format``)."""


@dataclass(frozen=True)
class Comparison:
    """A published artifact against its rebuild."""

    name: str
    equivalence: Equivalence
    only_published: tuple[str, ...] = ()
    only_rebuilt: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    packaging: tuple[str, ...] = ()
    """Human descriptions of each packaging difference, most telling first."""


# --------------------------------------------------------------------------- reading

_CHUNK = 1024 * 1024
#: Members (zip) or whole streams (gzip) smaller than this are never refused for their
#: compression ratio: small, very regular files compress well and are harmless.
_RATIO_FLOOR = 1 * MiB
#: Bytes a tar stream may spend on one member's headers (ustar, PAX, GNU long names) on top
#: of its data, including the read-ahead of ``tarfile``'s stream buffer.
_HEADER_SLACK = 64 * 1024 + 2 * tarfile.RECORDSIZE
#: Zero padding writers may leave after the end-of-archive marker (whole records).
_TAIL_ALLOWANCE = 1 * MiB
_GZIP_HEADER_BYTES = 64 * 1024
_ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflated",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_ZIP_UNIX = 3  # ZipInfo.create_system of archives made on Unix: external_attr holds st_mode
_ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0
_TAR_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})
_GZIP_OS = {
    0: "FAT", 1: "Amiga", 2: "VMS", 3: "Unix", 4: "VM/CMS", 5: "Atari TOS", 6: "HPFS",
    7: "Macintosh", 8: "Z-System", 9: "CP/M", 10: "TOPS-20", 11: "NTFS", 12: "QDOS",
    13: "Acorn RISCOS", 255: "unknown",
}
_TAR_FORMATS = {"gnu": "GNU", "ustar": "POSIX ustar", "pax": "POSIX pax", "v7": "v7"}
_REFUSED_HINT = "the artifact is refused as untrusted input; inspect it by hand"


def _codec_errors() -> tuple[type[Exception], ...]:
    """What decompressing a corrupt member can raise (lzma is optional in some builds)."""
    errors: list[type[Exception]] = [zipfile.BadZipFile, zlib.error, EOFError, OSError,
                                     ValueError, RuntimeError, NotImplementedError]
    try:
        import lzma  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Python built without liblzma
        pass
    else:
        errors.append(lzma.LZMAError)
    return tuple(errors)


_CODEC_ERRORS = _codec_errors()


def _file_digest(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in chunks (artifacts can be large)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _is_tar_header(block: bytes) -> bool:
    """Whether ``block`` starts with a tar header whose checksum holds (ustar, GNU or v7)."""
    if len(block) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(block[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except (tarfile.TarError, ValueError):
        return False
    return True


def _gunzip_head(path: Path) -> bytes:
    """The first tar block's worth of a gzip stream, or b"" when it is not valid gzip."""
    try:
        with path.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            return stream.read(tarfile.BLOCKSIZE)
    except (OSError, EOFError, zlib.error):
        return b""


def detect_kind(path: Path) -> ArchiveKind:
    """What ``path`` is, by its magic bytes: names lie, and a gzip need not hold a tar."""
    with path.open("rb") as handle:
        head = handle.read(tarfile.BLOCKSIZE)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ArchiveKind.ZIP
    if head[:2] == b"\x1f\x8b":
        return ArchiveKind.TAR_GZ if _is_tar_header(_gunzip_head(path)) else ArchiveKind.FILE
    if _is_tar_header(head):
        return ArchiveKind.TAR
    return ArchiveKind.FILE


def _refuse(raw: str, where: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"refusing member {raw!r} in {where}: {why}", _REFUSED_HINT)


def _clean_name(raw: str, *, is_dir: bool, where: str) -> str:
    """The canonical name of a member (``./`` prefix dropped, directories end in ``/``).

    Anything that could name a path outside the archive root, or one path two ways, is
    refused rather than normalised: an extractor elsewhere may read it differently.
    """
    if "\0" in raw:
        raise _refuse(raw, where, "NUL in name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise _refuse(raw, where, "control character in name")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(raw, where, "name is not UTF-8") from None
    if "\\" in raw:
        raise _refuse(raw, where, "backslash in name")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":" and raw[0].isalpha()):
        raise _refuse(raw, where, "absolute path")
    name = raw
    while name.startswith("./"):
        name = name[2:]
    if name.endswith("/") and not is_dir:
        raise _refuse(raw, where, "file name ends with '/'")
    body = name.removesuffix("/")
    if body in ("", "."):
        if is_dir:
            return "./"
        raise _refuse(raw, where, "empty name")
    parts = body.split("/")
    if ".." in parts:
        raise _refuse(raw, where, "'..' in path")
    if any(part in ("", ".") for part in parts):
        raise _refuse(raw, where, "empty or '.' path component")
    return body + "/" if is_dir else body


def _path_key(name: str) -> str:
    """One key per path, so a file ``a`` and a directory ``a/`` count as duplicates."""
    return name.removesuffix("/")


class _Sink:
    """Hashes a member's bytes as they stream past; keeps them only for the one asked for."""

    def __init__(self, *, keep: bool) -> None:
        self.digest = hashlib.sha256()
        self.keep = keep
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        if self.keep:
            self.chunks.append(chunk)


def _pump(source: IO[bytes], sink: Callable[[bytes], None] | None, *, cap: int,
          over: UnsafeArchiveError) -> int:
    """Feed ``source`` to ``sink`` chunk by chunk, raising ``over`` past ``cap`` bytes.

    Counts what is actually read: declared sizes are the attacker's to choose.
    """
    count = 0
    while chunk := source.read(min(_CHUNK, cap + 1 - count)):
        count += len(chunk)
        if count > cap:
            raise over
        if sink is not None:
            sink(chunk)
    return count


_Keep = Callable[[str], bool]
"""Which file members a scan keeps the bytes of; without one it hashes them all instead."""


@dataclass(frozen=True)
class _Scan:
    """What one pass over an archive found, with the bytes of the members it kept."""

    members: tuple[Member, ...]
    container: dict[str, str]
    kept: tuple[tuple[str, bytes], ...] = ()


def _zip_mtime(date_time: tuple[int, int, int, int, int, int]) -> float | None:
    """The stored local date-time read as UTC; None for impossible dates (month 0)."""
    try:
        return float(calendar.timegm((*date_time, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def _check_zip_entry(info: zipfile.ZipInfo, where: str,
                     limits: ArchiveLimits) -> tuple[str, str, int | None]:
    """Name, kind and mode of a central-directory entry, refused before any byte is read."""
    raw = info.orig_filename  # ``filename`` is cut at a NUL; the original is not
    is_dir = raw.endswith("/")
    name = _clean_name(raw, is_dir=is_dir, where=where)
    mode: int | None = None
    if info.create_system == _ZIP_UNIX:
        st_mode = info.external_attr >> 16
        if stat.S_ISLNK(st_mode):
            raise _refuse(raw, where, "symbolic link")
        if stat.S_IFMT(st_mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(raw, where, f"special file (type {stat.S_IFMT(st_mode):o})")
        mode = st_mode & 0o7777
    if info.flag_bits & _ZIP_ENCRYPTED:
        raise _refuse(raw, where, "encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise _refuse(raw, where, f"unsupported compression method {info.compress_type}")
    if is_dir and info.file_size:
        raise _refuse(raw, where, f"directory entry declares {info.file_size} bytes of data")
    if info.file_size > limits.max_member_bytes:
        raise _refuse(raw, where, f"{info.file_size} bytes is over the "
                                  f"{limits.max_member_bytes}-byte member limit")
    if (info.file_size > _RATIO_FLOOR
            and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
        raise _refuse(raw, where, f"{info.file_size} bytes from {info.compress_size} "
                                  f"compressed is over the {limits.max_ratio}:1 ratio limit")
    return name, "dir" if is_dir else "file", mode


def _read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str,
                    sink: _Sink) -> None:
    """Decompress one member into ``sink``, checking its real length against the declared."""
    raw = info.orig_filename
    over = _refuse(raw, where, f"holds more than the {info.file_size} bytes it declares")
    try:
        with archive.open(info) as source:
            count = _pump(source, sink, cap=info.file_size, over=over)
    except _CODEC_ERRORS as exc:
        raise _refuse(raw, where, f"cannot be read ({exc})") from exc
    if count != info.file_size:
        raise _refuse(raw, where, f"declares {info.file_size} bytes but holds {count}")


def _scan_zip(path: Path, limits: ArchiveLimits, keep: _Keep | None) -> _Scan:
    """Every member of a zip in central-directory order (with ``keep``: only their bytes).

    The whole central directory is checked before anything is decompressed, so a refused
    archive costs no inflating.
    """
    where = path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UnsafeArchiveError(f"refusing {where}: not a readable zip ({exc})",
                                 _REFUSED_HINT) from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise _refuse(infos[limits.max_members].orig_filename, where,
                          f"more than {limits.max_members} members")
        entries: list[tuple[zipfile.ZipInfo, str, str, int | None]] = []
        seen: set[str] = set()
        total = 0
        for info in infos:
            name, kind, mode = _check_zip_entry(info, where, limits)
            if _path_key(name) in seen:
                raise _refuse(info.orig_filename, where, "duplicate name")
            seen.add(_path_key(name))
            total += info.file_size
            if total > limits.max_total_bytes:
                raise _refuse(info.orig_filename, where,
                              f"archive is over the {limits.max_total_bytes}-byte limit")
            entries.append((info, name, kind, mode))

        members: list[Member] = []
        kept: list[tuple[str, bytes]] = []
        for info, name, kind, mode in entries:
            digest = ""
            if kind == "file" and (keep is None or keep(name)):
                sink = _Sink(keep=keep is not None)
                _read_zip_entry(archive, info, where, sink)
                digest = sink.digest.hexdigest()
                if sink.keep:
                    kept.append((name, b"".join(sink.chunks)))
            members.append(Member(
                name=name, kind=kind, sha256=digest, size=info.file_size, mode=mode,
                mtime=_zip_mtime(info.date_time), compression=_ZIP_METHODS[info.compress_type],
                extra=info.extra.hex(), compressed_size=info.compress_size))
        container = {"zip_comment": archive.comment.decode("utf-8", "backslashreplace")}
    return _Scan(tuple(members), container, tuple(kept))


def _gzip_header(head: bytes) -> dict[str, str]:
    """The RFC 1952 header fields that vary between gzip writers (``gzip`` hides them)."""
    if len(head) < 10:
        return {}
    flags = head[3]
    fields = {"gzip_mtime": str(int.from_bytes(head[4:8], "little")),
              "gzip_xfl": str(head[8]), "gzip_os": str(head[9])}
    offset = 10
    if flags & 0x04:  # FEXTRA: a length-prefixed field before the name
        offset += 2 + int.from_bytes(head[10:12], "little")
    for bit, key in ((0x08, "gzip_name"), (0x10, "gzip_comment")):
        if flags & bit:
            end = head.find(b"\0", offset)
            end = len(head) if end < 0 else end
            fields[key] = head[offset:end].decode("latin-1")
            offset = end + 1
    return fields


class _Guard:
    """A reader over a decompressed tar stream that refuses to go past a moving limit.

    ``tarfile`` reads headers, PAX records and skipped data on its own; capping what it may
    pull before each step bounds both memory and work, whatever the headers claim.
    """

    def __init__(self, inner: IO[bytes], where: str, *, ratio: tuple[int, int] | None) -> None:
        self._inner = inner
        self._ratio = ratio
        self.where = where
        self.count = 0
        self.limit = 0
        self.head = b""

    def allow(self, more: int) -> None:
        self.limit = self.count + more

    def read(self, size: int | None = -1) -> bytes:
        want = _CHUNK if size is None or size < 0 else size
        data = self._inner.read(max(0, min(want, self.limit + 1 - self.count)))
        self.count += len(data)
        if len(self.head) < tarfile.BLOCKSIZE:
            self.head += data[: tarfile.BLOCKSIZE - len(self.head)]
        if self.count > self.limit:
            raise UnsafeArchiveError(
                f"refusing {self.where}: more header or padding bytes than a tar member "
                "may have",
                _REFUSED_HINT)
        if self._ratio is not None:
            max_ratio, compressed = self._ratio
            if self.count > _RATIO_FLOOR and self.count > max_ratio * max(compressed, 1):
                raise UnsafeArchiveError(
                    f"refusing {self.where}: the stream decompresses to more than "
                    f"{max_ratio} times its {compressed} bytes", _REFUSED_HINT)
        return data


def _tar_kind(info: tarfile.TarInfo, where: str) -> str:
    """``file`` or ``dir``; every other member type is refused."""
    if info.type in _TAR_FILE_TYPES:
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        why = "symbolic link"
    elif info.islnk():
        why = "hard link"
    elif info.ischr() or info.isblk():
        why = "device node"
    elif info.isfifo():
        why = "fifo"
    elif info.issparse():
        why = "sparse file"
    else:
        why = f"unsupported member type {info.type!r}"
    raise _refuse(info.name, where, why)


def _tar_format(head: bytes, pax: bool) -> str:
    """From the first header's magic: ``tarfile`` reports a format only when writing."""
    magic = head[257:265]
    if magic == b"ustar  \0":
        return "gnu"
    if magic[:6] == b"ustar\0":
        return "pax" if pax else "ustar"
    return "v7"


def _walk_tar(guard: _Guard, where: str, limits: ArchiveLimits,
              keep: _Keep | None) -> tuple[_Scan, bool]:
    """The members of the tar stream behind ``guard``, and whether any had PAX headers."""
    members: list[Member] = []
    seen: set[str] = set()
    total = 0
    kept: list[tuple[str, bytes]] = []
    guard.allow(_HEADER_SLACK)
    with tarfile.open(fileobj=cast(IO[bytes], guard), mode="r|") as tar:
        pax = bool(tar.pax_headers)
        while (info := tar.next()) is not None:
            if len(members) >= limits.max_members:
                raise _refuse(info.name, where, f"more than {limits.max_members} members")
            kind = _tar_kind(info, where)
            name = _clean_name(info.name, is_dir=kind == "dir", where=where)
            if _path_key(name) in seen:
                raise _refuse(info.name, where, "duplicate name")
            seen.add(_path_key(name))
            pax = pax or bool(info.pax_headers)
            digest, size = "", 0
            if kind == "file":
                if info.size > limits.max_member_bytes:
                    raise _refuse(info.name, where, f"{info.size} bytes is over the "
                                  f"{limits.max_member_bytes}-byte member limit")
                if total + info.size > limits.max_total_bytes:
                    raise _refuse(info.name, where,
                                  f"archive is over the {limits.max_total_bytes}-byte limit")
                guard.where = f"member {info.name!r} in {where}"
                guard.allow(info.size + _HEADER_SLACK)
                source = tar.extractfile(info)
                if source is None:
                    raise _refuse(info.name, where, "no content")
                reading = keep is None or keep(name)
                sink = _Sink(keep=keep is not None and reading)
                over = _refuse(info.name, where,
                               f"holds more than the {info.size} bytes it declares")
                size = _pump(source, sink if reading else None, cap=info.size, over=over)
                if size != info.size:
                    raise _refuse(info.name, where,
                                  f"declares {info.size} bytes but holds {size}")
                total += size
                digest = sink.digest.hexdigest() if reading else ""
                if sink.keep:
                    kept.append((name, b"".join(sink.chunks)))
            guard.where = f"{where} (after member {info.name!r})"
            guard.allow(_HEADER_SLACK)
            members.append(Member(
                name=name, kind=kind, sha256=digest, size=size, mode=info.mode & 0o7777,
                mtime=float(info.mtime), uid=info.uid, gid=info.gid, uname=info.uname,
                gname=info.gname))
    return _Scan(tuple(members), {}, tuple(kept)), pax


def _scan_tar(path: Path, compressed: bool, limits: ArchiveLimits,
              keep: _Keep | None) -> _Scan:
    """Every member of a (gzipped) tar in stream order, never extracting anything.

    gzip is decompressed here rather than by ``tarfile`` (mode ``r|gz``) so that the guard
    counts decompressed bytes, which are what a bomb inflates. The stream is read to its
    end, so hidden data after the end-of-archive marker is refused and the gzip CRC checked.
    """
    where = path.name
    container: dict[str, str] = {}
    with ExitStack() as stack:
        raw = stack.enter_context(path.open("rb"))
        stream: IO[bytes] = raw
        if compressed:
            container.update(_gzip_header(raw.read(_GZIP_HEADER_BYTES)))
            raw.seek(0)
            stream = cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")))
        ratio = (limits.max_ratio, path.stat().st_size) if compressed else None
        guard = _Guard(stream, where, ratio=ratio)
        try:
            scan, pax = _walk_tar(guard, where, limits, keep)
            guard.where = f"{where} (after the end-of-archive marker)"
            guard.allow(_TAIL_ALLOWANCE)
            while chunk := guard.read(_CHUNK):
                if chunk.strip(b"\0"):
                    raise UnsafeArchiveError(
                        f"refusing {where}: data after the end-of-archive marker",
                        _REFUSED_HINT)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise UnsafeArchiveError(f"refusing {where}: malformed archive ({exc})",
                                     _REFUSED_HINT) from exc
    container["tar_format"] = _tar_format(guard.head, pax)
    container["tar_bytes"] = str(guard.count)
    return _Scan(scan.members, container, scan.kept)


def _scan(path: Path, kind: ArchiveKind, limits: ArchiveLimits, keep: _Keep | None) -> _Scan:
    if kind is ArchiveKind.ZIP:
        return _scan_zip(path, limits, keep)
    if kind in (ArchiveKind.TAR_GZ, ArchiveKind.TAR):
        return _scan_tar(path, kind is ArchiveKind.TAR_GZ, limits, keep)
    return _Scan((), {})


def _manifest(path: Path, limits: ArchiveLimits, digest: tuple[str, int]) -> Manifest:
    kind = detect_kind(path)
    scan = _scan(path, kind, limits, None)
    return Manifest(kind=kind, sha256=digest[0], size=digest[1], members=scan.members,
                    container=scan.container)


def read_manifest(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> Manifest:
    """Every member of ``path`` with its digest and packaging metadata, in archive order.

    Raises :class:`UnsafeArchiveError` (naming the member) for links, devices, absolute or
    ``..`` names, duplicates, encryption, lying sizes and anything over ``limits``.
    """
    return _manifest(path, limits, _file_digest(path))


def read_member(path: Path, name: str, limits: ArchiveLimits = ArchiveLimits()) -> bytes:
    """The bytes of member ``name`` (e.g. a wheel's ``*.dist-info/WHEEL``).

    The whole archive is checked as :func:`read_manifest` checks it (a duplicate later in
    the stream would make the answer ambiguous), but only this member is kept in memory.
    Raises KeyError when there is no such file member.
    """
    wanted = name
    while wanted.startswith("./"):
        wanted = wanted[2:]
    kept = _scan(path, detect_kind(path), limits, lambda member: member == wanted).kept
    if not kept:
        raise KeyError(name)
    return kept[0][1]


def read_files(path: Path, limits: ArchiveLimits = ArchiveLimits()
               ) -> tuple[tuple[str, int | None, bytes], ...]:
    """Every file member as ``(name, mode, bytes)`` in archive order, for small archives
    such as a release's source archive (all of it is held in memory, up to ``limits``).

    Directories are left out; the refusals are :func:`read_manifest`'s. A plain file has
    no members, so it gives ``()``.
    """
    scan = _scan(path, detect_kind(path), limits, lambda _member: True)
    modes = {m.name: m.mode for m in scan.members}
    return tuple((name, modes[name], data) for name, data in scan.kept)


# --------------------------------------------------------------------------- comparing

_SHOWN = 5


def _listing(names: Sequence[str]) -> str:
    more = f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _iso(moment: float | None) -> str:
    """ISO-8601 UTC with a Z: a report reads the same in every time zone."""
    if moment is None:
        return "unrecorded"
    try:
        when = datetime.fromtimestamp(moment, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{moment:g} (Unix seconds)"
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if moment != int(moment):
        text += f".{when.microsecond:06d}".rstrip("0")
    return text + "Z"


def _mode(mode: int | None) -> str:
    return "unrecorded" if mode is None else f"{mode:04o}"


def _owner(member: Member) -> str:
    if member.uid is None and member.gid is None:
        return "unrecorded"
    ids = f"{member.uid}:{member.gid}"
    return f"{ids} ({member.uname}/{member.gname})" if member.uname or member.gname else ids


def _most_common(values: Iterable[str]) -> str:
    """The most common value, and how many others there are (ties: first seen wins)."""
    counts = Counter(values)
    top = counts.most_common(1)[0][0]
    others = len(counts) - 1
    return f"{top} (+{others} other value{'s' if others > 1 else ''})" if others else top


def _attribute_line(label: str, common: Sequence[tuple[Member, Member]],
                    show: Callable[[Member], str], *, example: bool = False) -> str | None:
    """``<label> differs on N of M members: published A, rebuilt B``, or None."""
    differing = [(p, r) for p, r in common if show(p) != show(r)]
    if not differing:
        return None
    line = (f"{label} differs on {len(differing)} of {len(common)} members: "
            f"published {_most_common(show(p) for p, _ in differing)}, "
            f"rebuilt {_most_common(show(r) for _, r in differing)}")
    return f"{line} (e.g. {differing[0][0].name})" if example else line


def _order_line(published: Manifest, rebuilt: Manifest) -> str | None:
    in_rebuilt = {m.name for m in rebuilt.members}
    in_published = {m.name for m in published.members}
    left = [m.name for m in published.members if m.name in in_rebuilt]
    right = [m.name for m in rebuilt.members if m.name in in_published]
    for position, (a, b) in enumerate(zip(left, right, strict=True), 1):
        if a != b:
            return f"member order differs (first at position {position}: {a} vs {b})"
    return None


def _zip_lines(common: Sequence[tuple[Member, Member]], published: Manifest,
               rebuilt: Manifest) -> list[str]:
    lines: list[str] = []
    files = [(p, r) for p, r in common if p.kind == "file"]
    compression = _attribute_line("zip compression", files, lambda m: str(m.compression))
    if compression:
        lines.append(compression)
    same_method = [(p, r) for p, r in files
                   if p.sha256 == r.sha256 and p.compression == r.compression
                   and p.compression != "stored" and p.compressed_size != r.compressed_size]
    if same_method:
        lines.append(f"zip compressed sizes differ on {len(same_method)} of {len(files)} "
                     f"members with the same method (compression level or library; "
                     f"e.g. {same_method[0][0].name})")
    extra = [p.name for p, r in common if p.extra != r.extra]
    if extra:
        lines.append(f"zip extra fields differ on {len(extra)} of {len(common)} members "
                     f"(e.g. {extra[0]})")
    before = published.container.get("zip_comment", "")
    after = rebuilt.container.get("zip_comment", "")
    if before != after:
        lines.append(f"zip comment: {before!r} vs {after!r}")
    return lines


def _gzip_os(value: str) -> str:
    return f"{value} ({_GZIP_OS.get(int(value), 'unassigned')})" if value.isdigit() else value


def _container_lines(published: Manifest, rebuilt: Manifest) -> list[str]:
    before, after = published.container, rebuilt.container
    lines: list[str] = []

    def changed(key: str) -> bool:
        return before.get(key) != after.get(key)

    if changed("tar_format"):
        lines.append(f"tar format: {_TAR_FORMATS.get(before.get('tar_format', ''), '?')} vs "
                     f"{_TAR_FORMATS.get(after.get('tar_format', ''), '?')}")
    if changed("gzip_os"):
        lines.append(f"gzip header: OS byte {_gzip_os(before.get('gzip_os', '?'))} vs "
                     f"{_gzip_os(after.get('gzip_os', '?'))}")
    if changed("gzip_mtime"):
        lines.append(f"gzip header: mtime {before.get('gzip_mtime')} vs "
                     f"{after.get('gzip_mtime')}")
    for key, label in (("gzip_name", "file name"), ("gzip_comment", "comment")):
        if changed(key):
            shown = [repr(side[key]) if key in side else "none" for side in (before, after)]
            lines.append(f"gzip header: {label} {shown[0]} vs {shown[1]}")
    if changed("gzip_xfl"):
        lines.append(f"gzip header: XFL {before.get('gzip_xfl')} vs {after.get('gzip_xfl')} "
                     "(2: slowest compression, 4: fastest)")
    if changed("tar_bytes"):
        lines.append(f"tar stream length differs: {before.get('tar_bytes')} vs "
                     f"{after.get('tar_bytes')} bytes (header layout or end-of-archive "
                     "padding)")
    return lines


def _packaging(published: Manifest, rebuilt: Manifest) -> list[str]:
    """One readable line per way the two archives' packaging differs, most telling first."""
    by_name = {m.name: m for m in rebuilt.members}
    published_names = {m.name for m in published.members}
    common = [(m, by_name[m.name]) for m in published.members if m.name in by_name]
    lines: list[str] = []
    for side, members, other in (("published", published.members, by_name),
                                 ("rebuilt", rebuilt.members, published_names)):
        dirs = [m.name for m in members if m.kind == "dir" and m.name not in other]
        if dirs:
            lines.append(f"directory entries only in {side}: {_listing(dirs)}")
    order = _order_line(published, rebuilt)
    candidates = [
        order,
        _attribute_line("mtime", common, lambda m: _iso(m.mtime)),
        _attribute_line("mode", common, lambda m: _mode(m.mode), example=True),
        _attribute_line("owner", common, _owner),
    ]
    lines += [line for line in candidates if line]
    if published.kind is ArchiveKind.ZIP:
        lines += _zip_lines(common, published, rebuilt)
    lines += _container_lines(published, rebuilt)
    return lines


def _first_difference(published: Path, rebuilt: Path) -> int | None:
    """Offset of the first byte that differs (or where the shorter file ends)."""
    offset = 0
    with published.open("rb") as left, rebuilt.open("rb") as right:
        while True:
            a, b = left.read(_CHUNK), right.read(_CHUNK)
            if a != b:
                same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                            min(len(a), len(b)))
                return offset + same
            if not a:
                return None
            offset += len(a)


def compare(published: Path, rebuilt: Path, limits: ArchiveLimits = ArchiveLimits(), *,
            name: str | None = None) -> Comparison:
    """How ``rebuilt`` relates to ``published``: identical, content-equal or not.

    Content is each file member's name and digest; everything else (order, times, modes,
    owners, compression, headers, directory entries) is packaging, described line by line
    in ``packaging`` whatever the verdict. Both archives are untrusted
    (:class:`UnsafeArchiveError`).
    """
    label = published.name if name is None else name
    published_digest, rebuilt_digest = _file_digest(published), _file_digest(rebuilt)
    if published_digest[0] == rebuilt_digest[0]:
        return Comparison(label, Equivalence.IDENTICAL)
    before = _manifest(published, limits, published_digest)
    after = _manifest(rebuilt, limits, rebuilt_digest)
    if before.kind is not after.kind:
        return Comparison(label, Equivalence.CONTENT_DIFFERS, packaging=(
            f"archive kind differs: published {before.kind.value}, rebuilt {after.kind.value}",
        ))
    if before.kind is ArchiveKind.FILE:
        offset = _first_difference(published, rebuilt)
        where = "" if offset is None else f", first difference at byte {offset}"
        return Comparison(label, Equivalence.CONTENT_DIFFERS, packaging=(
            f"not an archive, compared as bytes: published {before.size} bytes, rebuilt "
            f"{after.size} bytes{where}",))
    left = {m.name: m.sha256 for m in before.members if m.kind == "file"}
    right = {m.name: m.sha256 for m in after.members if m.kind == "file"}
    only_published = tuple(sorted(left.keys() - right.keys()))
    only_rebuilt = tuple(sorted(right.keys() - left.keys()))
    changed = tuple(sorted(n for n in left.keys() & right.keys() if left[n] != right[n]))
    lines = _packaging(before, after)
    if left == right:
        if not lines:
            lines.append(f"archive bytes differ outside the members' content and recorded "
                         f"metadata (published {before.size} bytes, rebuilt {after.size} "
                         "bytes)")
        return Comparison(label, Equivalence.CONTENT_EQUAL, packaging=tuple(lines))
    return Comparison(label, Equivalence.CONTENT_DIFFERS, only_published=only_published,
                      only_rebuilt=only_rebuilt, changed=changed, packaging=tuple(lines))
