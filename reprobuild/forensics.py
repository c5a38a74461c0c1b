"""Comparing two release archives like a forensic tool, not a checksum.

A published artifact and its rebuild either have the same sha256 (``identical``), or the
same members with the same bytes packed differently (``content-equal``: member order,
times, modes, owners, compression, gzip header, zip extra fields), or different content
(``content-differs``: members only in one of them, or changed). Content and packaging are
judged apart, in the manner of Google OSS Rebuild's stabilizers, so a report can say
*exactly* how two archives differ, and a file present only in the published artifact is
named.

Published artifacts are untrusted input. This module parses them itself (``zipfile`` and
``tarfile`` in streaming mode, nothing ever extracted to disk) and refuses links, absolute
or ``..`` member names, devices and oversize input (:class:`ArchiveLimits`), raising
:class:`~reprobuild.errors.UnsafeArchiveError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "ArchiveKind",
    "ArchiveLimits",
    "Comparison",
    "Equivalence",
    "Manifest",
    "Member",
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
