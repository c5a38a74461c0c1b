"""Host side of the egress trap: how the sandbox runs the agent, and what its log means.

The agent (:mod:`reprobuild.incontainer.trap_agent`, stdlib only) is PID 1 of each sandbox
container: it owns the network namespace, then starts the build with every privilege dropped. This
module holds the pure parts the sandbox needs: the agent's capabilities and arguments, the
READY and exit handshakes, parsing the agent's JSON-lines log into :class:`EgressAttempt`
records, and marking attempts seen in only one of the two builds. Nothing here talks to
Docker.
"""

from __future__ import annotations

import binascii
import hashlib
import importlib.machinery
import json
import marshal
import sys
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

from reprobuild.errors import EnvironmentFailure
from reprobuild.evidence import EgressAttempt
from reprobuild.incontainer import program_path

READY_PREFIX = "REPROBUILD-TRAP-READY"
# When the build has ended and every process it left is killed: one JSON object follows.
BUILD_EXIT_PREFIX = "REPROBUILD-BUILD-EXIT"
# After the exit line the agent completes its log, prints this, and waits to be removed.
DONE_LINE = "REPROBUILD-TRAP-DONE"
# Between the exit line and DONE: the outputs, inline (a tar as base64 lines up to the end
# line) or a note that they are left to the engine's archive API.
OUTPUTS_PREFIX = "REPROBUILD-OUTPUTS"
OUTPUTS_END = "REPROBUILD-OUTPUTS-END"
AGENT_PYTHON = "/usr/bin/python3"
# This interpreter's ``3.N``: the agent goes in precompiled to images with the same one.
HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
# Capabilities of the agent, PID 1 of the sandbox; the build it starts keeps none (setpriv
# empties its bounding set). SETUID/SETGID to become the build's uid (and, per thread, its
# fs uid to read the build's /proc/<pid>/fd for attribution), SETPCAP to drop the bounding
# set, KILL to kill whatever the build left before the outputs are copied; NET_ADMIN only
# with the trap: addresses, routes, nftables, NFLOG. Docker's default seccomp profile opens
# extra syscalls for some capabilities (SYS_ADMIN, SYS_PTRACE, DAC_READ_SEARCH, SYS_CHROOT,
# ...): none of these five is one, so the build keeps the profile of a capless container.
SUPERVISOR_CAPS = ("SETUID", "SETGID", "SETPCAP", "KILL")
TRAP_CAPS = ("NET_ADMIN",)
# Docker disables IPv6 in "none" namespaces; the trap needs it on to see IPv6 attempts.
TRAP_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.lo.disable_ipv6": "0",
}
# Attempts, as opposed to bookkeeping lines.
ATTEMPT_KINDS = frozenset({"dns", "tcp", "http", "tls", "udp", "icmp", "other", "forged",
                           "dropped"})


@cache
def agent_source() -> str:
    """The agent's source text (what the sandbox runs, compiled or not)."""
    return program_path("trap_agent").read_text(encoding="utf-8")


_AGENT_FILENAME = "<reprobuild-trap-agent>"
_AGENT_PAYLOAD_LOCK = threading.Lock()
# The loader reads a header (kind: "m" marshalled code or "s" source, then the payload's
# length in 16 digits, then a newline) and exactly that many bytes off fd 0, unbuffered, so
# what follows on stdin (the source tar) stays for the build. It runs the agent as
# __main__ with no names of its own left in the globals.
_HEADER_BYTES = 18
_LOADER = f"""import os as _o
def _r(n):
    b = bytearray()
    while len(b) < n:
        c = _o.read(0, n - len(b))
        if not c:
            raise SystemExit("reprobuild-trap-agent: stdin ended before the agent did")
        b += c
    return bytes(b)
_h = _r({_HEADER_BYTES})
_d = _r(int(_h[1:{_HEADER_BYTES - 1}]))
_c = (__import__("marshal").loads(_d) if _h[:1] == b"m" else
      compile(_d, {_AGENT_FILENAME!r}, "exec", dont_inherit=True))
del _o, _r, _h, _d
exec(globals().pop("_c"))
"""
AGENT_COMMAND = (AGENT_PYTHON, "-I", "-S", "-c", _LOADER)
"""How a sandbox starts the agent, before :func:`agent_arguments`: a short loader that
takes the agent itself (:func:`agent_payload`) off the first bytes of stdin."""


