"""Run untrusted work (a build, diffoscope) in one hardened, network-less container.

Each run uses one container and one volume, both labelled with the run id:

* the **container**'s PID 1 is the trusted agent (:mod:`reprobuild.incontainer.trap_agent`),
  root with only SETUID, SETGID, SETPCAP and KILL (+ NET_ADMIN for the egress trap); none of them
  makes Docker's default seccomp profile open more syscalls. With the trap it owns the
  network namespace (only ``lo``) and sets up, verifies and self-tests the trap before
  printing READY. Then it starts the untrusted work with ``setpriv``: a non-root uid,
  no supplementary groups, no capabilities in any set (bounding set included),
  ``no_new_privs``. The host sends the source (so any untrusted code runs) only after
  READY. The build's output goes through the agent (capped) to the container's stderr;
  the agent's stdout is the evidence. When the build exits the agent kills everything it
  left, prints the exit line, completes its log and waits to be removed;
* the container has a read-only root, size-limited tmpfs for the workspace, ``/tmp`` and
  ``HOME`` (``/run`` is the agent's, root-only), pids/memory/CPU limits, no host mounts,
  no Docker socket, ``no-new-privileges`` and the default seccomp profile;
* the **output volume** is a size-limited tmpfs mounted at ``/out``; it lives as long as
  the container, whose PID 1 stays up until the outputs are copied.

The source goes in as a tar on the container's stdin (no host mounts, no archive API on
the way in). Outputs come out only after every build process is gone (only the agent
runs), through :func:`reprobuild.archive.extract_regular_files`, which refuses links,
absolute or ``..`` paths, devices, trees too deep and oversize content as it reads them.
A few small plain files (the usual release archives of a package) the agent has sent
on its stdout already, a tar between its exit line and DONE: an archive call costs the
engine ~50 ms. Anything else comes from the volume through the engine's archive API, whose
stream a refusal closes at once (an abandoned stream keeps the engine writing, and
removing the container waits for it).

What the trap saw is evidence however a run ends: :meth:`Sandbox.attempts_seen` gives
the attempts of every run so far, finished or not, also after a refused output, a
failure or an interruption (the pipeline reports them; see ``pipeline/check``).
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import docker
import docker.errors
import requests

from reprobuild.archive import ExtractedFile, ExtractLimits, chunk_reader, extract_regular_files
from reprobuild.errors import EnvironmentFailure, Interrupted
from reprobuild.evidence import EgressAttempt
from reprobuild.sandbox import agent as trap
from reprobuild.sandbox.engine import RunLabels, start_with_stdin, translate_docker_errors
from reprobuild.sandbox.hardening import Hardening, container_config, tmpfs_options
from reprobuild.sandbox.spec import OUT_DIR, SandboxLimits, SandboxResult, SandboxSpec

_KILL_GRACE_S = 10
_TRAP_READY_S = 60.0
MiB = 1024 * 1024


class _AgentStream:
    """Follows the trap agent's stdout as the engine delivers it (about a millisecond
    late), so READY and DONE are seen at once instead of by polling the log."""

    def __init__(self, api: docker.APIClient, container_id: str) -> None:
        self._api = api
        self._stream = api.logs(container_id, stdout=True, stderr=False, stream=True,
                                follow=True)
        self._data = bytearray()
        self._changed = threading.Condition()
        self.ended = False
        threading.Thread(target=self._pump, name="trap-log", daemon=True).start()

    def _pump(self) -> None:
        try:
            # The connection drops when the container is removed: that is the end, not an error.
            with contextlib.suppress(Exception):
                for chunk in self._stream:
                    with self._changed:
                        self._data += chunk
                        self._changed.notify_all()
        finally:
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    def text(self) -> str:
        with self._changed:
            return self._data.decode(errors="replace")

    def wait_for(self, marker: str, timeout: float) -> bool:
        """True once a line starting with ``marker`` arrived; False at EOF or timeout.

        Each wake-up searches only what arrived since the last (inline outputs are
        megabytes of lines; rescanning all of it per chunk would be quadratic)."""
        deadline = time.monotonic() + timeout
        needle = b"\n" + marker.encode()
        with self._changed:
            start = 0
            while True:
                if self._data.startswith(needle[1:]) or self._data.find(needle, start) >= 0:
                    return True
                start = max(0, len(self._data) - len(needle) + 1)
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    return False
                self._changed.wait(left)

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
        self._evidence = threading.Lock()
        self._live: dict[str, _AgentStream] = {}  # role -> the agent of a trapped run under way
        self._seen: list[EgressAttempt] = []  # attempts of the trapped runs that ended
        self._running = 0
        self._idle = threading.Condition(self._evidence)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no run is under way (each removes what it created on its way out);
        False if some still are after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def attempts_seen(self) -> tuple[EgressAttempt, ...]:
        """Every attempt the trap logged in this sandbox's runs so far, however they
        ended (refused outputs, failures, timeouts) or while they still run."""
        with self._evidence:
            seen = list(self._seen)
            live = list(self._live.items())
        for role, agent in live:
            seen.extend(trap.parse_agent_log(agent.text(), build=_build_name(role)).attempts)
        return tuple(seen)

    def _settle(self, role: str, agent: _AgentStream) -> None:
        """Move a run's attempts from its live agent to the ledger once its log is complete
        (the agent completes it after the exit line; not waited for when cancelled)."""
        if not self._cancel.is_set() and trap.build_exit(agent.text()) is not None:
            agent.wait_for(trap.DONE_LINE, _KILL_GRACE_S)
        attempts = trap.parse_agent_log(agent.text(), build=_build_name(role)).attempts
        with self._evidence:
            self._seen.extend(attempts)
            self._live.pop(role, None)

    def run(self, spec: SandboxSpec, *, output_dir: Path, log_path: Path) -> SandboxResult:
        """Run ``spec`` to completion or timeout; always removes what it created."""
        api = self._client.api
        name = f"reprobuild-{self._labels.run_id}-{spec.role}"
        volume_name = f"{name}-out"
        container_id: str | None = None
        agents: list[_AgentStream] = []
        started = time.monotonic()
        with self._idle:
            self._running += 1
        try:
            with translate_docker_errors(f"the {spec.role} sandbox", image=spec.image,
                                         cancel=self._cancel):
                if self._cancel.is_set():  # the run is being torn down: create nothing more
                    raise Interrupted("interrupted; removed this run's containers")
                self._client.volumes.create(
                    name=volume_name, driver="local",
                    driver_opts={"type": "tmpfs", "device": "tmpfs",
                                 "o": f"size={spec.limits.output_mb}m,uid={spec.uid},"
                                      f"gid={spec.gid},mode=0755"},
                    labels=self._labels.for_role(f"{spec.role}-out"))
                container_id = self._create(spec, name, volume_name)
                cid = container_id

                def await_ready() -> None:
                    # Following the log needs a started container: between start and send.
                    agents.append(_AgentStream(api, cid))
                    if spec.trap:
                        with self._evidence:
                            self._live[spec.role] = agents[0]
                    self._await_ready(cid, agents[0], trap_on=spec.trap)

                start_with_stdin(api, cid, spec.stdin,
                                 preamble=trap.agent_payload(spec.image_python),
                                 preamble_timeout_s=_TRAP_READY_S,
                                 send_timeout_s=max(1.0, spec.limits.timeout_s),
                                 before_send=await_ready, files=spec.stdin_files,
                                 tar=spec.stdin_tar)
                agent = agents[0]
                ended, timed_out = self._wait_build(cid, agent, spec,
                                                    time.monotonic() + spec.limits.timeout_s)
                duration = time.monotonic() - started
                if ended.error:
                    raise EnvironmentFailure(f"the {spec.role} sandbox could not end the build: "
                                             f"{ended.error}", "nothing was copied out of it")
                # Every process of the build is gone (the agent killed what it left): only
                # the trusted agent runs while the outputs are read off the volume.
                outputs: tuple[ExtractedFile, ...] = ()
                if not timed_out:
                    try:
                        outputs = self._collect(cid, agent, output_dir, spec.limits)
                    except Exception:
                        # Refused (or failed) outputs: the build's log is evidence still.
                        with contextlib.suppress(docker.errors.DockerException, OSError):
                            if agent.wait_for(trap.DONE_LINE, _KILL_GRACE_S):
                                self._save_log(cid, spec, log_path)
                        raise
                if not agent.wait_for(trap.DONE_LINE, _KILL_GRACE_S):
                    raise EnvironmentFailure(f"the {spec.role} sandbox's agent did not finish "
                                             "its log", "rerun with --debug")
                self._save_log(cid, spec, log_path)
                trap_log = trap.parse_agent_log(agent.text(),
                                                build=spec.role.removeprefix("build-"))
                return SandboxResult(role=spec.role, timed_out=timed_out,
                                     exit_code=None if timed_out else ended.code,
                                     duration_s=duration, log_path=log_path,
                                     output_dir=output_dir, outputs=outputs,
                                     egress=trap_log.attempts if spec.trap else (),
                                     leftovers=ended.leftovers,
                                     output_dropped=ended.output_dropped)
        finally:
            if spec.trap and agents:
                self._settle(spec.role, agents[0])
            for agent in agents:
                agent.close()
            if container_id is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    api.remove_container(container_id, force=True, v=True)
            with contextlib.suppress(docker.errors.DockerException):
                api.remove_volume(volume_name, force=True)
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _save_log(self, container_id: str, spec: SandboxSpec, log_path: Path) -> None:
        """The build's output (the container's stderr, capped) to ``log_path``."""
        log: bytes = self._client.api.logs(container_id, stdout=False, stderr=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(log[-spec.limits.log_bytes:])

    def _create(self, spec: SandboxSpec, name: str, volume: str) -> str:
        """Create the sandbox: the trusted agent as PID 1, everything else hardened.

        The agent sets up (and self-tests) the trap, prints READY, and only then starts the
        build as ``spec.uid`` with no capabilities at all (``setpriv`` empties even the
        bounding set); the host sends the source (so any untrusted code runs) only after
        READY. If the trap never comes up, nothing untrusted ever runs: fail closed.
        """
        api = self._client.api
        limits = spec.limits
        tmpfs: dict[str, str] = {}
        for path in spec.writable:
            size = limits.tmp_mb if path == "/tmp" else limits.workspace_mb
            tmpfs[path] = tmpfs_options(size, uid=spec.uid, gid=spec.gid, exec_=True)
        # The agent's own scratch space; root-only, so the build cannot reach it.
        tmpfs["/run"] = tmpfs_options(8, mode="0700")
        hardening = Hardening(
            network_mode="none",
            cap_add=(*trap.SUPERVISOR_CAPS, *(trap.TRAP_CAPS if spec.trap else ())),
            tmpfs=tmpfs,
            sysctls=dict(trap.TRAP_SYSCTLS) if spec.trap else None,
            volumes={volume: (OUT_DIR, "rw")},
            pids=limits.pids, memory_mb=limits.memory_mb, cpus=limits.cpus,
            cpuset=spec.cpuset,
            # The agent caps the build's output at log_bytes, so with room for the agent's
            # own (capped) log the json-file never rotates away evidence.
            log_mb=limits.log_bytes // MiB + 64,
        )
        command = [*trap.AGENT_COMMAND,
                   *trap.agent_arguments(script=spec.script, uid=spec.uid, gid=spec.gid,
                                         log_bytes=limits.log_bytes, trap=spec.trap,
                                         outputs=OUT_DIR)]
        config = container_config(api, spec.image, command, hardening=hardening,
                                  labels=self._labels.for_role(spec.role), user="0:0",
                                  hostname=spec.hostname, domainname=spec.domainname,
                                  stdin=True)
        created = api.create_container_from_config(  # type: ignore[no-untyped-call]
            config, name=name)
        container_id: str = created["Id"]
        return container_id

    def _await_ready(self, container_id: str, agent: _AgentStream, *, trap_on: bool) -> None:
        """Wait for the agent's READY line; raise if it exits or takes too long."""
        what = "the egress trap" if trap_on else "the sandbox's agent"
        deadline = time.monotonic() + _TRAP_READY_S
        while not agent.wait_for(trap.READY_PREFIX, 0.1):
            if self._cancel.is_set():
                raise Interrupted("interrupted; removed this run's containers")
            if agent.ended:
                # Gone without READY: say why (its error event, or a traceback on stderr).
                text = self._client.api.logs(container_id, stdout=True, stderr=True)
                trap.require_ready(text.decode(errors="replace"), exited=True, what=what)
                raise EnvironmentFailure(f"{what} exited before it was ready",
                                         "nothing was started (fail closed)")
            if time.monotonic() > deadline:
                raise EnvironmentFailure(
                    f"{what} was not ready after {_TRAP_READY_S:.0f}s",
                    "nothing was started (fail closed); is the machine overloaded?")

    def _wait_build(self, container_id: str, agent: _AgentStream, spec: SandboxSpec,
                    deadline: float) -> tuple[trap.BuildExit, bool]:
        """Wait for the agent's exit line: (how the build ended, whether it timed out).

        At the deadline the agent is told to stop the build (SIGUSR1: it kills the build,
        then completes its log as usual); an agent that does not answer is killed with the
        container. Waiting blocks on the log stream, so the end is seen at once.
        """
        while True:
            if self._cancel.is_set():
                raise Interrupted("interrupted; removed this run's containers")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if agent.wait_for(trap.BUILD_EXIT_PREFIX, min(remaining, 0.5)):
                ended = trap.build_exit(agent.text())
                assert ended is not None
                return ended, False
            if agent.ended:
                errors = trap.parse_agent_log(agent.text(), build="?").errors
                why = f": {errors[-1][:300]}" if errors else ""
                raise EnvironmentFailure(
                    f"the {spec.role} sandbox's agent exited while the build ran{why}",
                    "the build's log may say why (out of memory?); rerun with --debug")
        with contextlib.suppress(docker.errors.DockerException):
            self._client.api.kill(container_id, signal="SIGUSR1")
        if agent.wait_for(trap.BUILD_EXIT_PREFIX, _KILL_GRACE_S):
            ended = trap.build_exit(agent.text())
            assert ended is not None
            return ended, True
        with contextlib.suppress(docker.errors.DockerException):
            self._client.api.kill(container_id)
        raise EnvironmentFailure(f"the {spec.role} sandbox did not stop at its deadline",
                                 "its container was killed; rerun with --debug")

    def _collect(self, container_id: str, agent: _AgentStream, output_dir: Path,
                 limits: SandboxLimits) -> tuple[ExtractedFile, ...]:
        """Copy regular files out of the output volume (only the agent runs by now).

        Few small plain files the agent has already sent on its stdout, between its exit
        line and DONE (:func:`trap.sent_outputs`): an engine archive call costs ~50 ms, a
        tenth of a small build. Anything else, or an incomplete section, comes through the
        engine's archive API. Either way the caps (files, bytes, depth) are checked member
        by member as the tar is read; through the engine the first refusal closes the
        stream, so what follows is never sent.
        """
        output_dir.mkdir(parents=True, exist_ok=True)
        extract_limits = ExtractLimits(max_files=limits.max_output_files,
                                       max_file_bytes=limits.output_mb * MiB,
                                       max_total_bytes=limits.output_mb * MiB)
        sent = self._sent_outputs(agent)
        with (contextlib.nullcontext(io.BytesIO(sent.tar))
              if sent is not None and sent.tar is not None
              else _archive(self._client.api, container_id, f"{OUT_DIR}/.")) as reader:
            files = extract_regular_files(reader, output_dir, extract_limits, strip_prefix=".")
        return tuple(sorted(files, key=lambda f: f.path))

    @staticmethod
    def _sent_outputs(agent: _AgentStream) -> trap.SentOutputs | None:
        """The agent's outputs section once complete; None if it sent none before DONE."""
        deadline = time.monotonic() + _KILL_GRACE_S
        while True:
            sent = trap.sent_outputs(agent.text())
            if sent is not None:
                return sent
            if agent.wait_for(trap.DONE_LINE, 0) or agent.ended or \
                    time.monotonic() > deadline:
                return trap.sent_outputs(agent.text())
            agent.wait_for(trap.OUTPUTS_END, min(0.5, max(0.0, deadline - time.monotonic())))


