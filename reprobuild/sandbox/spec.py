"""What one sandboxed run is and what came out of it: plain records, no Docker.

:mod:`.container` runs a :class:`SandboxSpec`; planners (the pipeline, diffoscope) build
specs without touching the engine, so they are unit-tested and cheap to import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from reprobuild.archive import ExtractedFile
from reprobuild.evidence import EgressAttempt

__all__ = ["OUT_DIR", "SandboxLimits", "SandboxResult", "SandboxSpec", "host_cpus"]

OUT_DIR = "/out"
"""Where a sandboxed run writes its outputs (a size-limited tmpfs volume)."""
MiB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one untrusted container; defaults suit a 2-core, 8 GiB+ machine."""

    timeout_s: float = 1800.0
    memory_mb: int = 4096
    pids: int = 1024
    cpus: float | None = None
    workspace_mb: int = 2048
    tmp_mb: int = 1024
    output_mb: int = 1024
    log_bytes: int = 10 * MiB
    max_output_files: int = 10_000


@dataclass(frozen=True)
class SandboxSpec:
    """Everything needed to run one piece of untrusted work."""

    role: str
    image: str
    script: str
    uid: int
    gid: int
    hostname: str
    domainname: str
    writable: tuple[str, ...]
    stdin: bytes
    cpuset: str | None = None
    stdin_files: tuple[Path, ...] = ()
    """Host files streamed onto stdin after ``stdin``, as they are (the fetched deps
    archive): read a chunk at a time, never held in memory."""
    stdin_tar: tuple[tuple[str, Path], ...] = ()
    """Host files streamed onto stdin last, as one tar of ``(name in the tar, path)``
    (diffoscope's two artifacts): however large, the host holds a chunk at a time."""
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    # Run the egress trap around the work (builds); False: the agent only supervises.
    trap: bool = False
    # The image's Python ("3.11"), so the trap agent can go in precompiled when it matches.
    image_python: str | None = None


@dataclass(frozen=True)
class SandboxResult:
    """What came out of one sandboxed run."""

    role: str
    exit_code: int | None
    timed_out: bool
    duration_s: float
    log_path: Path
    output_dir: Path
    outputs: tuple[ExtractedFile, ...]
    egress: tuple[EgressAttempt, ...] = ()
    leftovers: int = 0
    """Processes the build left running when it exited (the agent killed them)."""
    output_dropped: int = 0
    """Bytes of the build's output the log cap left out."""


def host_cpus() -> int:
    """CPUs this process may use (its cpuset, not the machine's): what the cpus variation
    needs more than one of, and what bounds concurrent image builds."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
