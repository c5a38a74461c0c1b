"""From the search's outcome to the report's findings: suspects, classes, examples, hints.

Pure: everything here works on symptoms, member bytes already read and diffoscope's
leaves, so the whole explanation but the builds themselves is unit-tested without Docker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from reprobuild.explain.causes import (
    CAUSES,
    ORDER_SUSPECTS,
    CauseClass,
    classify,
    fix_hint,
    marked,
    reordered,
    shifted_by_clock,
    time_only,
)
from reprobuild.explain.leaves import Leaf
from reprobuild.explain.search import Attribution, AttributionKind
from reprobuild.explain.symptoms import Aspect, Observation, Symptom
from reprobuild.report import FindingInfo
from reprobuild.variations import CLOCK_SHIFT_DAYS, Variation, in_order

__all__ = ["Sides", "causes_of", "findings", "suspects"]

_DAY = 86400.0
_EXAMPLE_CHARS = 160


@dataclass(frozen=True)
class Sides:
    """The bytes of the members that changed, per build: A, B and the control."""

    a: Mapping[Symptom, bytes]
    b: Mapping[Symptom, bytes]
    control: Mapping[Symptom, bytes]


def _near_shift(seconds: float | None) -> bool:
    return seconds is not None and abs(seconds - CLOCK_SHIFT_DAYS * _DAY) <= _DAY


def suspects(observed: Mapping[Symptom, Observation], sides: Sides,
             markers: Mapping[Variation, Sequence[str]], leaves: Sequence[Leaf] = ()
             ) -> tuple[Variation, ...]:
    """Variations that what A and B show points at, to be tested alone first: modes follow
    the umask, owners the user, order the file system, a time shifted by build B's clock,
    build B's own path, host, user name or umask in the bytes, and the same bytes in
    another order (collation, directory or environment order)."""
    found: set[Variation] = set()
    for symptom, seen in observed.items():
        match symptom.aspect:
            case Aspect.MODE:
                found.add(Variation.UMASK)
            case Aspect.OWNER:
                found.add(Variation.USER)
            case Aspect.ORDER:
                found.add(Variation.FILE_ORDER)
            case Aspect.MTIME | Aspect.HEADER_TIME if _near_shift(seen.seconds):
                found.add(Variation.CLOCK)
            case Aspect.CONTENT:
                before, after = sides.a.get(symptom, b""), sides.b.get(symptom, b"")
                found.update(marked(before, after, markers))
                if shifted_by_clock(before, after):
                    found.add(Variation.CLOCK)
                if reordered(before, after):
                    found.update(ORDER_SUSPECTS)
    for leaf in leaves:
        before = "\n".join(leaf.removed).encode()
        after = "\n".join(leaf.added).encode()
        found.update(marked(before, after, markers))
        if shifted_by_clock(before, after):
            found.add(Variation.CLOCK)
        if reordered(before, after):
            found.update(ORDER_SUSPECTS)
    return in_order(found)


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXAMPLE_CHARS else flat[:_EXAMPLE_CHARS - 1] + "…"


def _leaf_for(member: str, leaves: Sequence[Leaf]) -> Leaf | None:
    if not member:
        return next((x for x in leaves if not x.listing), None)
    return next((x for x in leaves if not x.listing and (
        x.member == member or x.member.endswith("/" + member)
        or member.endswith("/" + x.member))), None)


def _example(symptom: Symptom, seen: Observation, leaves: Sequence[Leaf]) -> str:
    where = symptom.member or symptom.artifact
    if symptom.aspect in (Aspect.CONTENT, Aspect.BYTES):
        leaf = _leaf_for(symptom.member, leaves)
        if leaf is not None and (leaf.removed or leaf.added):
            was = leaf.removed[0] if leaf.removed else "(nothing)"
            now = leaf.added[0] if leaf.added else "(nothing)"
            return _clip(f"{where}: {was.strip()} → {now.strip()}")
    labels: dict[Aspect, str] = {Aspect.HEADER: symptom.member.replace("_", " "),
                                 Aspect.HEADER_TIME: "gzip header time",
                                 Aspect.ORDER: "member order"}
    label = labels.get(symptom.aspect, f"{where} {symptom.aspect.label}")
    return _clip(f"{label}: {seen.before} → {seen.after}")


def _attribution_label(attribution: Attribution, cause: CauseClass) -> str:
    if attribution.kind is AttributionKind.UNSTABLE:
        return "build-time" if cause is CauseClass.EMBEDDED_TIMESTAMP else "nondeterministic"
    return str(attribution.kind.value)


def findings(outcome: Mapping[Symptom, Attribution], observed: Mapping[Symptom, Observation],
             sides: Sides, *, leaves: Mapping[str, Sequence[Leaf]] | None = None,
             ecosystem_hints: Mapping[str, str] | None = None
             ) -> dict[str, tuple[FindingInfo, ...]]:
    """Per artifact: its symptoms grouped by cause, culprits and what differs."""
    leaves = leaves or {}
    groups: dict[tuple[str, CauseClass, Aspect, tuple[str, ...], str],
                 list[tuple[Symptom, Attribution]]] = {}
    keys: dict[Symptom, tuple[str, CauseClass, Aspect, tuple[str, ...], str]] = {}
    sources = _derived(outcome, leaves)
    for symptom in sorted(outcome, key=lambda s: (s in sources, s)):
        attribution = outcome[symptom]
        source = sources.get(symptom)
        if source is not None and source in keys:
            # A manifest of another changed member (a RECORD or SOURCES line with its
            # digest or size): it changed because that member did.
            keys[symptom] = keys[source]
            groups[keys[source]].append((symptom, attribution))
            continue
        unstable = attribution.kind is AttributionKind.UNSTABLE
        before = sides.a.get(symptom, b"")
        after = (sides.control if unstable else sides.b).get(symptom, b"")
        cause = classify(symptom.aspect, attribution,
                         only_time=bool(before or after) and time_only(before, after))
        label = _attribution_label(attribution, cause)
        culprits = tuple(v.value for v in attribution.culprits)
        if label == "build-time":
            culprits = (Variation.CLOCK.value,)
        key = (symptom.artifact, cause, symptom.aspect, culprits, label)
        keys[symptom] = key
        groups.setdefault(key, []).append((symptom, attribution))
    result: dict[str, list[FindingInfo]] = {}
    for (artifact, cause, aspect, culprits, label), items in groups.items():
        first = items[0][0]
        evidence = tuple(dict.fromkeys(n for _, a in items for n in a.evidence))
        hint = fix_hint(cause, (Variation(c) for c in culprits), ecosystem=ecosystem_hints,
                        unstable=label == "nondeterministic")
        count = len(items)
        what = aspect.label if aspect.of_artifact or first.member == "" else (
            f"{aspect.label} of {count} member{'s' if count != 1 else ''}")
        result.setdefault(artifact, []).append(FindingInfo(
            cause=cause.value, label=CAUSES[cause].label, aspect=aspect.value, what=what,
            members=tuple(s.member for s, _ in items), culprits=culprits, attribution=label,
            evidence=evidence, example=_example(first, observed[first],
                                                leaves.get(artifact, ())),
            hint=hint))
    return {k: tuple(v) for k, v in result.items()}


def _derived(outcome: Mapping[Symptom, Attribution],
             leaves: Mapping[str, Sequence[Leaf]]) -> dict[Symptom, Symptom]:
    """Changed members whose every changed line names another changed member of the same
    artifact (a manifest listing its digest): each mapped to the member it names."""
    content = [s for s in outcome if s.aspect is Aspect.CONTENT and s.member]
    found: dict[Symptom, Symptom] = {}
    for symptom in content:
        leaf = _leaf_for(symptom.member, leaves.get(symptom.artifact, ()))
        if leaf is None or not (leaf.removed or leaf.added):
            continue
        others = [t for t in content if t.artifact == symptom.artifact and t != symptom]
        named: list[Symptom] = []
        for line in (*leaf.removed, *leaf.added):
            hit = next((t for t in others if _names(line, t.member)), None)
            if hit is None:
                break
            named.append(hit)
        else:
            if named and named[0] not in found:
                found[symptom] = named[0]
    return found


def _names(line: str, member: str) -> bool:
    """Whether a line names ``member`` (or its path below the archive's top directory)."""
    tail = member.split("/", 1)[1] if "/" in member else member
    return member in line or (len(tail) > 3 and tail in line)


def causes_of(found: Iterable[FindingInfo]) -> tuple[str, ...]:
    """The classes found, the one with most members first."""
    weight: Counter[str] = Counter()
    for finding in found:
        weight[finding.cause] += max(1, len(finding.members))
    return tuple(cause for cause, _ in weight.most_common())