def agent_payload(python: str | None = None) -> bytes:
    """What the host sends first on a sandbox's stdin: the agent for that image's Python
    (built once per Python version, also when both builds' threads ask at once)."""
    with _AGENT_PAYLOAD_LOCK:
        return _agent_payload(python)


@cache
def _agent_payload(python: str | None) -> bytes:
    """Build :func:`agent_payload`.

    The agent goes in on stdin (the sandbox has no host mounts), not on the command line:
    the engine stores, copies and hands on a container's command at every step, and a
    ~200 KB one cost ~70 ms of create, start, wait and remove per container here; the
    stream is only copied once. When the image's Python is this one's minor version (same
    bytecode magic), it goes in compiled: the sandbox skips compiling ~2,000 lines at
    every start, which sits between the container start and READY. Otherwise the source
    is compiled there.
    """
    if python == HOST_PYTHON:
        # The import system's own cached bytecode when it is current, else a compile.
        path = str(program_path("trap_agent"))
        code = importlib.machinery.SourceFileLoader("trap_agent", path).get_code("trap_agent")
        kind, payload = b"m", marshal.dumps(code)
    else:
        kind, payload = b"s", agent_source().encode()
    header = kind + b"%016d\n" % len(payload)
    assert len(header) == _HEADER_BYTES
    return header + payload


def prepare_in_background() -> None:
    """Pack the agent for this host's Python on a thread, so the first sandbox finds it
    ready (a few ms that would otherwise sit on the first build's path).

    The guess (the images' Python is ours) holds for the pinned bookworm images on a 3.11
    host; otherwise the work is wasted, not waited for.
    """
    threading.Thread(target=agent_payload, args=(HOST_PYTHON,), name="reprobuild-agent-pack",
                     daemon=True).start()


def agent_arguments(*, script: str, uid: int, gid: int, log_bytes: int,
                    trap: bool, outputs: str = "") -> list[str]:
    """The agent's options for one sandbox: the build it starts after READY and, with
    ``outputs``, the directory it sends back inline when it can (pure)."""
    return ["--build-uid", str(uid), "--build-gid", str(gid), "--log-bytes", str(log_bytes),
            *([] if trap else ["--no-trap"]),
            *(["--inline-outputs", outputs] if outputs else []), "--build-script", script]


@dataclass(frozen=True)
class SentOutputs:
    """What the agent said of the outputs after the build: the tar it sent inline, or
    ``None`` and why it left them to the engine."""

    tar: bytes | None
    why: str = ""


def sent_outputs(text: str) -> SentOutputs | None:
    """The agent's outputs section, once it is complete; None before (pure).

    The tar must arrive whole: its size and sha256 are in the header line, and anything
    short of that (a truncated or garbled section) is reported as not sent, so the host
    falls back to the engine's copy rather than trusting a part.
    """
    lines = iter(text.splitlines())
    for line in lines:
        if not line.startswith(OUTPUTS_PREFIX + " "):
            continue
        try:
            header = json.loads(line[len(OUTPUTS_PREFIX):])
        except json.JSONDecodeError:
            return SentOutputs(None, "unreadable outputs line from the agent")
        if not isinstance(header, dict) or header.get("inline") is not True:
            why = header.get("why") if isinstance(header, dict) else None
            return SentOutputs(None, _as_str(why) or "not sent inline")
        body: list[bytes] = []
        for chunk in lines:
            if chunk == OUTPUTS_END:
                break
            try:
                body.append(binascii.a2b_base64(chunk, strict_mode=True))
            except (binascii.Error, ValueError):
                return SentOutputs(None, "garbled inline outputs")
        else:
            return None  # not complete yet
        tar = b"".join(body)
        if len(tar) != header.get("bytes") or \
                hashlib.sha256(tar).hexdigest() != header.get("sha256"):
            return SentOutputs(None, "inline outputs do not match their header")
        return SentOutputs(tar)
    return None


