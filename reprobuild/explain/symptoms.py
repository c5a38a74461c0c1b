"""How one artifact differs from build A's, member by member, as hashable symptoms.

The search (:mod:`.search`) needs, for every extra build, the answer to "which of the
differences between A and B does this build show?", cheaply and for all of them at once.
Running diffoscope per build would cost seconds each; instead both files are read with
:mod:`reprobuild.forensics`, the project's parser for untrusted archives (no extraction,
links, absolute names and oversize input refused), and every way they differ becomes a
:class:`Symptom`: a member's content, time, mode or owner, its presence, the member order,
a zip entry's compression or extra field, a gzip or tar header field, or for a plain file
its bytes. diffoscope still explains A against B in full; the symptoms only tell builds
apart.
"""

from __future__ import annotations

import functools
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from reprobuild.errors import UnsafeArchiveError
from reprobuild.forensics import (
    ArchiveKind,
    ArchiveLimits,
    Manifest,
    Member,
    read_files,
    read_manifest,
)

__all__ = ["Aspect", "Observation", "Symptom", "contents", "observe", "same_bytes"]

#: Artifacts larger than this are compared by digest and metadata only, not read into
#: memory for their members' bytes.
_CONTENT_CAP = 64 * 1024 * 1024
_LIMITS = ArchiveLimits(max_total_bytes=512 * 1024 * 1024)
_CHUNK = 1024 * 1024


class Aspect(str, Enum):
    """What differs about a member (or about the artifact, for ``member == ""``)."""

    CONTENT = "content"
    PRESENCE = "presence"
    MTIME = "mtime"
    MODE = "mode"
    OWNER = "owner"
    ORDER = "order"
    ZIP_ENTRY = "zip-entry"
    """A zip entry's compression method, compressed size or extra field."""
    HEADER = "header"
    """An archive-level field (gzip OS byte, XFL or name, tar format, padding)."""
    HEADER_TIME = "header-time"
    """The gzip header's modification time."""
    BYTES = "bytes"
    """The files differ and nothing the parser reads says how."""

    @property
    def is_time(self) -> bool:
        return self in (Aspect.MTIME, Aspect.HEADER_TIME)

    @property
    def of_artifact(self) -> bool:
        """Said of the artifact as a whole, not of named members."""
        return self in (Aspect.ORDER, Aspect.HEADER, Aspect.HEADER_TIME, Aspect.BYTES)

    @property
    def label(self) -> str:
        """How a report names what differs."""
        return {Aspect.HEADER_TIME: "gzip header time", Aspect.HEADER: "archive header",
                Aspect.ORDER: "member order", Aspect.BYTES: "bytes",
                Aspect.ZIP_ENTRY: "zip entry"}.get(self, self.value)

    @property
    def is_metadata(self) -> bool:
        return self in (Aspect.MTIME, Aspect.MODE, Aspect.OWNER, Aspect.ORDER,
                        Aspect.ZIP_ENTRY, Aspect.HEADER, Aspect.HEADER_TIME)


@dataclass(frozen=True, order=True)
class Symptom:
    """One way one artifact differs from build A's."""

    artifact: str
    member: str
    """The archive member ("" for the artifact itself; a header field's name for
    ``header``)."""
    aspect: Aspect


@dataclass(frozen=True)
class Observation:
    """The value on A's side and on the other build's (short, for an example line)."""

    before: str
    after: str
    seconds: float | None = None
    """For times: the other side minus A's side."""


