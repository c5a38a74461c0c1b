"""Run untrusted work (a build, diffoscope) in a hardened, network-less container pair.

Each run uses two containers and one volume, all labelled with the run id:

* the **warden**, trusted, owns the network namespace (only ``lo``), the UTS namespace
  (hostname and domain name) and holds the output volume mounted, so the volume's tmpfs
  outlives the untrusted container. For builds it runs the egress trap
  (:mod:`reprobuild.trap_agent`), and the source (so any untrusted code) goes in only
  after the trap said READY;
  for diffoscope it just sleeps;
* the **worker**, untrusted, joins the warden's network (and, with the trap, pid)
  namespace (if the warden is gone, Docker refuses to create it: the sandbox fails
  closed), runs as a non-root uid with no
  capabilities, ``no-new-privileges``, the default seccomp profile, a read-only root,
  size-limited tmpfs for its workspace, ``/tmp`` and ``HOME``, and pids/memory/CPU limits;
* the **output volume** is a size-limited tmpfs mounted at ``/out``.

The source goes in as a tar on the worker's stdin (no host mounts, no archive API on an
untrusted container). Outputs come out only after the worker has stopped and been removed,
from the trusted warden, through :func:`reprobuild.archive.extract_regular_files`, which
refuses links, absolute or ``..`` paths, devices and oversize content.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig, Ulimit

from reprobuild import trap
from reprobuild.archive import ExtractedFile, ExtractLimits, chunk_reader, extract_regular_files
from reprobuild.engine import RunLabels, start_with_stdin, translate_docker_errors, wait_or_kill
from reprobuild.errors import EnvironmentFailure, Interrupted
from reprobuild.trap import EgressAttempt

OUT_DIR = "/out"
_KILL_GRACE_S = 10
_TRAP_READY_S = 60.0
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
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    # Run the egress trap in the warden (builds); False keeps an idle warden (diffoscope).
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
    trap_ready: dict[str, Any] | None = None


class _AgentStream:
    """Follows the trap agent's stdout as the engine delivers it (about a millisecond
    late), so READY and DONE are seen at once instead of by polling the log."""

    def __init__(self, api: docker.APIClient, warden_id: str) -> None:
        self._api = api
        self._stream = api.logs(warden_id, stdout=True, stderr=False, stream=True,
                                follow=True)
        self._chunks: list[bytes] = []
        self._changed = threading.Condition()
        self.ended = False
        threading.Thread(target=self._pump, name="trap-log", daemon=True).start()

    def _pump(self) -> None:
        try:
            # The connection drops when the warden is removed: that is the end, not an error.
            with contextlib.suppress(Exception):
                for chunk in self._stream:
                    with self._changed:
                        self._chunks.append(chunk)
                        self._changed.notify_all()
        finally:
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    def text(self) -> str:
        with self._changed:
            return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, marker: str, timeout: float) -> bool:
        """True once a line starting with ``marker`` arrived; False at EOF or timeout."""
        deadline = time.monotonic() + timeout
        needle = marker.encode()
        with self._changed:
            while True:
                data = b"".join(self._chunks)
                if data.startswith(needle) or b"\n" + needle in data:
                    return True
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    return False
                self._changed.wait(left)

    def finish(self, warden_id: str) -> None:
        """Send the agent SIGUSR1 ("the build is over") without waiting for the engine."""

        def signal_agent() -> None:
            with contextlib.suppress(docker.errors.DockerException):
                self._api.kill(warden_id, signal="SIGUSR1")

        threading.Thread(target=signal_agent, name="trap-finish", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


class Sandbox:
    """Runs :class:`SandboxSpec` objects for one reprobuild run; thread-safe per spec."""

    def __init__(self, client: docker.DockerClient, labels: RunLabels,
                 cancel: threading.Event | None = None) -> None:
        self._client = client
        self._labels = labels
        self._cancel = cancel or threading.Event()

    def run(self, spec: SandboxSpec, *, output_dir: Path, log_path: Path) -> SandboxResult:
        """Run ``spec`` to completion or timeout; always removes what it created."""
        api = self._client.api
        name = f"reprobuild-{self._labels.run_id}-{spec.role}"
        volume_name = f"{name}-out"
        warden_id: str | None = None
        worker_id: str | None = None
        agent: _AgentStream | None = None
        started = time.monotonic()
        try:
            with translate_docker_errors(f"the {spec.role} sandbox", image=spec.image,
                                         cancel=self._cancel):
                self._client.volumes.create(
                    name=volume_name, driver="local",
                    driver_opts={"type": "tmpfs", "device": "tmpfs",
                                 "o": f"size={spec.limits.output_mb}m,uid={spec.uid},"
                                      f"gid={spec.gid},mode=0755"},
                    labels=self._labels.for_role(f"{spec.role}-out"))
                warden_id = self._create_warden(spec, name, volume_name)
                # The engine lets the worker be created against a warden that is not
                # running yet, so that happens while the warden starts.
                with concurrent.futures.ThreadPoolExecutor(1, "reprobuild-warden") as pool:
                    starting = pool.submit(api.start, warden_id)
                    try:
                        worker_id = self._create_worker(spec, name, volume_name, warden_id)
                    finally:
                        starting.result()
                if spec.trap:
                    agent = _AgentStream(api, warden_id)
                exit_code, timed_out = self._start_and_wait(spec, worker_id, warden_id,
                                                            agent)
                duration = time.monotonic() - started
                if agent is not None:
                    # Every build process is gone (the engine kills the worker's cgroup
                    # when its first process exits): the agent completes its log while
                    # we copy, and keeps the namespace and the volume up until removed.
                    agent.finish(warden_id)
                log: bytes = api.logs(worker_id, stdout=True, stderr=True)
                # The worker is stopped; remove it before reading its outputs so nothing
                # untrusted runs while we copy.
                api.remove_container(worker_id, force=True)
                worker_id = None
                outputs: tuple[ExtractedFile, ...] = ()
                if not timed_out:
                    outputs = self._collect(warden_id, output_dir, spec.limits)
                # The json-file log driver already caps the log; keep its tail.
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_path.write_bytes(log[-spec.limits.log_bytes:])
                trap_log = self._finish_trap(warden_id, spec, agent) if agent else None
                return SandboxResult(role=spec.role, exit_code=exit_code, timed_out=timed_out,
                                     duration_s=duration, log_path=log_path,
                                     output_dir=output_dir, outputs=outputs,
                                     egress=trap_log.attempts if trap_log else (),
                                     trap_ready=trap_log.ready if trap_log else None)
        finally:
            if agent is not None:
                agent.close()
            for cid in (worker_id, warden_id):
                if cid is not None:
                    with contextlib.suppress(docker.errors.DockerException):
                        api.remove_container(cid, force=True, v=True)
            with contextlib.suppress(docker.errors.DockerException):
                api.remove_volume(volume_name, force=True)

    def _create_warden(self, spec: SandboxSpec, name: str, volume: str) -> str:
        """Create the trusted namespace owner: the egress trap, or an idle ``sleep``.

        With the trap, the source is handed to the worker only after the agent printed
        READY (its rules are in place and self-tested; see :meth:`_start_and_wait`); if it
        never does, no untrusted code ever runs: the sandbox fails closed.
        """
        api = self._client.api
        common: dict[str, Any] = {
            "network_mode": "none", "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"], "read_only": True,
            "binds": {volume: {"bind": OUT_DIR, "mode": "ro"}},
        }
        if spec.trap:
            host_config = api.create_host_config(
                **common, cap_add=list(trap.WARDEN_CAPS), sysctls=trap.WARDEN_SYSCTLS,
                tmpfs={"/tmp": "size=16m,noexec,nosuid,nodev", "/run": "size=1m,noexec"},
                pids_limit=64, mem_limit="256m", memswap_limit="256m",
                log_config=LogConfig(type=LogConfig.types.JSON,
                                     config={"max-size": "50m", "max-file": "1"}))
            command, user = trap.agent_command(spec.image_python), "0:0"
        else:
            host_config = api.create_host_config(
                **common, pids_limit=8, mem_limit="64m", memswap_limit="64m",
                log_config=LogConfig(type=LogConfig.types.NONE))
            command, user = ["sleep", "infinity"], f"{spec.uid}:{spec.gid}"
        created = api.create_container(
            spec.image, command=command, name=f"{name}-warden", user=user,
            hostname=spec.hostname, domainname=spec.domainname,
            labels=self._labels.for_role(f"{spec.role}-warden"), host_config=host_config)
        warden_id: str = created["Id"]
        return warden_id

    def _await_trap(self, warden_id: str, agent: _AgentStream) -> None:
        """Wait for the agent's READY line; raise if it exits or takes too long."""
        deadline = time.monotonic() + _TRAP_READY_S
        while not agent.wait_for(trap.READY_PREFIX, 0.1):
            if self._cancel.is_set():
                raise Interrupted("interrupted; removed this run's containers")
            if agent.ended:
                # Gone without READY: say why (its error event, or a traceback on stderr).
                text = self._client.api.logs(warden_id, stdout=True, stderr=True)
                trap.require_ready(text.decode(errors="replace"), exited=True)
                raise EnvironmentFailure("the egress trap exited before it was ready",
                                         "the build was not started (fail closed)")
            if time.monotonic() > deadline:
                raise EnvironmentFailure(
                    f"the egress trap was not ready after {_TRAP_READY_S:.0f}s",
                    "the build was not started (fail closed); is the machine overloaded?")

    def _finish_trap(self, warden_id: str, spec: SandboxSpec,
                     agent: _AgentStream) -> trap.AgentLog:
        """Wait for the agent's DONE (it was sent SIGUSR1) and parse what it recorded.

        An agent that does not answer is stopped the old way (SIGTERM flushes too), so a
        slow agent costs time, never evidence.
        """
        if not agent.wait_for(trap.DONE_LINE, _KILL_GRACE_S):
            with contextlib.suppress(docker.errors.DockerException):
                self._client.api.kill(warden_id, signal="SIGTERM")
                self._client.api.wait(warden_id, timeout=_KILL_GRACE_S)
            agent.wait_for(trap.DONE_LINE, 1.0)
        return trap.parse_agent_log(agent.text(), build=spec.role.removeprefix("build-"))

    def _create_worker(self, spec: SandboxSpec, name: str, volume: str, warden_id: str) -> str:
        """Create the untrusted container with every hardening option set."""
        api = self._client.api
        limits = spec.limits
        tmpfs: dict[str, str] = {}
        for path in spec.writable:
            size = limits.tmp_mb if path == "/tmp" else limits.workspace_mb
            tmpfs[path] = (f"size={size}m,exec,nosuid,nodev,uid={spec.uid},gid={spec.gid},"
                           "mode=0755")
        host_config = api.create_host_config(
            network_mode=f"container:{warden_id}",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            read_only=True,
            tmpfs=tmpfs,
            binds={volume: {"bind": OUT_DIR, "mode": "rw"}},
            pids_limit=limits.pids,
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=int(limits.cpus * 1e9) if limits.cpus else None,
            cpuset_cpus=spec.cpuset,
            ulimits=[Ulimit(name="core", soft=0, hard=0),
                     Ulimit(name="nofile", soft=4096, hard=4096)],
            log_config=LogConfig(type=LogConfig.types.JSON,
                                 config={"max-size": f"{max(1, limits.log_bytes // MiB)}m",
                                         "max-file": "1"}),
            ipc_mode="private",
            # Sharing the warden's pid namespace lets the trap name the process behind each
            # attempt; the build (non-root, no capabilities) cannot signal or trace it.
            pid_mode=f"container:{warden_id}" if spec.trap else None,
        )
        config = api.create_container_config(
            spec.image, ["/bin/sh", "-c", spec.script], user=f"{spec.uid}:{spec.gid}",
            working_dir="/", stdin_open=True, labels=self._labels.for_role(spec.role),
            host_config=host_config)
        # StdinOnce closes the container's stdin when we finish sending the source tar,
        # which the models API does not expose.
        config["StdinOnce"] = True
        created = api.create_container_from_config(  # type: ignore[no-untyped-call]
            config, name=f"{name}-worker")
        worker_id: str = created["Id"]
        return worker_id

    def _start_and_wait(self, spec: SandboxSpec, worker_id: str, warden_id: str,
                        agent: _AgentStream | None) -> tuple[int | None, bool]:
        """Start the worker, stream stdin, and wait against our own deadline.

        The worker's first command is our ``tar`` reading stdin, so it can start while the
        trap is still configuring the namespace: nothing untrusted runs before the source
        arrives, and the source is sent only after the trap said READY. If it never does,
        this raises and the worker is removed having run nothing but ``tar``.
        """
        api = self._client.api

        def await_trap() -> None:
            if agent is not None:
                self._await_trap(warden_id, agent)

        try:
            start_with_stdin(api, worker_id, spec.stdin,
                             send_timeout_s=max(1.0, spec.limits.timeout_s),
                             before_send=await_trap)
        except docker.errors.APIError:
            # The warden is gone ("cannot join network of a non running container"):
            # say why the trap gave up, not how Docker noticed.
            await_trap()
            raise
        return wait_or_kill(api, worker_id,
                            deadline=time.monotonic() + spec.limits.timeout_s,
                            cancel=self._cancel,
                            interrupted="interrupted; removed this run's containers",
                            kill_grace_s=_KILL_GRACE_S)

    def _collect(self, warden_id: str, output_dir: Path,
                 limits: SandboxLimits) -> tuple[ExtractedFile, ...]:
        """Copy regular files out of the output volume through the trusted warden."""
        chunks, _stat = self._client.api.get_archive(warden_id, f"{OUT_DIR}/.")
        reader = chunk_reader(chunks)
        output_dir.mkdir(parents=True, exist_ok=True)
        extract_limits = ExtractLimits(max_files=limits.max_output_files,
                                       max_file_bytes=limits.output_mb * MiB,
                                       max_total_bytes=limits.output_mb * MiB)
        files = extract_regular_files(reader, output_dir, extract_limits, strip_prefix=".")
        return tuple(sorted(files, key=lambda f: f.path))