@dataclass(frozen=True)
class BuildExit:
    """How the build ended, as the agent saw it (its ``REPROBUILD-BUILD-EXIT`` line)."""

    code: int | None
    stopped: bool
    leftovers: int
    output_dropped: int
    error: str | None


def build_exit(text: str) -> BuildExit | None:
    """The agent's exit line from its stdout, once it is there (pure)."""
    for line in text.splitlines():
        if line.startswith(BUILD_EXIT_PREFIX):
            try:
                data = json.loads(line[len(BUILD_EXIT_PREFIX):].strip())
            except json.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                return BuildExit(None, False, 0, 0, "unreadable exit line from the agent")
            return BuildExit(code=_as_int(data.get("code")), stopped=bool(data.get("stopped")),
                             leftovers=_as_int(data.get("leftovers")) or 0,
                             output_dropped=_as_int(data.get("output_dropped")) or 0,
                             error=_as_str(data.get("error")))
    return None


@dataclass(frozen=True)
class AgentLog:
    """The agent's log split into its handshake, attempts and errors."""

    ready: dict[str, Any] | None
    attempts: tuple[EgressAttempt, ...]
    errors: tuple[str, ...]


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_str(value: object, limit: int = 2000) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return str(value)[:limit]


def parse_agent_log(text: str, *, build: str, phase: str = "build") -> AgentLog:
    """Parse the agent's stdout: one READY line, then one JSON object per line.

    Lines that are not JSON objects are ignored (they cannot come from the build: only the
    agent writes to the container's stdout; the build's output goes to its stderr).
    """
    ready: dict[str, Any] | None = None
    attempts: list[EgressAttempt] = []
    errors: list[str] = []
    for line in text.splitlines():
        if line.startswith(READY_PREFIX):
            try:
                ready = json.loads(line[len(READY_PREFIX):].strip())
            except json.JSONDecodeError:
                ready = {}
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        kind = str(event.get("kind", ""))
        if kind == "error":
            errors.append(_as_str(event.get("detail")) or "unknown trap error")
            continue
        if kind not in ATTEMPT_KINDS:
            continue
        attempts.append(EgressAttempt(
            build=build, phase=phase, kind=kind, proto=_as_str(event.get("proto")),
            family=_as_int(event.get("family")), dst=_as_str(event.get("dst")),
            dport=_as_int(event.get("dport")), name=_as_str(event.get("name")),
            qtype=_as_str(event.get("qtype")), detail=_as_str(event.get("detail")),
            uid=_as_int(event.get("uid")), pid=_as_int(event.get("pid")),
            exe=_as_str(event.get("exe")), cmdline=_as_str(event.get("cmdline")),
            forged=bool(event.get("forged")) or kind == "forged",
            count=_as_int(event.get("count")),
            time=float(event["time"]) if isinstance(event.get("time"), int | float) else None))
    return AgentLog(ready=ready, attempts=tuple(attempts), errors=tuple(errors))


def ready_line(text: str) -> str | None:
    """The READY line, if the agent has printed it yet."""
    for line in text.splitlines():
        if line.startswith(READY_PREFIX):
            return line
    return None


def require_ready(text: str, *, exited: bool, what: str = "the egress trap") -> bool:
    """True once READY is there; raise if the agent gave up (the build must not start)."""
    if ready_line(text) is not None:
        return True
    if exited:
        log = parse_agent_log(text, build="?")
        reason = log.errors[-1] if log.errors else (text.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentFailure(f"{what} did not come up: {reason[:300]}",
                                 "the build was not started (fail closed); rerun with --debug "
                                 "or check that the engine allows NET_ADMIN for containers")
    return False
