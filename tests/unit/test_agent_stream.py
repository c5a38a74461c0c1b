"""The host's follower of the agent's stdout: a marker is seen when it arrives.

The engine's log stream is stood in for by a generator fed from a queue (the class only
iterates it); the handshakes READY, the exit line and DONE are waited on through it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from reprobuild.sandbox.container import _AgentStream


class _Engine:
    """What ``_AgentStream`` asks of the Docker API: a log stream, here fed by hand."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue()

    def logs(self, container_id: str, **_options: object) -> Iterator[bytes]:
        del container_id
        while (chunk := self.chunks.get()) is not None:
            yield chunk


def _follow() -> tuple[_Engine, _AgentStream]:
    engine = _Engine()
    return engine, _AgentStream(engine, "c")  # type: ignore[arg-type]


@pytest.mark.parametrize("chunks", [
    [b"REPROBUILD-TRAP-READY {}\n"],                       # the very first line
    [b"REPROBUILD-TR", b"AP-READY {}\n"],                  # split across chunks
    [b'{"kind": "dns"}\n', b"\nREPROBUILD", b"-TRAP-READY {}\n"],
])
def test_a_marker_is_seen_as_it_arrives_not_at_the_timeout(chunks: list[bytes]) -> None:
    engine, agent = _follow()
    seen: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        if agent.wait_for("REPROBUILD-TRAP-READY", 30):
            seen.append(time.monotonic() - started)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)  # the wait is under way, on an empty stream
    for chunk in chunks:
        engine.chunks.put(chunk)
    thread.join(35)
    assert seen and seen[0] < 15, seen  # woken by the data, long before the 30 s timeout
    engine.chunks.put(None)


def test_a_marker_inside_a_line_is_not_a_line_that_starts_with_it() -> None:
    engine, agent = _follow()
    engine.chunks.put(b'{"detail": "REPROBUILD-TRAP-DONE"}\n')
    assert not agent.wait_for("REPROBUILD-TRAP-DONE", 0.2)
    engine.chunks.put(b"REPROBUILD-TRAP-DONE\n")
    assert agent.wait_for("REPROBUILD-TRAP-DONE", 30)
    engine.chunks.put(None)
    deadline = time.monotonic() + 30
    while not agent.ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.ended and not agent.wait_for("REPROBUILD-BUILD-EXIT", 30)  # EOF: no wait
    assert agent.text().endswith("REPROBUILD-TRAP-DONE\n")