def _build_name(role: str) -> str:
    return role.removeprefix("build-")


@contextlib.contextmanager
def _archive(api: docker.APIClient, container_id: str, path: str) -> Iterator[BinaryIO]:
    """The engine's tar of ``path`` in the container, as a stream we can abandon.

    The SDK's ``get_archive`` hands back a generator whose HTTP response cannot be closed:
    abandoned after a refusal, it leaves the engine blocked writing the rest (a big file,
    thousands of members) and the container's removal waiting on that until the SDK's
    read timeout. Here the response is closed on the way out, so the engine stops at once.
    Each read still has the client's timeout (a stalled engine is an error, not a hang).
    """
    url = (f"{api.base_url}/v{api.api_version}/containers/{quote(container_id, safe='')}"
           "/archive")
    try:
        response = api.get(url, params={"path": path}, stream=True, timeout=api.timeout,
                           headers={"Accept-Encoding": "identity"})
    except requests.exceptions.RequestException as exc:
        raise EnvironmentFailure(f"could not copy the outputs off the sandbox: {exc}",
                                 "check 'docker info'; rerun with --debug") from exc
    try:
        if response.status_code != 200:
            raise EnvironmentFailure(
                f"the engine refused to copy the outputs (HTTP {response.status_code}): "
                f"{response.text[:300].strip()}", "check 'docker info'; rerun with --debug")
        yield chunk_reader(response.iter_content(chunk_size=MiB))
    except requests.exceptions.RequestException as exc:
        raise EnvironmentFailure(f"copying the outputs off the sandbox failed: {exc}",
                                 "check 'docker info'; rerun with --debug") from exc
    finally:
        response.close()
