"""What kind of cause a difference has, and how to fix it: the classes and their hints.

A difference is classified from three things: *how* it differs (a member's time, mode,
owner or order is archive metadata; bytes are content), *which variation* the search
blamed (the clock, the build path, ...), and *what the bytes say* (a change that is only a
timestamp, build B's own path or user name appearing). The classes, their meaning and
their fixes are data, in :data:`CAUSES` and :data:`CULPRIT_FIXES` (one table each, here);
each ecosystem adds what its own tools do about a class in its ``fix_hints``, so the
advice names the tool. Each class has a fixture that triggers it in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from enum import Enum

from reprobuild.explain.search import Attribution, AttributionKind
from reprobuild.explain.symptoms import Aspect
from reprobuild.variations import CLOCK_SHIFT_DAYS, Variation

__all__ = [
    "CAUSES",
    "CULPRIT_FIXES",
    "ORDER_SUSPECTS",
    "Cause",
    "CauseClass",
    "classify",
    "fix_hint",
    "marked",
    "reordered",
    "shifted_by_clock",
    "time_only",
]


class CauseClass(str, Enum):
    """The documented kinds of cause (README, "Why a build is unreproducible")."""

    EMBEDDED_TIMESTAMP = "embedded-timestamp"
    ARCHIVE_METADATA = "archive-metadata"
    BUILD_PATH = "build-path"
    HOST_USER = "host-user"
    LOCALE_TIMEZONE = "locale-timezone"
    FILE_ORDER = "file-order"
    ENVIRONMENT_ORDER = "environment-order"
    CPU_COUNT = "cpu-count"
    RANDOMNESS = "randomness"
    CONTENT = "content"


@dataclass(frozen=True)
class Cause:
    """How a class reads in a report: a short label, what it means, the usual fix."""

    label: str
    meaning: str
    fix: str


CAUSES: Mapping[CauseClass, Cause] = {
    CauseClass.EMBEDDED_TIMESTAMP: Cause(
        "embedded timestamp",
        "the time of the build is written into the artifact (in its content, or as "
        "archive member or header times)",
        "take every embedded time from SOURCE_DATE_EPOCH (reprobuild sets it to the commit "
        "time) and clamp archive member times to it"),
    CauseClass.ARCHIVE_METADATA: Cause(
        "archive metadata",
        "the archive records how the files were on the builder's disk: modes, owners, "
        "member order",
        "normalise what the archive records when packing: fixed modes (0644, 0755 for "
        "executables), owner 0:0 with no names, members sorted by name"),
    CauseClass.BUILD_PATH: Cause(
        "build path",
        "the directory the build ran in (or HOME) is written into the artifact",
        "make embedded paths relative to the project, or map the build directory to a "
        "fixed one (compilers' -ffile-prefix-map / path-remapping options)"),
    CauseClass.HOST_USER: Cause(
        "host or user name",
        "the machine's host name or the building user's name or id is written into the "
        "artifact",
        "leave them out of the artifact, or take them from a fixed setting"),
    CauseClass.LOCALE_TIMEZONE: Cause(
        "locale or time zone",
        "output depends on the locale (sort order, number and date formats) or on the "
        "local time zone",
        "format times in UTC, and sort by code point or under LC_ALL=C"),
    CauseClass.FILE_ORDER: Cause(
        "file-system order",
        "the build uses a directory's entries in the order the file system lists them",
        "sort directory listings (os.listdir, readdir, glob) before using them"),
    CauseClass.ENVIRONMENT_ORDER: Cause(
        "environment order",
        "the build writes environment variables in the order it received them",
        "sort the variables, or do not embed the environment"),
    CauseClass.CPU_COUNT: Cause(
        "CPU count",
        "output depends on how many CPUs the build may use (chunking by nproc, the order "
        "parallel jobs finish in)",
        "merge the results of parallel steps in a fixed order and do not embed the CPU "
        "count"),
    CauseClass.RANDOMNESS: Cause(
        "randomness",
        "the output differs between two builds in identical environments: random values, "
        "hash-seed iteration order, or a race between parallel jobs",
        "seed or remove the randomness, sort set and dict iteration before writing it, "
        "and make parallel writers finish in a fixed order"),
    CauseClass.CONTENT: Cause(
        "content",
        "a content change that fits none of the known patterns",
        "read the diffoscope report: a change nobody can explain deserves suspicion"),
}
"""Every class: its label, its meaning, its generic fix."""

CULPRIT_FIXES: Mapping[tuple[CauseClass, Variation | None], str] = {
    (CauseClass.ARCHIVE_METADATA, Variation.UMASK):
        "file modes follow the builder's umask: store fixed modes (0644, 0755 for "
        "executables) whatever the disk has",
    (CauseClass.ARCHIVE_METADATA, Variation.USER):
        "members record the building user as owner: store owner 0:0 with empty names "
        "(GNU tar: --owner=0 --group=0 --numeric-owner)",
    (CauseClass.ARCHIVE_METADATA, Variation.FILE_ORDER):
        "members are stored in file-system order: sort them by name (GNU tar: "
        "--sort=name)",
    (CauseClass.ARCHIVE_METADATA, None):
        "the archive's metadata differs between identical builds: a packing step that "
        "runs in parallel or walks an unordered collection; sort members and fix modes",
    (CauseClass.BUILD_PATH, Variation.HOME):
        "the home directory is written into the artifact: do not embed HOME or paths "
        "under it (caches, config files)",
    (CauseClass.LOCALE_TIMEZONE, Variation.TIMEZONE):
        "local times are written: format times in UTC",
    (CauseClass.LOCALE_TIMEZONE, Variation.LOCALE):
        "sorting or formatting follows the locale: sort by code point or set LC_ALL=C "
        "for the step",
}
"""Sharper fixes when the culprit (None: no variation, identical builds) is known."""

VARIATION_CLASS: Mapping[Variation, CauseClass] = {
    Variation.CLOCK: CauseClass.EMBEDDED_TIMESTAMP,
    Variation.BUILD_PATH: CauseClass.BUILD_PATH,
    Variation.HOME: CauseClass.BUILD_PATH,
    Variation.HOSTNAME: CauseClass.HOST_USER,
    Variation.USER: CauseClass.HOST_USER,
    Variation.UMASK: CauseClass.ARCHIVE_METADATA,
    Variation.TIMEZONE: CauseClass.LOCALE_TIMEZONE,
    Variation.LOCALE: CauseClass.LOCALE_TIMEZONE,
    Variation.FILE_ORDER: CauseClass.FILE_ORDER,
    Variation.ENV_ORDER: CauseClass.ENVIRONMENT_ORDER,
    Variation.CPUS: CauseClass.CPU_COUNT,
}
"""The class a content difference has when only its culprit is known."""

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_TIME = re.compile(
    rb"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    rb"|\d{4}\d{2}\d{2}T\d{6}Z?"
    rb"|\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?"
    rb"|" + _DAY.encode() + rb",? +(?:\d{1,2} +)?" + _MONTH.encode() + rb" +\d{1,2}"
    rb"|\d{1,2} " + _MONTH.encode() + rb" \d{4}"
    rb"|\d{2}-" + _MONTH.encode() + rb"-\d{2}"
    rb"|(?<![0-9])1[4-9]\d{8}(?:\d{3}(?:\d{3})?)?(?![0-9])")
"""Dates, times and Unix seconds (or ms, µs) from 2014 to 2033, in the forms tools write."""
_ISO_DATE = re.compile(rb"(\d{4})-(\d{2})-(\d{2})")
_EPOCH = re.compile(rb"(?<![0-9])(1[4-9]\d{8})(?![0-9])")


def time_only(before: bytes, after: bytes) -> bool:
    """Whether two different contents become equal once every date and time is masked."""
    if before == after:
        return False
    return _TIME.sub(b"<time>", before) == _TIME.sub(b"<time>", after)


def _days(data: bytes) -> set[int]:
    found = set()
    for year, month, day in _ISO_DATE.findall(data):
        try:
            found.add(date(int(year), int(month), int(day)).toordinal())
        except ValueError:
            continue
    for seconds in _EPOCH.findall(data):
        found.add(datetime.fromtimestamp(int(seconds), timezone.utc).date().toordinal())
    return found


def shifted_by_clock(before: bytes, after: bytes) -> bool:
    """Whether ``after`` holds a date build B's shifted clock would write where ``before``
    holds the real one (the shift, give or take a day)."""
    theirs = _days(after)
    return any(abs(b - a - CLOCK_SHIFT_DAYS) <= 1 for a in _days(before) for b in theirs)


def _word(value: str) -> re.Pattern[bytes]:
    """``value`` as a whole word: ``0o2`` is not found in ``0o22``."""
    return re.compile(rb"(?<![A-Za-z0-9])" + re.escape(value.encode()) + rb"(?![A-Za-z0-9])")


def marked(before: bytes, after: bytes,
           markers: Mapping[Variation, Sequence[str]]) -> tuple[Variation, ...]:
    """Variations whose own strings (:func:`reprobuild.variations.markers`) appear in
    ``after`` more often than in ``before``: what put them there is a suspect. A string
    found is taken out before the next is looked for (a home directory holds the user)."""
    found = []
    rest_before, rest_after = before, after
    for variation, values in markers.items():
        hit = False
        for value in sorted(values, key=len, reverse=True):
            if not value:
                continue
            word = _word(value)
            if len(word.findall(rest_after)) > len(word.findall(rest_before)):
                hit = True
            rest_before, rest_after = word.sub(b"", rest_before), word.sub(b"", rest_after)
        if hit:
            found.append(variation)
    return tuple(found)


ORDER_SUSPECTS = (Variation.LOCALE, Variation.FILE_ORDER, Variation.ENV_ORDER)
"""What puts the same things in another order: collation, directory order, the order of
the environment."""


def reordered(before: bytes, after: bytes) -> bool:
    """Whether ``after`` holds exactly ``before``'s bytes in another order, line by line
    (a listing, a sorted string, a joined list)."""
    if before == after or len(before) != len(after):
        return False
    changed = [(x, y) for x, y in zip(before.splitlines(), after.splitlines(), strict=False)
               if x != y]
    return bool(changed) and all(sorted(x) == sorted(y) for x, y in changed)


def classify(aspect: Aspect, attribution: Attribution, *, only_time: bool) -> CauseClass:
    """The class of one symptom, from how it differs, what the search blamed, and whether
    its change is only a timestamp (``only_time``)."""
    if aspect.is_time:
        return CauseClass.EMBEDDED_TIMESTAMP
    if aspect.is_metadata:
        return CauseClass.ARCHIVE_METADATA
    if attribution.kind is AttributionKind.UNSTABLE:
        return CauseClass.EMBEDDED_TIMESTAMP if only_time else CauseClass.RANDOMNESS
    classes = {VARIATION_CLASS[v] for v in attribution.culprits}
    if only_time and Variation.CLOCK in attribution.culprits:
        return CauseClass.EMBEDDED_TIMESTAMP
    if attribution.kind is AttributionKind.UNDECIDED and len(classes) != 1:
        return CauseClass.CONTENT
    if not attribution.culprits:
        return CauseClass.CONTENT
    return VARIATION_CLASS[attribution.culprits[0]]


def fix_hint(cause: CauseClass, culprits: Iterable[Variation], *,
             ecosystem: Mapping[str, str] | None = None, unstable: bool = False) -> str:
    """The fix for one finding: the sharpest generic one for its culprit, then what the
    project's own tools do about the class (the ecosystem's ``fix_hints``)."""
    chosen = tuple(culprits)
    keys: list[Variation | None] = [None] if unstable else list(chosen)
    generic = next((CULPRIT_FIXES[(cause, v)] for v in keys if (cause, v) in CULPRIT_FIXES),
                   CAUSES[cause].fix)
    extra = (ecosystem or {}).get(cause.value)
    return f"{generic}; {extra}" if extra else generic
