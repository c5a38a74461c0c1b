"""One fetch container run with its allow-list proxy; removes everything it made.

The fetch container has no network at all (``network_mode=none``: no DNS, no route to
the host or other containers). A relay inside it (:mod:`reprobuild.incontainer.fetch_proxy`,
``relay`` mode) pipes ``127.0.0.1:3128`` to a unix socket on a shared volume, where the
trusted proxy container (default bridge, ``proxy`` mode) allows ``host:port`` pairs of the
ecosystem's registries only, refuses the rest with 403 *without resolving or
connecting*, and logs every request as a JSON line. An ``--internal`` network was
rejected: containers on it can still reach services bound on the host.

What runs in the container is the ecosystem's: its command and its tool's settings
(:class:`~reprobuild.ecosystems.interface.Ecosystem`); this module owns the containers,
the relay and the copy of ``/deps`` back out through the safe extractor.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from reprobuild.archive import (
    ExtractedFile,
    ExtractLimits,
    chunk_reader,
    extract_regular_files,
    files_tar,
)
from reprobuild.ecosystems.interface import DEPS_DIR, FetchJob, FetchPlan
from reprobuild.errors import EnvironmentFailure, Interrupted
from reprobuild.evidence import FetchRequest
from reprobuild.fetch.proxylog import parse_proxy_log, proxy_source
from reprobuild.images import ToolchainImage
from reprobuild.progress import Progress
from reprobuild.sandbox.engine import (
    RunLabels,
    start_with_stdin,
    translate_docker_errors,
    wait_or_kill,
)
from reprobuild.sandbox.hardening import Hardening, container_config, tmpfs_options

__all__ = ["DEFAULT_TIMEOUT_S", "FetchLimits", "Outcome", "Runner", "fetch_env",
           "fetch_script", "input_tar", "script_head"]

DEFAULT_TIMEOUT_S = 900.0
FETCH_UID = 1000
PROXY_UID = 65534
RELAY_PORT = 3128
_SOCKET_DIR = "/run/reprobuild-proxy"
_SOCKET = f"{_SOCKET_DIR}/proxy.sock"
_WORK = "/work"
_CA_FILE = f"{_WORK}/ca.pem"
_PROXY_READY_S = 30.0
_KILL_GRACE_S = 10
_PROXY_PIDS = 300  # the proxy serves at most 256 connections, one thread each
MiB = 1024 * 1024


@dataclass(frozen=True)
class FetchLimits:
    """Resources of the fetch container and caps on what comes out of it."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = 4096
    pids: int = 512
    work_mb: int = 4096
    deps_mb: int = 4096
    max_files: int = 200_000
    max_file_mb: int = 1024


@dataclass(frozen=True)
class Outcome:
    """How one fetch container run went, and what it left (staged on the host)."""

    exit_code: int | None
    timed_out: bool
    log: str
    requests: tuple[FetchRequest, ...]
    files: tuple[ExtractedFile, ...]
    staging: Path


def proxy_network(allow_list: Sequence[tuple[str, int]]) -> str:
    """Where the proxy container lives: the default bridge, which reaches the internet and
    not the host's loopback; or, for a job whose allow-list is only ``localhost`` (a
    registry a test serves on this machine's loopback), the host's network namespace."""
    if allow_list and all(host == "localhost" for host, _ in allow_list):
        return "host"
    return "bridge"


def script_head() -> str:
    """Unpack the inputs from stdin, start the relay and wait for it; then cd to the inputs."""
    relay = (f"/usr/bin/python3 -I -S {_WORK}/fetch_proxy.py relay {RELAY_PORT} {_SOCKET} "
             "> /tmp/relay.out 2>&1 &")
    return f"""set -eu
umask 022
tar -x -f - -C {_WORK}
{relay}
i=0
until grep -q ready /tmp/relay.out 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 400 ]; then
        echo "reprobuild: the proxy relay did not start" >&2; cat /tmp/relay.out >&2; exit 90
    fi
    sleep 0.05
done
cd {_WORK}/src
"""


def fetch_script(ecosystem: FetchJob, plan: FetchPlan) -> str:
    """The fetch container's whole shell script (the ecosystem's command runs last)."""
    return script_head() + ecosystem.fetch_command(plan)


