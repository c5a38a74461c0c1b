"""A history of batch runs in a plain directory, and what changed since the last run.

The directory is whatever a CI cache or artifact keeps between nights. It is append-only:
each run adds one small JSON record per target under ``DIR/<target>/``, named by its time
and a random suffix and written atomically, so two shards writing at once never touch the
same file and a half-written record is never read. Nothing is ever rewritten.

:func:`changes` compares a target's new record with its previous one and says what a
person watching many servers needs to hear first: a **regression** ("reproducible on
2026-11-30, unreproducible now"), a **fix**, **new egress destinations**, and a changed
**toolchain** or **pins** (the usual innocent cause of a regression).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reprobuild.atomic import write_bytes_atomic
from reprobuild.errors import InputError

__all__ = ["HistoryRecord", "append", "changes", "load", "record_of", "timeline"]

_GOOD = {"reproducible", "repacked"}
_BAD = {"unreproducible", "egress", "build-failed"}


@dataclass(frozen=True)
class HistoryRecord:
    """One target in one run."""

    name: str
    time: float
    verdict: str
    exit_code: int
    commit: str | None
    toolchain: str | None
    pins: str | None
    """A digest of the fetched pins (name==version), so a change shows without storing
    hundreds of lines per night."""
    egress: tuple[str, ...]
    shard: str = ""


def record_of(target: Mapping[str, Any], now: float) -> HistoryRecord:
    """The history record of one target of a batch result."""
    report = target.get("report") or {}
    fetch = report.get("fetch") or {}
    pins = fetch.get("pins") or {}
    digest = (hashlib.sha256("\n".join(f"{k}=={v}" for k, v in sorted(pins.items()))
                             .encode()).hexdigest()[:16] if pins else None)
    egress = sorted({f"{a.get('name') or a.get('dst')}:{a.get('dport')}"
                     for a in report.get("egress") or []})
    return HistoryRecord(name=str(target["name"]), time=round(now, 3),
                         verdict=str(target.get("verdict", "error")),
                         exit_code=int(target.get("exit_code", 5)),
                         commit=(report.get("source") or {}).get("commit"),
                         toolchain=(report.get("toolchain") or {}).get("image_id") or None,
                         pins=digest, egress=tuple(egress), shard=str(target.get("shard", "")))


def _day(when: float) -> str:
    return datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%d")


def changes(previous: HistoryRecord | None, current: HistoryRecord) -> list[str]:
    """What changed for a target since its previous record (most important first)."""
    if previous is None:
        return []
    said: list[str] = []
    if previous.verdict in _GOOD and current.verdict in _BAD:
        said.append(f"regression: {previous.verdict} on {_day(previous.time)}, "
                    f"{current.verdict} now")
    elif previous.verdict in _BAD and current.verdict in _GOOD:
        said.append(f"fixed: {previous.verdict} on {_day(previous.time)}, "
                    f"{current.verdict} now")
    elif previous.verdict != current.verdict:
        said.append(f"{previous.verdict} on {_day(previous.time)}, {current.verdict} now")
    new = sorted(set(current.egress) - set(previous.egress))
    if new:
        said.append(f"new egress destination(s): {', '.join(new[:5])}")
    if previous.toolchain and current.toolchain and previous.toolchain != current.toolchain:
        said.append("toolchain image changed")
    if previous.pins and current.pins and previous.pins != current.pins:
        said.append("fetched pins changed")
    if previous.commit and current.commit and previous.commit != current.commit:
        said.append(f"commit {previous.commit[:12]} -> {current.commit[:12]}")
    return said


def _target_dir(root: Path, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"history: {name!r} is not a target name", "use the batch's names")
    return root / name


def load(root: Path, name: str) -> list[HistoryRecord]:
    """A target's records, oldest first (unreadable or foreign files are skipped)."""
    directory = _target_dir(root, name)
    records = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = json.loads(path.read_text(encoding="utf-8"))
            records.append(HistoryRecord(**{**data, "egress": tuple(data.get("egress", []))}))
    return sorted(records, key=lambda r: r.time)


def append(root: Path, record: HistoryRecord) -> Path:
    """Add one record (a new file; safe against other writers of the same directory)."""
    directory = _target_dir(root, record.name)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(record.time))
    path = directory / f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}.json"
    write_bytes_atomic((json.dumps(asdict(record), indent=1) + "\n").encode(), path)
    return path


def timeline(root: Path, names: Sequence[str] | None = None) -> dict[str, list[HistoryRecord]]:
    """Every target's records (or the named ones'), for ``reprobuild history show``."""
    if not root.is_dir():
        raise InputError(f"history directory {root} does not exist",
                         "pass the directory given to --history")
    wanted = list(names) if names else sorted(p.name for p in root.iterdir() if p.is_dir())
    return {name: load(root, name) for name in wanted}
