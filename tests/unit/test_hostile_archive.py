"""Hostile output archives: trees nested thousands of levels deep, and what extraction
must still clean up after refusing one (real tars, real files, no Docker)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprobuild.archive import ExtractLimits, chunk_reader, extract_regular_files
from reprobuild.errors import UnsafeArchiveError


def _deep_tar(levels: int, *, then_link: bool = False) -> bytes:
    """What ``docker cp`` gives for ``d/d/.../d/bottom.txt`` (optionally then a link)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        path = "."
        tar.addfile(_dir(path))
        for _ in range(levels):
            path += "/d"
            tar.addfile(_dir(path))
        leaf = tarfile.TarInfo(path + "/bottom.txt")
        leaf.size = 1
        tar.addfile(leaf, io.BytesIO(b"x"))
        if then_link:
            link = tarfile.TarInfo("./zz-link")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
    return buf.getvalue()


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def test_a_tree_thousands_of_levels_deep_is_refused_with_one_line(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError) as refused:
        extract_regular_files(_deep_tar(5000), dest, ExtractLimits(), strip_prefix=".")
    message = refused.value.message
    assert "more than 64 levels deep" in message
    assert "\n" not in message and len(message) < 300
    assert list(dest.iterdir()) == []


def test_the_depth_cap_is_a_limit(tmp_path: Path) -> None:
    files = extract_regular_files(_deep_tar(10), tmp_path / "ok", ExtractLimits(max_depth=11),
                                  strip_prefix=".")
    assert [f.path for f in files] == ["/".join(["d"] * 10 + ["bottom.txt"])]
    with pytest.raises(UnsafeArchiveError, match="more than 10 levels deep"):
        extract_regular_files(_deep_tar(10), tmp_path / "refused",
                              ExtractLimits(max_depth=10), strip_prefix=".")


def test_a_deep_tree_written_before_a_refusal_is_removed_without_recursion(
        tmp_path: Path) -> None:
    """Emptying ``dest`` after a refusal walks by directory fds, without recursion: a tree
    deeper than the interpreter's recursion limit (allowed by a generous cap) goes too."""
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_regular_files(_deep_tar(1500, then_link=True), dest,
                              ExtractLimits(max_depth=2000), strip_prefix=".")
    assert list(dest.iterdir()) == []


def test_a_refusal_stops_reading_the_stream(tmp_path: Path) -> None:
    """What follows a refused member (a big file, thousands more) is never read."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("a-link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    head = buf.getvalue()[:1024]  # the link's header block, then "an endless big file"
    read = 0

    def chunks() -> Iterator[bytes]:
        nonlocal read
        read += len(head)
        yield head
        while True:
            read += 1 << 20
            yield b"\0" * (1 << 20)

    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_regular_files(chunk_reader(chunks()), tmp_path / "out", ExtractLimits())
    assert read < 8 << 20
    assert os.listdir(tmp_path / "out") == []
