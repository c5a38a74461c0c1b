"""Forensic comparison of release archives: verdicts, packaging lines and refusals."""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import struct
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from reprobuild.errors import UnsafeArchiveError
from reprobuild.forensics import (
    ArchiveKind,
    ArchiveLimits,
    Equivalence,
    compare,
    detect_kind,
    read_files,
    read_manifest,
    read_member,
)

MiB = 1024 * 1024
EPOCH_2020 = (2020, 2, 2, 0, 0, 0)
EPOCH_2026 = (2026, 1, 2, 3, 4, 4)


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Z:
    """One zip member to write."""

    name: str
    data: bytes = b""
    date_time: tuple[int, int, int, int, int, int] = EPOCH_2020
    method: int = zipfile.ZIP_DEFLATED
    mode: int = 0o644
    extra: bytes = b""


def write_zip(path: Path, members: list[Z], comment: bytes = b"") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for m in members:
            info = zipfile.ZipInfo(m.name, date_time=m.date_time)
            info.compress_type = m.method
            info.create_system = 3
            kind = stat.S_IFDIR if m.name.endswith("/") else stat.S_IFREG
            info.external_attr = (kind | m.mode) << 16
            info.extra = m.extra
            archive.writestr(info, m.data)
        archive.comment = comment
    return path


WHEEL_LIKE = [
    Z("pkg/"),
    Z("pkg/__init__.py", b"VERSION = '1.0'\n"),
    Z("pkg/core.py", b"def run() -> None:\n    pass\n" * 20),
    Z("pkg-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"),
    Z("pkg-1.0.dist-info/RECORD", b"pkg/__init__.py,,\n"),
]


