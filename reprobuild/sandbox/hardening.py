"""The one hardening baseline every container reprobuild creates starts from.

Three kinds of container run here: the build (and diffoscope) sandbox, the fetch phase's
worker and proxy, and the image build steps. Each used to write its own host config; now
each states only what it *needs* (a network mode, capabilities to add back, writable
tmpfs paths, mounts, limits) and this module adds everything else, the same way for all:

* every capability dropped (``cap_drop=ALL``), only the listed ones added back;
* ``no-new-privileges`` and Docker's default seccomp profile (never ``unconfined``);
* a read-only root filesystem unless the step commits its filesystem as an image;
* size-limited tmpfs mounts, ``nosuid,nodev`` always;
* pids, memory (swap equal to memory: no swap) and optional CPU limits;
* no core dumps, a bounded number of open files, a private IPC namespace;
* a size-capped json-file log, so neither disk nor the evidence channel can be flooded;
* the labels of the run that owns it (:class:`~reprobuild.sandbox.engine.RunLabels`), so
  it is removed by its run and swept if that run is killed.

Nothing here talks to the engine: the functions build the API's request bodies, so the
baseline is unit-tested without Docker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.types import LogConfig, Ulimit

__all__ = ["Hardening", "container_config", "host_config", "tmpfs_options"]

MiB = 1024 * 1024
DEFAULT_SECURITY_OPT = ("no-new-privileges:true",)


@dataclass(frozen=True, kw_only=True)
class Hardening:
    """What one container needs beyond the baseline; the baseline itself is not optional."""

    network_mode: str = "none"
    cap_add: tuple[str, ...] = ()
    read_only: bool = True
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    volumes: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Named volumes: volume name -> (mount point, ``"ro"`` or ``"rw"``)."""
    pids: int = 512
    memory_mb: int = 2048
    cpus: float | None = None
    cpuset: str | None = None
    log_mb: int = 10
    nofile: int = 4096
    sysctls: Mapping[str, str] | None = None


def tmpfs_options(size_mb: int, *, uid: int | None = None, gid: int | None = None,
                  exec_: bool = False, mode: str | None = "0755") -> str:
    """Mount options for one tmpfs: always ``nosuid,nodev``; ``exec`` only when asked."""
    parts = [f"size={size_mb}m", "exec" if exec_ else "noexec", "nosuid", "nodev"]
    if uid is not None:
        parts.append(f"uid={uid}")
    if gid is not None:
        parts.append(f"gid={gid}")
    if mode is not None:  # None: tmpfs's own default, 1777 (a shared /tmp)
        parts.append(f"mode={mode}")
    return ",".join(parts)


def host_config(api: docker.APIClient, hardening: Hardening) -> dict[str, Any]:
    """The engine's HostConfig for ``hardening`` on top of the baseline."""
    binds: dict[str, Mapping[str, str]] = {
        name: {"bind": target, "mode": mode} for name, (target, mode) in hardening.volumes.items()}
    config: dict[str, Any] = api.create_host_config(
        network_mode=hardening.network_mode,
        cap_drop=["ALL"],
        cap_add=list(hardening.cap_add) or None,
        security_opt=list(DEFAULT_SECURITY_OPT),
        read_only=hardening.read_only,
        tmpfs=dict(hardening.tmpfs) or None,
        binds=binds or None,
        sysctls=dict(hardening.sysctls) if hardening.sysctls else None,
        pids_limit=hardening.pids,
        mem_limit=f"{hardening.memory_mb}m",
        memswap_limit=f"{hardening.memory_mb}m",
        nano_cpus=int(hardening.cpus * 1e9) if hardening.cpus else None,
        cpuset_cpus=hardening.cpuset,
        ulimits=[Ulimit(name="core", soft=0, hard=0),
                 Ulimit(name="nofile", soft=hardening.nofile, hard=hardening.nofile)],
        log_config=LogConfig(type=LogConfig.types.JSON,
                             config={"max-size": f"{hardening.log_mb}m", "max-file": "1"}),
        ipc_mode="private",
    )
    return config


def container_config(api: docker.APIClient, image: str, command: Sequence[str], *,
                     hardening: Hardening, labels: Mapping[str, str], user: str,
                     environment: Mapping[str, str] | None = None, working_dir: str = "/",
                     hostname: str | None = None, domainname: str | None = None,
                     stdin: bool = False) -> dict[str, Any]:
    """A full create-container request: the command, who runs it, and the hardened host.

    ``stdin`` opens stdin for one attach and closes it when the sender is done
    (``StdinOnce``, which the SDK's models API does not expose): how sources go in
    without a host mount or the archive API.
    """
    config: dict[str, Any] = api.create_container_config(
        image, list(command), user=user, working_dir=working_dir, hostname=hostname,
        domainname=domainname, stdin_open=stdin,
        environment=dict(environment) if environment is not None else None,
        labels=dict(labels),
        host_config=host_config(api, hardening))  # type: ignore[arg-type]  # stubs: HostConfig is a dict
    if stdin:
        config["StdinOnce"] = True
    return config
