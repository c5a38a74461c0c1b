"""The allow-list proxy's side of the fetch: its program and what its log means.

The proxy and relay (:mod:`reprobuild.incontainer.fetch_proxy`, stdlib only) run in their
own containers; this module hands their source over and turns the proxy's JSON lines into
:class:`~reprobuild.evidence.FetchRequest` records.
"""

from __future__ import annotations

import json
from functools import cache

from reprobuild.evidence import FetchRequest
from reprobuild.incontainer import program_path

__all__ = ["parse_proxy_log", "proxy_source"]


def parse_proxy_log(text: str) -> tuple[FetchRequest, ...]:
    """The proxy's request lines as records (other lines and garbage are skipped)."""
    found: list[FetchRequest] = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or event.get("event") != "request":
            continue
        port = event.get("port")
        status = event.get("status")
        found.append(FetchRequest(
            host=str(event.get("host") or ""), port=port if isinstance(port, int) else 0,
            method=str(event.get("method") or ""), target=str(event.get("target") or ""),
            allowed=event.get("allowed") is True,
            status=status if isinstance(status, int) else None,
            time=float(event.get("time") or 0.0)))
    return tuple(found)


@cache
def proxy_source() -> str:
    """The proxy/relay program's text (run with ``python3 -I -S``)."""
    return program_path("fetch_proxy").read_text(encoding="utf-8")
