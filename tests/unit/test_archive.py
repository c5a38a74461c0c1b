"""Unit tests for reprobuild.archive: deterministic tars in, paranoid extraction out."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from reprobuild import archive
from reprobuild.archive import (
    ExtractedFile,
    ExtractLimits,
    FileOrder,
    build_tar,
    extract_regular_files,
)
from reprobuild.errors import UnsafeArchiveError
from reprobuild.hashing import sha256_file
from reprobuild.source import EntryKind, SourceEntry

ENTRIES = (
    SourceEntry("b/x.py", EntryKind.FILE, 0o644, b"print('x')\n"),
    SourceEntry("a.txt", EntryKind.FILE, 0o755, b"a"),
    SourceEntry("b/c/link", EntryKind.SYMLINK, 0o777, b"../x.py"),
    SourceEntry("b/c/z.bin", EntryKind.FILE, 0o600, b"\0\1\2"),
)


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def names(data: bytes) -> list[str]:
    return [m.name for m in members(data)]


# --------------------------------------------------------------------------- build_tar


def test_build_tar_is_deterministic() -> None:
    one = build_tar(ENTRIES, order=FileOrder.SORTED, mtime=1_700_000_000)
    two = build_tar(tuple(reversed(ENTRIES)), order=FileOrder.SORTED, mtime=1_700_000_000)
    assert one == two
    assert build_tar(ENTRIES, order=FileOrder.SORTED, mtime=1) != one


def test_build_tar_metadata() -> None:
    by_name = {m.name: m for m in members(build_tar(ENTRIES, order=FileOrder.SORTED, mtime=42))}
    for m in by_name.values():
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 42)
    assert by_name["b"].isdir() and by_name["b"].mode == 0o755
    assert by_name["b/c"].isdir()
    assert by_name["a.txt"].mode == 0o755
    assert by_name["b/x.py"].mode == 0o644
    assert by_name["b/c/z.bin"].mode == 0o644  # only the executable bit survives
    assert by_name["b/c/link"].issym() and by_name["b/c/link"].linkname == "../x.py"


def test_sorted_order_dirs_first() -> None:
    data = build_tar(ENTRIES, order=FileOrder.SORTED, mtime=0)
    assert names(data) == ["a.txt", "b", "b/c", "b/c/link", "b/c/z.bin", "b/x.py"]


def test_reversed_order_keeps_parents_first() -> None:
    data = build_tar(ENTRIES, order=FileOrder.REVERSED, mtime=0)
    assert names(data) == ["b", "b/x.py", "b/c", "b/c/z.bin", "b/c/link", "a.txt"]
    seen: set[str] = set()
    for name in names(data):
        parent = name.rpartition("/")[0]
        assert not parent or parent in seen
        seen.add(name)


def test_prefix_directories_are_emitted() -> None:
    data = build_tar(ENTRIES[:1], order=FileOrder.SORTED, mtime=0, prefix="w/src/")
    assert names(data) == ["w", "w/src", "w/src/b", "w/src/b/x.py"]


@pytest.mark.parametrize("bad", ["/abs", "../up", "a/../b", "a//b", ""])
def test_build_tar_rejects_unsafe_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        build_tar([SourceEntry(bad, EntryKind.FILE, 0o644, b"")], order=FileOrder.SORTED, mtime=0)


def test_build_tar_rejects_duplicates_and_conflicts() -> None:
    dup = [SourceEntry("a", EntryKind.FILE, 0o644, b"")] * 2
    with pytest.raises(ValueError, match="duplicate"):
        build_tar(dup, order=FileOrder.SORTED, mtime=0)
    conflict = [
        SourceEntry("a", EntryKind.FILE, 0o644, b""),
        SourceEntry("a/b", EntryKind.FILE, 0o644, b""),
    ]
    with pytest.raises(ValueError, match="directory"):
        build_tar(conflict, order=FileOrder.SORTED, mtime=0)


# --------------------------------------------------------------------------- extraction


def tar_of(*infos: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in infos:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    return ti


def test_extract_clean_tar(tmp_path: Path) -> None:
    files = [e for e in ENTRIES if e.kind is EntryKind.FILE]
    data = build_tar(files, order=FileOrder.REVERSED, mtime=0)
    dest = tmp_path / "out"
    got = extract_regular_files(data, dest, ExtractLimits())
    assert got == sorted(
        (ExtractedFile(e.path, len(e.data), hashlib.sha256(e.data).hexdigest()) for e in files),
        key=lambda f: f.path,
    )
    for e in files:
        target = dest / e.path
        assert target.read_bytes() == e.data
        assert target.stat().st_mode & 0o777 == 0o644
        assert sha256_file(target) == hashlib.sha256(e.data).hexdigest()
    assert (dest / "b" / "c").stat().st_mode & 0o777 == 0o755


def test_extract_from_file_object_with_strip_prefix(tmp_path: Path) -> None:
    data = tar_of((info("out", tarfile.DIRTYPE), b""), (info("out/sub/f.txt"), b"hello"))
    got = extract_regular_files(
        io.BytesIO(data), tmp_path / "d", ExtractLimits(), strip_prefix="out"
    )
    assert [f.path for f in got] == ["sub/f.txt"]
    assert (tmp_path / "d" / "sub" / "f.txt").read_bytes() == b"hello"


def test_extract_dot_slash_members(tmp_path: Path) -> None:
    data = tar_of((info("./", tarfile.DIRTYPE), b""), (info("./f"), b"x"))
    got = extract_regular_files(data, tmp_path / "d", ExtractLimits(), strip_prefix=".")
    assert [f.path for f in got] == ["f"]


def test_extract_refuses_member_outside_strip_prefix(tmp_path: Path) -> None:
    data = tar_of((info("out/a"), b"1"), (info("other/b"), b"2"))
    dest = tmp_path / "d"
    with pytest.raises(UnsafeArchiveError, match="other/b"):
        extract_regular_files(data, dest, ExtractLimits(), strip_prefix="out")
    assert list(dest.iterdir()) == []


OK_FIRST = (info("dir", tarfile.DIRTYPE), b"")
OK_FILE = (info("dir/ok.txt"), b"fine")


def _dev(kind: bytes) -> tarfile.TarInfo:
    ti = info("dir/dev", kind)
    ti.devmajor, ti.devminor = 1, 3
    return ti


REFUSALS: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes]], str]] = {
    "symlink": ([(info("dir/l", tarfile.SYMTYPE, "/etc/passwd"), b"")], "symbolic link"),
    "hardlink": ([(info("dir/h", tarfile.LNKTYPE, "dir/ok.txt"), b"")], "hard link"),
    "absolute": ([(info("/tmp/evil"), b"x")], "absolute"),
    "dotdot": ([(info("dir/../../evil"), b"x")], r"'\.\.'"),
    "chardev": ([(_dev(tarfile.CHRTYPE), b"")], "device"),
    "blockdev": ([(_dev(tarfile.BLKTYPE), b"")], "device"),
    "fifo": ([(info("dir/p", tarfile.FIFOTYPE), b"")], "fifo"),
    "duplicate": ([(info("dir/ok.txt"), b"again")], "duplicate"),
    "dup-dir-over-file": ([(info("dir/ok.txt", tarfile.DIRTYPE), b"")], "duplicate"),
    "backslash": ([(info("dir\\..\\..\\evil"), b"x")], "backslash"),
    "control": ([(info("dir/\x1b[31mred"), b"x")], "control character"),
    "file-as-dir": ([(info("dir/ok.txt/inner"), b"x")], "is a file"),
    "unknown-type": ([(info("dir/v", b"V"), b"")], "unsupported member type"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_extract_refusals_leave_dest_empty(tmp_path: Path, case: str) -> None:
    extra, message = REFUSALS[case]
    data = tar_of(OK_FIRST, OK_FILE, *extra)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_regular_files(data, dest, ExtractLimits())
    assert list(dest.iterdir()) == []


def test_extract_refuses_nul_in_pax_path(tmp_path: Path) -> None:
    ti = info("dir/plain")
    ti.pax_headers = {"path": "dir/a\0b"}
    data = tar_of(OK_FIRST, OK_FILE, (ti, b"x"))
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError):
        extract_regular_files(data, dest, ExtractLimits())
    assert list(dest.iterdir()) == []


def test_extract_does_not_write_through_preexisting_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even if a link appeared under dest behind our back, O_NOFOLLOW refuses to use it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    data = tar_of((info("x/f"), b"x"))

    # Simulate a race: the directory we are about to create already exists as a link.
    original = archive._Writer.ensure_dir

    def racing(self: archive._Writer, parts: tuple[str, ...], member: str) -> int:
        if parts == ("x",) and not (dest / "x").exists():
            (dest / "x").symlink_to(outside)
        return original(self, parts, member)

    monkeypatch.setattr(archive._Writer, "ensure_dir", racing)
    with pytest.raises(UnsafeArchiveError, match="x/f"):
        extract_regular_files(data, dest, ExtractLimits())
    assert list(outside.iterdir()) == []
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (ExtractLimits(max_files=2), "more than 2 files"),
        (ExtractLimits(max_file_bytes=5), "5-byte limit"),
        (ExtractLimits(max_total_bytes=10), "10-byte total limit"),
    ],
)
def test_extract_limits(tmp_path: Path, limits: ExtractLimits, message: str) -> None:
    data = tar_of(*[(info(f"f{i}"), b"123456") for i in range(3)])
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_regular_files(data, dest, limits)
    assert list(dest.iterdir()) == []


def test_extract_lying_pax_size(tmp_path: Path) -> None:
    """The ustar header claims 5 bytes, the PAX record (which wins) 2000: the cap still holds."""
    ti = info("big")
    ti.size = 5
    ti.pax_headers = {"size": "2000"}
    header = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    body = b"A" * 2000 + b"\0" * (-2000 % 512)
    small = info("small")
    small.size = 2
    first = small.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + b"ok" + b"\0" * 510
    data = first + header + body + b"\0" * 1024
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="big"):
        extract_regular_files(data, dest, ExtractLimits(max_file_bytes=1000))
    assert list(dest.iterdir()) == []
    # With a generous limit the real size (not the ustar field) is what we count.
    got = extract_regular_files(data, tmp_path / "ok", ExtractLimits())
    assert {f.path: f.size for f in got} == {"small": 2, "big": 2000}


def test_extract_truncated_stream(tmp_path: Path) -> None:
    ti = info("claims-more")
    ti.size = 100_000
    data = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + b"x" * 700
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="archive"):
        extract_regular_files(data, dest, ExtractLimits())
    assert list(dest.iterdir()) == []


def test_extract_garbage(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="malformed"):
        extract_regular_files(b"not a tar" * 100, tmp_path / "out", ExtractLimits())


def test_extract_requires_empty_dest(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        extract_regular_files(tar_of(OK_FILE), tmp_path, ExtractLimits())
    assert (tmp_path / "keep").read_text() == "mine"


def test_roundtrip_all_orders(tmp_path: Path) -> None:
    files = [e for e in ENTRIES if e.kind is EntryKind.FILE]
    results: list[list[ExtractedFile]] = []
    for order in FileOrder:
        data = build_tar(files, order=order, mtime=0)
        results.append(extract_regular_files(data, tmp_path / order.value, ExtractLimits()))
    assert results[0] == results[1]


def test_extract_caps_header_bytes(tmp_path: Path) -> None:
    """A huge PAX header cannot make us read without bound, whatever the file sizes say."""
    ti = info("f")
    ti.pax_headers = {"comment": "x" * 600_000}
    data = tar_of((ti, b"1"))
    with pytest.raises(UnsafeArchiveError, match="longer than"):
        extract_regular_files(
            data, tmp_path / "out", ExtractLimits(max_files=1, max_total_bytes=10)
        )
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_many_directories_does_not_leak_fds(tmp_path: Path) -> None:
    entries = [
        SourceEntry(f"d{i % 50}/e{i % 7}/f{i}", EntryKind.FILE, 0o644, b"x") for i in range(400)
    ]
    data = build_tar(entries, order=FileOrder.REVERSED, mtime=0)
    before = len(os.listdir("/proc/self/fd"))
    got = extract_regular_files(data, tmp_path / "out", ExtractLimits())
    assert len(got) == 400
    assert len(os.listdir("/proc/self/fd")) == before