def fetch_env(ecosystem: FetchJob, plan: FetchPlan, path_env: str, *,
              has_ca: bool) -> dict[str, str]:
    """The fetch container's environment: proxy through the relay, CA, quiet tools."""
    proxy = f"http://127.0.0.1:{RELAY_PORT}"
    env = {"PATH": path_env or "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/fetch",
           "LANG": "C.UTF-8", "TZ": "UTC", "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy,
           "https_proxy": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
    return env | ecosystem.fetch_env(plan, proxy=proxy, ca_file=_CA_FILE if has_ca else None)


def input_tar(plan: FetchPlan, ca: bytes | None) -> bytes:
    """What the fetch container gets on stdin: the relay, the CA, the planned files only."""
    files: dict[str, bytes] = {"fetch_proxy.py": proxy_source().encode()}
    if ca is not None:
        files["ca.pem"] = ca
    for path, data in plan.files:
        files[f"src/{path}"] = data
    return files_tar(files)


class Runner:
    """One fetch container run with its proxy; removes everything it made."""

    def __init__(self, client: docker.DockerClient, labels: RunLabels, cancel: threading.Event,
                 progress: Progress, limits: FetchLimits) -> None:
        self.client = client
        self.api = client.api
        self.labels = labels
        self.cancel = cancel
        self.progress = progress
        self.limits = limits
        self.name = f"reprobuild-{labels.run_id}-fetch"
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def run(self, ecosystem: FetchJob, plan: FetchPlan, toolchain: ToolchainImage,
            ca: bytes | None, staging: Path) -> Outcome:
        """Fetch into the deps volume, copy it to ``staging``; always cleans up."""
        try:
            with translate_docker_errors("the fetch phase", image=toolchain.tag,
                                         cancel=self.cancel):
                return self._run(ecosystem, plan, toolchain, ca, staging)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove our containers, then our volumes; never raises."""
        for cid in reversed(self.containers):
            with contextlib.suppress(docker.errors.DockerException):
                self.api.remove_container(cid, force=True, v=True)
        self.containers.clear()
        for name in self.volumes:
            with contextlib.suppress(docker.errors.DockerException):
                self.client.volumes.get(name).remove(force=True)
        self.volumes.clear()

    def _volume(self, suffix: str, uid: int, size_mb: int) -> str:
        name = f"{self.name}-{suffix}"
        self.client.volumes.create(
            name=name, driver="local",
            driver_opts={"type": "tmpfs", "device": "tmpfs",
                         "o": f"size={size_mb}m,uid={uid},gid={uid},mode=0755"},
            labels=self.labels.for_role(f"fetch-{suffix}"))
        self.volumes.append(name)
        return name

    def _run(self, ecosystem: FetchJob, plan: FetchPlan, toolchain: ToolchainImage,
             ca: bytes | None, staging: Path) -> Outcome:
        socket_volume = self._volume("socket", PROXY_UID, 1)
        deps_volume = self._volume("deps", FETCH_UID, self.limits.deps_mb)
        proxy_id = self._start_proxy(ecosystem, toolchain, socket_volume, deps_volume)
        fetch_id = self._create_fetch(ecosystem, plan, toolchain, socket_volume, deps_volume,
                                      has_ca=ca is not None)
        self.progress.detail("fetch container started (network only through the proxy)")
        exit_code, timed_out = self._start_and_wait(fetch_id, input_tar(plan, ca))
        log = self.api.logs(fetch_id, stdout=True, stderr=True).decode("utf-8", "replace")
        self.api.remove_container(fetch_id, force=True)
        self.containers.remove(fetch_id)
        files: tuple[ExtractedFile, ...] = ()
        if exit_code == 0 and not timed_out:
            chunks, _stat = self.api.get_archive(proxy_id, f"{DEPS_DIR}/.")
            reader = chunk_reader(chunks)
            limits = ExtractLimits(max_files=self.limits.max_files,
                                   max_file_bytes=self.limits.max_file_mb * MiB,
                                   max_total_bytes=self.limits.deps_mb * MiB)
            extracted = extract_regular_files(reader, staging, limits, strip_prefix=".")
            files = tuple(extracted)
        with contextlib.suppress(docker.errors.DockerException):
            self.api.kill(proxy_id, signal="SIGTERM")
            self.api.wait(proxy_id, timeout=_KILL_GRACE_S)
        proxy_log = self.api.logs(proxy_id, stdout=True, stderr=False).decode("utf-8", "replace")
        return Outcome(exit_code, timed_out, log, parse_proxy_log(proxy_log), files, staging)

    def _start_proxy(self, ecosystem: FetchJob, toolchain: ToolchainImage,
                     socket_volume: str, deps_volume: str) -> str:
        allow = ",".join(f"{h}:{p}" for h, p in ecosystem.allow_list)
        hardening = Hardening(
            network_mode=proxy_network(ecosystem.allow_list),
            tmpfs={"/tmp": tmpfs_options(16, mode=None)},
            volumes={socket_volume: (_SOCKET_DIR, "rw"), deps_volume: (DEPS_DIR, "ro")},
            pids=_PROXY_PIDS, memory_mb=256, log_mb=20)
        config = container_config(
            self.api, toolchain.image_id,
            ["/usr/bin/python3", "-I", "-S", "-c", proxy_source(), "proxy", _SOCKET, allow],
            hardening=hardening, labels=self.labels.for_role("fetch-proxy"),
            user=f"{PROXY_UID}:{PROXY_UID}")
        created = self.api.create_container_from_config(  # type: ignore[no-untyped-call]
            config, name=f"{self.name}-proxy")
        proxy_id: str = created["Id"]
        self.containers.append(proxy_id)
        self.api.start(proxy_id)
        deadline = time.monotonic() + _PROXY_READY_S
        while True:
            if self.cancel.is_set():
                raise Interrupted("interrupted; removed the fetch containers")
            text = self.api.logs(proxy_id, stdout=True, stderr=True).decode("utf-8", "replace")
            if '"event": "ready"' in text:
                return proxy_id
            state = self.api.inspect_container(proxy_id)["State"]
            if not state.get("Running") or time.monotonic() > deadline:
                raise EnvironmentFailure(
                    "the fetch proxy did not start: " + (text.strip().splitlines() or
                                                         ["(no output)"])[-1][:300],
                    "nothing was fetched (fail closed); see 'docker info'")
            time.sleep(0.05)

    def _create_fetch(self, ecosystem: FetchJob, plan: FetchPlan, toolchain: ToolchainImage,
                      socket_volume: str, deps_volume: str, *, has_ca: bool) -> str:
        limits = self.limits
        uid = FETCH_UID
        hardening = Hardening(
            network_mode="none",
            tmpfs={_WORK: tmpfs_options(limits.work_mb, uid=uid, gid=uid),
                   "/tmp": tmpfs_options(256, uid=uid, gid=uid),
                   "/home/fetch": tmpfs_options(256, uid=uid, gid=uid)},
            volumes={deps_volume: (DEPS_DIR, "rw"), socket_volume: (_SOCKET_DIR, "ro")},
            pids=limits.pids, memory_mb=limits.memory_mb, log_mb=10)
        config = container_config(
            self.api, toolchain.image_id, ["/bin/sh", "-c", fetch_script(ecosystem, plan)],
            hardening=hardening, labels=self.labels.for_role("fetch"), user=f"{uid}:{uid}",
            environment=fetch_env(ecosystem, plan, toolchain.path_env, has_ca=has_ca),
            stdin=True)
        created = self.api.create_container_from_config(  # type: ignore[no-untyped-call]
            config, name=f"{self.name}-worker")
        fetch_id: str = created["Id"]
        self.containers.append(fetch_id)
        return fetch_id

    def _start_and_wait(self, fetch_id: str, stdin: bytes) -> tuple[int | None, bool]:
        deadline = time.monotonic() + self.limits.timeout_s
        start_with_stdin(self.api, fetch_id, stdin, send_timeout_s=60)
        return wait_or_kill(self.api, fetch_id, deadline=deadline, cancel=self.cancel,
                            interrupted="interrupted; removed the fetch containers")