@dataclass(frozen=True)
class T:
    """One tar member to write."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    mtime: int = 1_580_601_600  # 2020-02-02T00:00:00Z
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"
    linkname: str = ""


def tar_bytes(members: list[T], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.mode = m.mode
            info.mtime = m.mtime
            info.uid, info.gid, info.uname, info.gname = m.uid, m.gid, m.uname, m.gname
            info.linkname = m.linkname
            if m.type == tarfile.REGTYPE:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def gzip_bytes(payload: bytes, *, mtime: int = 0, os_byte: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=mtime, filename="") as out:
        out.write(payload)
    data = bytearray(buffer.getvalue())
    if os_byte is not None:
        data[9] = os_byte  # the header is not covered by the CRC
    return bytes(data)


def write_tgz(path: Path, members: list[T], *, mtime: int = 0, os_byte: int | None = None,
              fmt: int = tarfile.PAX_FORMAT) -> Path:
    path.write_bytes(gzip_bytes(tar_bytes(members, fmt), mtime=mtime, os_byte=os_byte))
    return path


PACKAGE = [
    T("package", type=tarfile.DIRTYPE, mode=0o755),
    T("package/index.js", b"module.exports = 1;\n"),
    T("package/package.json", b'{"name": "x", "version": "1.0.0"}\n'),
    T("package/README.md", b"# x\n"),
]


def patch_central_directory(path: Path, *, offset: int, fmt: str, value: int) -> None:
    """Overwrite one field of the (only) central-directory header of a zip."""
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")
    struct.pack_into(fmt, data, start + offset, value)
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- detect_kind


def test_detect_kind_by_magic_bytes_not_by_name(tmp_path: Path) -> None:
    wheel = write_zip(tmp_path / "a.tar.gz", WHEEL_LIKE)  # the name lies
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w"):
        pass
    tgz = write_tgz(tmp_path / "a.zip", PACKAGE)
    plain = tmp_path / "a.bin"
    plain.write_bytes(tar_bytes(PACKAGE, tarfile.GNU_FORMAT))
    not_tar = tmp_path / "notes.gz"
    not_tar.write_bytes(gzip_bytes(b"just text, not a tar\n" * 50))
    other = tmp_path / "x.tar"
    other.write_bytes(b"\x7fELF" + b"\0" * 600)

    assert detect_kind(wheel) is ArchiveKind.ZIP
    assert empty.read_bytes()[:4] == b"PK\x05\x06"
    assert detect_kind(empty) is ArchiveKind.ZIP
    assert detect_kind(tgz) is ArchiveKind.TAR_GZ
    assert detect_kind(plain) is ArchiveKind.TAR
    assert detect_kind(not_tar) is ArchiveKind.FILE
    assert detect_kind(other) is ArchiveKind.FILE


# --------------------------------------------------------------------------- manifests


def test_zip_manifest_records_every_field_in_central_directory_order(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "w.whl", [
        Z("pkg/", date_time=EPOCH_2026, mode=0o755),
        Z("pkg/b.py", b"b" * 100, method=zipfile.ZIP_STORED, mode=0o755,
          extra=b"\xca\xfe\x00\x00"),
        Z("pkg/a.py", b"a" * 100),
    ], comment=b"built by hand")
    manifest = read_manifest(path)

    assert manifest.kind is ArchiveKind.ZIP
    assert manifest.size == path.stat().st_size
    assert [m.name for m in manifest.members] == ["pkg/", "pkg/b.py", "pkg/a.py"]
    folder, stored, deflated = manifest.members
    assert (folder.kind, folder.sha256, folder.mode) == ("dir", "", 0o755)
    assert folder.mtime == 1_767_323_044.0  # 2026-01-02T03:04:04Z
    assert stored.kind == "file" and stored.size == 100
    assert stored.compression == "stored" and deflated.compression == "deflated"
    assert stored.mode == 0o755 and deflated.mode == 0o644
    assert stored.extra == "cafe0000"
    assert deflated.compressed_size is not None and deflated.compressed_size < 100
    assert manifest.container["zip_comment"] == "built by hand"
    assert stored.sha256 == hashlib.sha256(b"b" * 100).hexdigest()


def test_zip_members_not_made_on_unix_have_no_mode(tmp_path: Path) -> None:
    path = tmp_path / "dos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("x.txt")
        info.create_system = 0
        archive.writestr(info, b"x")
    assert read_manifest(path).members[0].mode is None


def test_tar_gz_manifest_reads_gzip_header_and_owners(tmp_path: Path) -> None:
    path = tmp_path / "p.tgz"
    data = bytearray(gzip_bytes(tar_bytes(
        [T("./package/a", b"1", uid=1000, gid=1001, uname="me", gname="us")]),
        mtime=1_767_323_045, os_byte=3))
    path.write_bytes(bytes(data))
    manifest = read_manifest(path)

    assert manifest.kind is ArchiveKind.TAR_GZ
    (member,) = manifest.members
    assert member.name == "package/a"  # './' dropped
    assert (member.uid, member.gid, member.uname, member.gname) == (1000, 1001, "me", "us")
    assert member.mode == 0o644 and member.mtime == 1_580_601_600.0
    assert manifest.container["gzip_mtime"] == "1767323045"
    assert manifest.container["gzip_os"] == "3"
    assert "gzip_name" not in manifest.container
    assert manifest.container["tar_format"] == "ustar"  # PAX writer, no PAX header needed


def test_gzip_file_name_is_read_from_the_header(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=7, filename="p-1.0.tar") as out:
        out.write(tar_bytes(PACKAGE))
    path = tmp_path / "p.tgz"
    path.write_bytes(buffer.getvalue())
    container = read_manifest(path).container
    assert container["gzip_name"] == "p-1.0.tar"
    assert container["gzip_mtime"] == "7"


def test_tar_format_is_inferred_from_the_first_header(tmp_path: Path) -> None:
    gnu = tmp_path / "gnu.tar"
    gnu.write_bytes(tar_bytes(PACKAGE, tarfile.GNU_FORMAT))
    pax = tmp_path / "pax.tar"
    pax.write_bytes(tar_bytes([T("package/" + "long" * 40, b"x")], tarfile.PAX_FORMAT))
    assert read_manifest(gnu).container["tar_format"] == "gnu"
    assert read_manifest(pax).container["tar_format"] == "pax"
    assert read_manifest(pax).members[0].name == "package/" + "long" * 40


def test_plain_file_has_no_members(tmp_path: Path) -> None:
    path = tmp_path / "server.bin"
    path.write_bytes(b"\x7fELF binary")
    manifest = read_manifest(path)
    assert manifest.kind is ArchiveKind.FILE
    assert manifest.members == ()
    assert manifest.size == 11


# --------------------------------------------------------------------------- read_member


def test_read_member_of_a_wheel_like_zip(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "pkg-1.0-py3-none-any.whl", WHEEL_LIKE)
    assert read_member(path, "pkg-1.0.dist-info/WHEEL").startswith(b"Wheel-Version: 1.0\n")
    with pytest.raises(KeyError):
        read_member(path, "pkg-1.0.dist-info/METADATA")
    with pytest.raises(KeyError):
        read_member(path, "pkg/")  # a directory has no bytes


def test_read_member_of_a_package_tarball(tmp_path: Path) -> None:
    path = write_tgz(tmp_path / "x-1.0.0.tgz", PACKAGE)
    assert read_member(path, "package/package.json") == b'{"name": "x", "version": "1.0.0"}\n'
    assert read_member(path, "./package/README.md") == b"# x\n"
    with pytest.raises(KeyError):
        read_member(path, "package/missing.json")


def test_read_files_gives_every_file_with_its_mode(tmp_path: Path) -> None:
    path = write_tgz(tmp_path / "src.tgz", [
        *PACKAGE, T("package/bin/run", b"#!/bin/sh\n", mode=0o755)])
    files = read_files(path)
    assert [(name, mode) for name, mode, _ in files] == [
        ("package/index.js", 0o644), ("package/package.json", 0o644),
        ("package/README.md", 0o644), ("package/bin/run", 0o755)]
    assert files[-1][2] == b"#!/bin/sh\n"
    wheel = write_zip(tmp_path / "w.whl", WHEEL_LIKE)
    assert [name for name, _, _ in read_files(wheel)] == [m.name for m in WHEEL_LIKE[1:]]
    plain = tmp_path / "x.bin"
    plain.write_bytes(b"plain")
    assert read_files(plain) == ()
    with pytest.raises(UnsafeArchiveError, match="over the 5-byte limit"):
        read_files(path, ArchiveLimits(max_total_bytes=5))


def test_read_member_applies_the_same_refusals(tmp_path: Path) -> None:
    path = tmp_path / "bad.tgz"
    path.write_bytes(gzip_bytes(tar_bytes([
        T("package/package.json", b"{}"),
        T("package/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    ])))
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        read_member(path, "package/package.json")


# --------------------------------------------------------------------------- verdicts


def test_identical_files(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = tmp_path / "b.whl"
    b.write_bytes(a.read_bytes())
    result = compare(a, b)
    assert result.equivalence is Equivalence.IDENTICAL
    assert result.name == "a.whl"
    assert result.packaging == ()
    assert compare(a, b, name="pkg wheel").name == "pkg wheel"


def test_zip_member_order_only(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = write_zip(tmp_path / "b.whl", [WHEEL_LIKE[0], WHEEL_LIKE[2], WHEEL_LIKE[1],
                                       *WHEEL_LIKE[3:]])
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == (
        "member order differs (first at position 2: pkg/__init__.py vs pkg/core.py)",)
    assert (result.only_published, result.only_rebuilt, result.changed) == ((), (), ())


def test_zip_mtime_only(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    later = [Z(m.name, m.data, date_time=EPOCH_2026) for m in WHEEL_LIKE[:3]]
    b = write_zip(tmp_path / "b.whl", [*later, *WHEEL_LIKE[3:]])
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == (
        "mtime differs on 3 of 5 members: published 2020-02-02T00:00:00Z, "
        "rebuilt 2026-01-02T03:04:04Z",)


def test_zip_mtime_summary_counts_other_values(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = write_zip(tmp_path / "b.whl", [
        Z(m.name, m.data, date_time=(2026, 1, 2, 3, 4, 4 + 2 * (i == 4)))
        for i, m in enumerate(WHEEL_LIKE)])
    (line,) = compare(a, b).packaging
    assert line == ("mtime differs on 5 of 5 members: published 2020-02-02T00:00:00Z, "
                    "rebuilt 2026-01-02T03:04:04Z (+1 other value)")


def test_zip_compression_only(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = write_zip(tmp_path / "b.whl", [
        Z(m.name, m.data, method=zipfile.ZIP_STORED) if m.name.endswith(".py") else m
        for m in WHEEL_LIKE])
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == (
        "zip compression differs on 2 of 4 members: published deflated, rebuilt stored",)


def test_zip_compression_level_only(tmp_path: Path) -> None:
    members = [Z("pkg/data.txt", b"".join(b"line %d of text\n" % i for i in range(4000)))]
    a = write_zip(tmp_path / "a.whl", members)
    b = tmp_path / "b.whl"
    with zipfile.ZipFile(b, "w") as archive:
        info = zipfile.ZipInfo("pkg/data.txt", date_time=EPOCH_2020)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        archive.writestr(info, members[0].data, compresslevel=1)
    (line,) = compare(a, b).packaging
    assert line.startswith("zip compressed sizes differ on 1 of 1 members with the same "
                           "method (compression level or library")


def test_zip_mode_only(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = write_zip(tmp_path / "b.whl", [
        Z(m.name, m.data, mode=0o664) if m.name.startswith("pkg/") and m.data else m
        for m in WHEEL_LIKE])
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == (
        "mode differs on 2 of 5 members: published 0644, rebuilt 0664 (e.g. pkg/__init__.py)",)


def test_zip_extra_fields_and_comment(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = write_zip(tmp_path / "b.whl", [
        Z(m.name, m.data, extra=b"\xca\xfe\x00\x00") if m.name == "pkg/core.py" else m
        for m in WHEEL_LIKE], comment=b"hi")
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == ("zip extra fields differ on 1 of 5 members (e.g. pkg/core.py)",
                                "zip comment: '' vs 'hi'")


def test_directory_entries_are_packaging_not_content(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = write_zip(tmp_path / "b.whl", WHEEL_LIKE[1:])
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == ("directory entries only in published: pkg/",)


def test_tar_gz_gzip_header_only(tmp_path: Path) -> None:
    a = write_tgz(tmp_path / "a.tgz", PACKAGE, mtime=0, os_byte=3)
    b = write_tgz(tmp_path / "b.tgz", PACKAGE, mtime=1_767_323_045, os_byte=255)
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == ("gzip header: OS byte 3 (Unix) vs 255 (unknown)",
                                "gzip header: mtime 0 vs 1767323045")


def test_tar_gz_owner_and_member_mtimes(tmp_path: Path) -> None:
    a = write_tgz(tmp_path / "a.tgz", PACKAGE)
    rebuilt = [T(m.name, m.data, type=m.type, mode=m.mode, uid=1000, gid=1000, uname="",
                 gname="", mtime=1_767_323_044 if m.data else m.mtime) for m in PACKAGE]
    b = write_tgz(tmp_path / "b.tgz", rebuilt)
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == (
        "mtime differs on 3 of 4 members: published 2020-02-02T00:00:00Z, "
        "rebuilt 2026-01-02T03:04:04Z",
        "owner differs on 4 of 4 members: published 0:0 (root/root), rebuilt 1000:1000",
    )


def test_tar_format_difference(tmp_path: Path) -> None:
    a = write_tgz(tmp_path / "a.tgz", PACKAGE, fmt=tarfile.GNU_FORMAT)
    b = write_tgz(tmp_path / "b.tgz", PACKAGE, fmt=tarfile.USTAR_FORMAT)
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert result.packaging == ("tar format: GNU vs POSIX ustar",)


def test_tar_padding_difference_is_described(tmp_path: Path) -> None:
    a = write_tgz(tmp_path / "a.tgz", PACKAGE)
    b = tmp_path / "b.tgz"
    b.write_bytes(gzip_bytes(tar_bytes(PACKAGE) + b"\0" * 10240))
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_EQUAL
    assert len(result.packaging) == 1
    assert result.packaging[0].startswith("tar stream length differs: ")


def test_content_differs_names_every_member(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", [*WHEEL_LIKE, Z("pkg/_secret.py", b"token = 1\n")])
    b = write_zip(tmp_path / "b.whl", [
        *(Z(m.name, m.data + b"# changed\n") if m.name == "pkg/core.py" else m
          for m in WHEEL_LIKE),
        Z("pkg/new.py", b"\n", date_time=EPOCH_2026)])
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_DIFFERS
    assert result.only_published == ("pkg/_secret.py",)
    assert result.only_rebuilt == ("pkg/new.py",)
    assert result.changed == ("pkg/core.py",)
    assert result.packaging == ()  # same order, times and modes for the shared members


def test_content_differs_still_reports_packaging(tmp_path: Path) -> None:
    a = write_tgz(tmp_path / "a.tgz", PACKAGE, os_byte=3)
    b = write_tgz(tmp_path / "b.tgz", [*PACKAGE[:3]], os_byte=255)
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_DIFFERS
    assert result.only_published == ("package/README.md",)
    assert result.packaging == ("gzip header: OS byte 3 (Unix) vs 255 (unknown)",)


def test_kinds_differ(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    b = write_tgz(tmp_path / "b.tgz", PACKAGE)
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_DIFFERS
    assert result.packaging == ("archive kind differs: published zip, rebuilt tar.gz",)


def test_plain_files_are_compared_as_bytes(tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"\x7fELF" + b"\1" * 10)
    b = tmp_path / "b.bin"
    b.write_bytes(b"\x7fELF" + b"\1" * 5 + b"\2" * 5)
    result = compare(a, b)
    assert result.equivalence is Equivalence.CONTENT_DIFFERS
    assert result.packaging == ("not an archive, compared as bytes: published 14 bytes, "
                                "rebuilt 14 bytes, first difference at byte 9",)


# --------------------------------------------------------------------------- refusals


def test_refuses_symlink_in_tar(tmp_path: Path) -> None:
    path = tmp_path / "p.tgz"
    path.write_bytes(gzip_bytes(tar_bytes(
        [T("package/evil", type=tarfile.SYMTYPE, linkname="/etc/passwd")])))
    with pytest.raises(UnsafeArchiveError, match=r"'package/evil'.*symbolic link"):
        read_manifest(path)


def test_refuses_hardlink_in_tar(tmp_path: Path) -> None:
    path = tmp_path / "p.tar"
    path.write_bytes(tar_bytes([T("package/a", b"x"),
                                T("package/b", type=tarfile.LNKTYPE, linkname="package/a")]))
    with pytest.raises(UnsafeArchiveError, match=r"'package/b'.*hard link"):
        read_manifest(path)


def test_refuses_device_in_tar(tmp_path: Path) -> None:
    path = tmp_path / "p.tar"
    path.write_bytes(tar_bytes([T("package/null", type=tarfile.CHRTYPE)]))
    with pytest.raises(UnsafeArchiveError, match="device node"):
        read_manifest(path)


def test_refuses_absolute_name_in_tar(tmp_path: Path) -> None:
    path = tmp_path / "p.tgz"
    path.write_bytes(gzip_bytes(tar_bytes([T("/etc/cron.d/x", b"* * * * * root id\n")])))
    with pytest.raises(UnsafeArchiveError, match=r"'/etc/cron.d/x'.*absolute path"):
        read_manifest(path)


def test_refuses_dotdot_in_zip(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "w.whl", [Z("../x", b"boom")])
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./x'.*'\.\.' in path"):
        read_manifest(path)


def test_refuses_backslash_and_nul_in_zip(tmp_path: Path) -> None:
    slash = write_zip(tmp_path / "s.zip", [Z("pkg\\x.py", b"1")])
    with pytest.raises(UnsafeArchiveError, match="backslash"):
        read_manifest(slash)
    nul = write_zip(tmp_path / "n.zip", [Z("pkg/aQQb.py", b"1")])
    nul.write_bytes(nul.read_bytes().replace(b"aQQb", b"a\0\0b"))
    with pytest.raises(UnsafeArchiveError, match="NUL in name"):
        read_manifest(nul)


def test_refuses_symlink_in_zip(tmp_path: Path) -> None:
    path = tmp_path / "l.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("pkg/link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, b"/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/link'.*symbolic link"):
        read_manifest(path)


def test_refuses_duplicate_names_in_zip_and_tar(tmp_path: Path) -> None:
    path = tmp_path / "d.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        write_zip(path, [Z("pkg/a.py", b"good"), Z("pkg/a.py", b"evil")])
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/a.py'.*duplicate"):
        read_manifest(path)
    tar = tmp_path / "d.tar"
    tar.write_bytes(tar_bytes([T("package/a", b"good"), T("./package/a", b"evil")]))
    with pytest.raises(UnsafeArchiveError, match=r"'\./package/a'.*duplicate"):
        read_manifest(tar)


def test_refuses_member_over_the_size_cap(tmp_path: Path) -> None:
    tiny = ArchiveLimits(max_member_bytes=10)
    path = write_zip(tmp_path / "w.whl", [Z("pkg/big.py", b"x" * 11)])
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/big.py'.*11 bytes is over"):
        read_manifest(path, tiny)
    with pytest.raises(UnsafeArchiveError, match="over the 10-byte member limit"):
        read_member(path, "pkg/big.py", tiny)
    tgz = write_tgz(tmp_path / "p.tgz", [T("package/big", b"x" * 11)])
    with pytest.raises(UnsafeArchiveError, match=r"'package/big'.*11 bytes is over"):
        compare(tgz, path, tiny)
    assert read_manifest(path, ArchiveLimits(max_member_bytes=11)).members[0].size == 11


def test_refuses_archive_over_the_total_and_member_count_caps(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "w.whl", WHEEL_LIKE)
    with pytest.raises(UnsafeArchiveError, match="over the 50-byte limit"):
        read_manifest(path, ArchiveLimits(max_total_bytes=50))
    with pytest.raises(UnsafeArchiveError, match="more than 3 members"):
        read_manifest(path, ArchiveLimits(max_members=3))
    tgz = write_tgz(tmp_path / "p.tgz", PACKAGE)
    with pytest.raises(UnsafeArchiveError, match="more than 2 members"):
        read_manifest(tgz, ArchiveLimits(max_members=2))


def test_refuses_zip_bomb_member(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.whl", [Z("pkg/zeros.bin", b"\0" * (5 * MiB))])
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/zeros.bin'.*200:1 ratio limit"):
        read_manifest(path)
    assert read_manifest(path, ArchiveLimits(max_ratio=10_000)).members[0].size == 5 * MiB


def test_refuses_gzip_stream_that_inflates_too_far(tmp_path: Path) -> None:
    path = write_tgz(tmp_path / "bomb.tgz", [T("package/zeros", b"\0" * (5 * MiB))])
    with pytest.raises(UnsafeArchiveError, match="decompresses to more than 200 times"):
        read_manifest(path)


def test_refuses_zip_whose_central_directory_overstates_the_size(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "lie.whl", [Z("pkg/a.py", b"x" * 100, method=zipfile.ZIP_STORED)])
    patch_central_directory(path, offset=24, fmt="<I", value=150)  # uncompressed size
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/a.py'.*declares 150 bytes but holds 100"):
        read_manifest(path)


def test_refuses_zip_whose_central_directory_understates_the_size(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "lie.whl", [Z("pkg/a.py", b"x" * 5000)])
    patch_central_directory(path, offset=24, fmt="<I", value=10)
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/a.py'.*cannot be read"):
        read_manifest(path)


def test_refuses_encrypted_zip_member(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "e.zip", [Z("pkg/a.py", b"x")])
    patch_central_directory(path, offset=8, fmt="<H", value=0x1)  # general purpose flags
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/a.py' in e.zip: encrypted$"):
        read_manifest(path)


def test_refuses_truncated_and_trailing_data_tar_gz(tmp_path: Path) -> None:
    good = write_tgz(tmp_path / "good.tgz", PACKAGE).read_bytes()
    truncated = tmp_path / "t.tgz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(UnsafeArchiveError, match="malformed archive"):
        read_manifest(truncated)
    hidden = tmp_path / "h.tgz"
    hidden.write_bytes(gzip_bytes(tar_bytes(PACKAGE) + b"hidden payload"))
    with pytest.raises(UnsafeArchiveError, match="after the end-of-archive marker"):
        read_manifest(hidden)


def test_refusal_names_the_member_even_through_compare(tmp_path: Path) -> None:
    good = write_zip(tmp_path / "a.whl", WHEEL_LIKE)
    bad = write_zip(tmp_path / "b.whl", [*WHEEL_LIKE, Z("pkg/../../x", b"1")])
    with pytest.raises(UnsafeArchiveError) as caught:
        compare(good, bad)
    assert "'pkg/../../x' in b.whl" in str(caught.value)
    assert caught.value.hint
