"""Evidence records: network attempts a build made, and requests the fetch phase sent.

These are the facts a verdict of ``egress`` rests on, so they are plain frozen records
shared by the code that gathers them (the sandbox's agent log, the fetch proxy's log) and
the code that reports them (:mod:`reprobuild.report`). Their field names are the JSON
report's (README, "Report format").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

__all__ = ["EgressAttempt", "FetchRequest", "blocked_attempts", "destinations", "mark_one_sided",
           "summarize"]


@dataclass(frozen=True)
class FetchRequest:
    """One request or tunnel the fetch phase's allow-list proxy saw."""

    host: str
    port: int
    method: str
    target: str
    allowed: bool
    status: int | None
    time: float


@dataclass(frozen=True)
class EgressAttempt:
    """One network attempt a build made; field names are the report's (README)."""

    build: str
    phase: str
    kind: str
    proto: str | None
    family: int | None
    dst: str | None
    dport: int | None
    name: str | None
    qtype: str | None
    detail: str | None
    uid: int | None
    pid: int | None
    exe: str | None
    cmdline: str | None
    forged: bool
    count: int | None
    time: float | None
    only_in: str | None = None

    def key(self) -> tuple[object, ...]:
        """What makes two builds' attempts "the same" (fake addresses may differ)."""
        where = self.name if self.name else self.dst
        return (self.kind, self.proto, where, self.dport, self.qtype)


def mark_one_sided(per_build: Sequence[Sequence[EgressAttempt]]) -> list[EgressAttempt]:
    """All attempts of both builds; those seen in only one build get ``only_in`` set.

    A build that reaches out in one environment and not the other is a signal of its own
    (an environment-triggered payload), so it is marked rather than merged away.
    """
    keys = [{attempt.key() for attempt in attempts} for attempts in per_build]
    result: list[EgressAttempt] = []
    for index, attempts in enumerate(per_build):
        others = set().union(*(k for i, k in enumerate(keys) if i != index))
        for attempt in attempts:
            one_sided = len(per_build) > 1 and attempt.key() not in others
            result.append(replace(attempt, only_in=attempt.build if one_sided else None))
    return result


def blocked_attempts(requests: Iterable[FetchRequest]) -> list[EgressAttempt]:
    """Fetch-phase requests the allow-list proxy refused, as egress attempts."""
    return [EgressAttempt(
        build="fetch", phase="fetch", kind="http" if r.port == 80 else "tls",
        proto="tcp", family=None, dst=r.host, dport=r.port, name=r.host,
        qtype=None, detail=f"{r.method} {r.target} (blocked: not on the allow-list)",
        uid=None, pid=None, exe=None, cmdline=None, forged=False, count=None, time=r.time)
        for r in requests if not r.allowed]


def destinations(attempts: Iterable[EgressAttempt]) -> list[str]:
    """Each ``name:port`` tried, once, in the order first tried (what reports list)."""
    return list(dict.fromkeys(f"{a.name or a.dst}:{a.dport}" for a in attempts))


def summarize(attempts: Iterable[EgressAttempt]) -> str:
    """One line for the verdict message: how many attempts, to where."""
    items = list(attempts)
    places = sorted({a.name or a.dst or "?" for a in items})
    shown = ", ".join(places[:5]) + (f" and {len(places) - 5} more" if len(places) > 5 else "")
    return f"{len(items)} network attempt(s) during the build: {shown}"
