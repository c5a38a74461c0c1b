"""``reprobuild doctor``: is this machine fit to check builds, and if not, what to fix.

Each check is one :class:`Finding` (ok, warn or fail, a line saying what was seen, a hint
when something is to be done). The pure checks (what the engine's ``info`` says about
cgroup limits and the cpuset, free disk, the CA bundle) are functions of their input, so
they are unit-tested without an engine; :func:`run_doctor` gathers them. Never prints.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from reprobuild import images
from reprobuild.errors import EnvironmentFailure

__all__ = ["MIN_FREE_BYTES", "Finding", "Status", "ca_bundle", "cgroups", "disk",
           "run_doctor"]

MIN_FREE_BYTES = 5 << 30
"""Below this, the cache (dependency archives, image wheels) and the builds' evidence run
out of room soon: a check of a Node server writes a few hundred MB."""


class Status(Enum):
    """How one check came out."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One check: what it is about, how it went, what was seen, what to do."""

    check: str
    status: Status
    detail: str
    hint: str = ""


_LIMITS = (("MemoryLimit", "memory"), ("PidsLimit", "pids"), ("CpuCfsQuota", "CPU quota"))


def cgroups(info: Mapping[str, Any], *, host_cpus: int) -> list[Finding]:
    """What the engine's ``info`` says about the limits every sandbox relies on."""
    missing = [what for key, what in _LIMITS if not info.get(key)]
    version = info.get("CgroupVersion") or "?"
    found = [Finding("cgroup limits", Status.FAIL,
                     f"the engine cannot enforce {', '.join(missing)} limits "
                     f"(cgroup v{version})",
                     "enable the cgroup controllers (memory, pids, cpu) for the engine; "
                     "without them a build can exhaust the machine")
             if missing else
             Finding("cgroup limits", Status.OK,
                     f"memory, pids and CPU quota enforced (cgroup v{version}, "
                     f"{info.get('CgroupDriver') or '?'} driver)")]
    if not info.get("CPUSet"):
        found.append(Finding("cpuset", Status.WARN, "the engine cannot pin containers to CPUs",
                             "the 'cpus' variation is skipped; enable the cpuset controller"))
    elif host_cpus < 2:
        found.append(Finding("cpuset", Status.WARN,
                             f"{host_cpus} CPU available: the 'cpus' variation needs two",
                             "run on a machine (or a CI runner) with at least two CPUs"))
    else:
        found.append(Finding("cpuset", Status.OK, f"pinning available, {host_cpus} CPUs"))
    for warning in info.get("Warnings") or ():
        found.append(Finding("engine", Status.WARN, str(warning)))
    return found


def disk(where: Path, *, minimum: int = MIN_FREE_BYTES) -> Finding:
    """Free space where the cache lives (its nearest existing parent)."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    detail = f"{free / (1 << 30):.1f} GiB free for the cache at {where}"
    if free < minimum:
        return Finding("disk", Status.WARN, detail,
                       "free some space, or run 'reprobuild cache prune'")
    return Finding("disk", Status.OK, detail)


def ca_bundle(path: Path | None) -> Finding:
    """The CA bundle handed to the fetch phase: none, or a readable PEM bundle."""
    if path is None:
        return Finding("CA bundle", Status.OK, "none set: registries must present "
                       "certificates the images trust (set REPROBUILD_CA_CERT behind an "
                       "intercepting proxy)")
    try:
        context = ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Finding("CA bundle", Status.FAIL, f"{path} is not a readable PEM CA bundle: "
                       f"{getattr(exc, 'strerror', None) or exc}",
                       "point REPROBUILD_CA_CERT (or --ca-cert) at a PEM file")
    count = context.cert_store_stats().get("x509_ca", 0)
    if not count:
        return Finding("CA bundle", Status.FAIL, f"{path} holds no CA certificate",
                       "point REPROBUILD_CA_CERT (or --ca-cert) at a PEM file of CAs")
    return Finding("CA bundle", Status.OK, f"{path}: {count} CA certificate(s)")


def run_doctor(*, ca_cert: Path | None) -> list[Finding]:
    """Every check, in the order a reader fixes them (the engine first)."""
    from reprobuild.pipeline.plan import host_cpus  # noqa: PLC0415 - a pure helper
    from reprobuild.sandbox.engine import connect, engine_warnings  # noqa: PLC0415

    found = [ca_bundle(ca_cert), disk(images.cache_root())]
    try:
        client = connect()
    except EnvironmentFailure as exc:
        return [Finding("engine", Status.FAIL, exc.message, exc.hint or ""), *found]
    version = str(client.version().get("Version", "?"))
    old = engine_warnings(client, always=True)
    engine = [Finding("engine", Status.WARN, old[0], "upgrade the Docker Engine")] if old \
        else [Finding("engine", Status.OK, f"Docker Engine {version}")]
    return [*engine, *cgroups(client.info(), host_cpus=host_cpus()), *found,
            *_images(client)]


def _images(client: Any) -> list[Finding]:
    from reprobuild.images import build  # noqa: PLC0415 - the Docker side

    built = {info.name for info in build.list_images(client) if info.current}
    missing = [name for name in sorted(images.toolchain_names()) if name not in built]
    if missing:
        return [Finding("images", Status.WARN,
                        f"not built for the current definitions: {', '.join(missing)}",
                        "they are built on first use; 'reprobuild images build' builds "
                        "them now")]
    return [Finding("images", Status.OK, f"all {len(built)} toolchain images current")]