def _iso(moment: float | None) -> str:
    """UTC, with the fraction when there is one (two times in the same second differ)."""
    if moment is None:
        return "none"
    stamp = datetime.fromtimestamp(moment, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S" + (".%fZ" if moment % 1 else "Z"))


def _mode(member: Member) -> str:
    if member.mode is None:
        return "none"
    kind = stat.S_IFDIR if member.kind == "dir" else stat.S_IFREG
    return stat.filemode(kind | (member.mode & 0o7777))


def _owner(member: Member) -> str:
    return (f"{member.uname or ''}({member.uid}):{member.gname or ''}({member.gid})"
            if member.uid is not None or member.uname else "none")


def _zip_entry(member: Member) -> str:
    return f"{member.compression} {member.compressed_size} bytes extra={member.extra or '-'}"


def _members(before: Manifest, after: Manifest, artifact: str) -> dict[Symptom, Observation]:
    found: dict[Symptom, Observation] = {}
    left = {m.name: m for m in before.members}
    right = {m.name: m for m in after.members}
    for name in sorted(left.keys() ^ right.keys()):
        found[Symptom(artifact, name, Aspect.PRESENCE)] = Observation(
            "present" if name in left else "absent", "present" if name in right else "absent")
    for name in sorted(left.keys() & right.keys()):
        a, x = left[name], right[name]
        checks: list[tuple[Aspect, bool, str, str]] = [
            (Aspect.CONTENT, a.sha256 != x.sha256, f"{a.size} bytes", f"{x.size} bytes"),
            (Aspect.MODE, a.mode != x.mode, _mode(a), _mode(x)),
            (Aspect.OWNER, _owner(a) != _owner(x), _owner(a), _owner(x)),
            (Aspect.ZIP_ENTRY, _zip_entry(a) != _zip_entry(x) and a.sha256 == x.sha256,
             _zip_entry(a), _zip_entry(x)),
        ]
        for aspect, differs, before_value, after_value in checks:
            if differs:
                found[Symptom(artifact, name, aspect)] = Observation(before_value, after_value)
        if a.mtime != x.mtime:
            delta = (x.mtime - a.mtime) if a.mtime is not None and x.mtime is not None else None
            found[Symptom(artifact, name, Aspect.MTIME)] = Observation(
                _iso(a.mtime), _iso(x.mtime), delta)
    common_a = [m.name for m in before.members if m.name in right]
    common_x = [m.name for m in after.members if m.name in left]
    if common_a != common_x:
        first = next(i for i, (p, q) in enumerate(zip(common_a, common_x, strict=True)) if p != q)
        found[Symptom(artifact, "", Aspect.ORDER)] = Observation(
            f"#{first + 1} is {common_a[first]}", f"#{first + 1} is {common_x[first]}")
    for key in sorted(before.container.keys() | after.container.keys()):
        was, now = before.container.get(key), after.container.get(key)
        if was == now:
            continue
        if key == "gzip_mtime" and (was or "").isdigit() and (now or "").isdigit():
            assert was is not None and now is not None
            found[Symptom(artifact, key, Aspect.HEADER_TIME)] = Observation(
                _iso(float(was)), _iso(float(now)), float(now) - float(was))
        else:
            found[Symptom(artifact, key, Aspect.HEADER)] = Observation(str(was), str(now))
    return found


def _build_a_manifest(path: Path) -> Manifest:
    """Build A's side is compared with every explanation build: read it once."""
    info = path.stat()
    return _manifest(path, info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _manifest(path: Path, size: int, mtime_ns: int) -> Manifest:
    del size, mtime_ns  # the cache key: a file rewritten in place is read again
    return read_manifest(path, _LIMITS)


def observe(artifact: str, a_path: Path, x_path: Path | None) -> dict[Symptom, Observation]:
    """Every way ``x_path`` (another build's ``artifact``) differs from A's ``a_path``.

    An archive that the parser refuses (a link member, oversize input) is compared as
    bytes: the refusal itself is the build's, diffoscope shows it in full.
    """
    if x_path is None or not x_path.is_file():
        return {Symptom(artifact, "", Aspect.PRESENCE): Observation("present", "absent")}
    before: Manifest | None
    after: Manifest | None
    try:
        before, after = _build_a_manifest(a_path), read_manifest(x_path, _LIMITS)
    except UnsafeArchiveError:
        before = after = None
    if before is not None and after is not None and before.sha256 == after.sha256:
        return {}
    if before is None or after is None or before.kind is ArchiveKind.FILE \
            or before.kind is not after.kind:
        if same_bytes(a_path, x_path):
            return {}
        return {Symptom(artifact, "", Aspect.CONTENT): Observation(
            f"{a_path.stat().st_size} bytes", f"{x_path.stat().st_size} bytes")}
    found = _members(before, after, artifact)
    if not found:
        found[Symptom(artifact, "", Aspect.BYTES)] = Observation(
            f"{before.size} bytes", f"{after.size} bytes")
    return found


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes, read a chunk at a time (artifacts may be
    larger than the host's memory should hold)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            x, y = left.read(_CHUNK), right.read(_CHUNK)
            if x != y:
                return False
            if not x:
                return True


def contents(path: Path, members: set[str]) -> Mapping[str, bytes]:
    """The bytes of ``members`` of the artifact at ``path`` ("" is the file itself), for
    reading what changed; nothing for an artifact over the cap or one the parser refuses."""
    if not path.is_file() or path.stat().st_size > _CONTENT_CAP:
        return {}
    wanted: dict[str, bytes] = {}
    if "" in members:
        wanted[""] = path.read_bytes()
    inner = members - {""}
    if inner:
        try:
            for name, _mode_bits, data in read_files(path, _LIMITS):
                if name in inner:
                    wanted[name] = data
        except UnsafeArchiveError:
            pass
    return wanted
