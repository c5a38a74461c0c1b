"""Capture on the host while malicious builds run, to prove none of their packets leave.

The filter names the exact attack destinations, never whole documentation ranges: on some
machines (this workplace's among them) the host's own address and the registries' resolved
addresses are themselves in 192.0.2.0/24 or 203.0.113.0/24, and a range filter would catch
ordinary traffic. A control datagram on the host's loopback, sent at start and stop,
proves the capture was really running.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

CONTROL = b"reprobuild-capture-control"
# What the trap hands out (fake answers) must never appear outside the sandbox either.
FAKE_RANGES = ("net 198.18.0.0/15", "net fd00:7e57::/32")


class HostCapture:
    """tcpdump on every host interface for the given hosts, fake ranges and DNS."""

    def __init__(self, path: Path, hosts: Iterable[str]) -> None:
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None or os.geteuid() != 0:
            raise AssertionError("host capture needs tcpdump and root (scripts/setup.sh)")
        self.path = path
        self.tcpdump = tcpdump
        parts = [f"host {h}" for h in hosts] + list(FAKE_RANGES)
        parts += ["port 53", "(host 127.0.0.1 and udp port 9)"]
        self.proc = subprocess.Popen(
            [tcpdump, "-i", "any", "-n", "--immediate-mode", "-U", "-w", str(path),
             " or ".join(parts)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.stderr = b""
        deadline = time.monotonic() + 10
        while b"listening" not in self.stderr and time.monotonic() < deadline:
            with contextlib.suppress(TypeError):
                self.stderr += self.proc.stderr.read() or b""
            if self.proc.poll() is not None:
                raise AssertionError(f"tcpdump failed: {self.stderr!r}")
            time.sleep(0.1)
        self.control()

    @staticmethod
    def control() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(CONTROL, ("127.0.0.1", 9))

    def stop(self) -> str:
        """Stop tcpdump (our own child) and return the packets as text (``-A``)."""
        self.control()
        time.sleep(0.2)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=10)
        assert self.proc.stderr is not None
        with contextlib.suppress(TypeError):
            self.stderr += self.proc.stderr.read() or b""
        self.proc.stderr.close()
        shown = subprocess.run([self.tcpdump, "-n", "-r", str(self.path), "-A"],
                               capture_output=True, text=True, check=False)
        return shown.stdout


def leaks(packets: str, hosts: Iterable[str], names: Iterable[str]) -> list[str]:
    """Lines of a capture that mention an attack host, a fake address or an attack name.

    Also asserts both control datagrams were captured (the capture really ran).
    """
    assert packets.count(CONTROL.decode()) == 2, packets[-2000:]
    patterns = [re.escape(h) + r"(?![0-9a-fA-F])" for h in hosts]
    patterns += [r"198\.1[89]\.", r"fd00:7e57"] + [re.escape(n) for n in names]
    found = re.compile("|".join(patterns))
    return [line for line in packets.splitlines() if found.search(line)]
