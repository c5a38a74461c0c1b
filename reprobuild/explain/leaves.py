"""diffoscope's JSON report read as a list of leaf differences, and the excerpt made of them.

diffoscope's text report is a tree printed depth first: for a wheel it starts with the
``zipinfo`` listing, whose CRC and size columns change whenever any member does, so the
first forty lines are often all listing and the line that matters comes later. The JSON
report (``--json``) is the same tree as data: every node has ``source1``/``source2`` and
either a ``unified_diff`` (a leaf) or ``details``. Here the leaves are collected with their
path in the tree, content leaves (a member's own lines) are put before listings, and only
changed lines are kept, so an excerpt shows what changed.

The report comes from the sandboxed diffoscope but describes untrusted files: it is read
with a size cap, walked without recursion, and nothing in it is trusted beyond being text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Leaf", "excerpt", "leaves", "ordered", "read_leaves"]

_LISTINGS = ("file list", "zipinfo", "zipdetails", "zipnote", "filetype from file(1)",
             "file(1)", "tar --full-time", "ls -l", "stat {}", "bsdtar")
_SUMMARY_PREFIXES = ("Zip file size:", "Archive:")
_SUMMARY_SUFFIX = "compressed"  # zipinfo's "5 files, 688 bytes uncompressed, ... compressed"
_MAX_JSON_BYTES = 64 * 1024 * 1024
_LINE_CHARS = 300
"""A changed line longer than this is cut in the excerpt (minified code is one line)."""


@dataclass(frozen=True)
class Leaf:
    """One difference diffoscope found: where in the tree, and the lines on each side."""

    path: tuple[str, ...]
    """Names below the compared files, outermost first (``("x.tar", "x/PKG-INFO")``)."""
    removed: tuple[str, ...]
    added: tuple[str, ...]
    comments: tuple[str, ...] = ()

    @property
    def listing(self) -> bool:
        """A listing of the container (member names, sizes, times), not a member's lines."""
        last = self.path[-1] if self.path else ""
        return last.startswith(_LISTINGS)

    @property
    def member(self) -> str:
        """The archive member (or section) this leaf is about."""
        named = [p for p in self.path if not p.startswith(_LISTINGS)]
        return named[-1] if named else ""


def _lines(diff: str) -> tuple[list[str], list[str]]:
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith("@@") or line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    return removed, added


def leaves(report: Mapping[str, Any]) -> list[Leaf]:
    """Every leaf difference of a diffoscope JSON report, in the report's order."""
    found: list[Leaf] = []
    stack: list[tuple[Mapping[str, Any], tuple[str, ...]]] = [(report, ())]
    while stack:
        node, path = stack.pop()
        diff = node.get("unified_diff")
        comments = tuple(str(c) for c in node.get("comments") or () if isinstance(c, str))
        if isinstance(diff, str) or comments:
            removed, added = _lines(diff) if isinstance(diff, str) else ([], [])
            if removed or added or comments:
                found.append(Leaf(path, tuple(removed), tuple(added), comments))
        details = node.get("details") or []
        if isinstance(details, list):
            for child in reversed(details):
                if isinstance(child, Mapping):
                    name = str(child.get("source1") or child.get("source2") or "")
                    stack.append((child, (*path, name)))
    return found


def read_leaves(path: Path) -> list[Leaf]:
    """The leaves of a diffoscope JSON file (none when it is missing, too big or broken)."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_JSON_BYTES:
            return []
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError, RecursionError):
        return []
    return leaves(data) if isinstance(data, Mapping) else []


def _trimmed(leaf: Leaf) -> tuple[list[str], list[str]]:
    """A listing's lines without its summary lines, unless nothing else changed."""
    if not leaf.listing:
        return list(leaf.removed), list(leaf.added)

    def summary(line: str) -> bool:
        return line.startswith(_SUMMARY_PREFIXES) or line.rstrip().endswith(_SUMMARY_SUFFIX) \
            or ("%" in line and "files," in line)

    removed = [x for x in leaf.removed if not summary(x)]
    added = [x for x in leaf.added if not summary(x)]
    return (removed, added) if removed or added else (list(leaf.removed), list(leaf.added))


def ordered(found: Sequence[Leaf]) -> list[Leaf]:
    """Content first, listings after: the line that changed before the index of lines."""
    return [*(x for x in found if not x.listing), *(x for x in found if x.listing)]


def _pairs(removed: list[str], added: list[str], per_leaf: int) -> Iterator[str]:
    shown = 0
    for index in range(max(len(removed), len(added))):
        for sign, side in (("-", removed), ("+", added)):
            if index < len(side):
                if shown == per_leaf:
                    left = len(removed) + len(added) - shown
                    yield f"  … {left} more changed line(s)"
                    return
                line = side[index]
                if len(line) > _LINE_CHARS:
                    line = line[:_LINE_CHARS] + f" … [line cut at {_LINE_CHARS} characters]"
                yield f"  {sign} {line}"
                shown += 1


def excerpt(found: Sequence[Leaf], *, max_lines: int = 40, per_leaf: int = 8) -> str:
    """The changed lines of each leaf under its place in the tree, content first."""
    lines: list[str] = []
    items = ordered(found)
    for number, leaf in enumerate(items):
        block = [" > ".join(p for p in leaf.path if p) or "(the files themselves)"]
        block += [f"  # {c}" for c in leaf.comments[:2]]
        block += list(_pairs(*_trimmed(leaf), per_leaf))
        if lines and len(lines) + len(block) > max_lines:
            rest = len(items) - number
            lines.append(f"… {rest} more difference(s) in the full report")
            break
        lines += block[:max_lines]
    return "\n".join(lines) + ("\n" if lines else "")
