"""The Docker engine: connecting, labelling what we create, and sweeping what a killed run left.

Every container and volume reprobuild creates carries ``org.reprobuild.managed=true`` plus
the run id, the owning process id and this host's name. A run removes its own objects by
run id in ``finally``; the next run sweeps objects whose owning process is gone, so a
``kill -9`` never leaves garbage for long, and two concurrent runs never touch each other.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests

from reprobuild.archive import FileOrder, StreamedFile, write_tar
from reprobuild.errors import EnvironmentFailure, Interrupted
from reprobuild.images.definitions import cache_root

MANAGED = "org.reprobuild.managed"
RUN = "org.reprobuild.run"
PID = "org.reprobuild.pid"
HOST = "org.reprobuild.host"
ROLE = "org.reprobuild.role"

# Engines older than this have known archive-API escapes (NOTES.md §3); we only warn,
# because reprobuild reads only its output volume through the archive API, and only once
# no untrusted process is left in the container (its trusted PID 1 killed them all).
_SAFE_ENGINE = (29, 5, 1)


@dataclass(frozen=True)
class RunLabels:
    """Labels for one reprobuild run; ``for_role`` adds what the object is for."""

    run_id: str
    pid: int
    host: str

    @classmethod
    def new(cls) -> RunLabels:
        """Labels for a fresh run of this process."""
        return cls(run_id=uuid.uuid4().hex[:12], pid=os.getpid(), host=socket.gethostname())

    def for_role(self, role: str) -> dict[str, str]:
        """The label set stamped on every object of this run."""
        return {MANAGED: "true", RUN: self.run_id, PID: str(self.pid), HOST: self.host,
                ROLE: role}


@contextlib.contextmanager
def translate_docker_errors(what: str, *, image: str,
                            cancel: threading.Event) -> Iterator[None]:
    """Turn Docker API failures while running ``what`` into the project's errors.

    A failure after Ctrl-C is the cleanup racing the work (containers vanish under it):
    that is an interruption, not an engine problem.
    """
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise EnvironmentFailure(f"toolchain image {image} is missing",
                                 "run 'reprobuild images build'") from exc
    except docker.errors.APIError as exc:
        if cancel.is_set():
            raise Interrupted("interrupted; removed this run's containers") from exc
        raise EnvironmentFailure(f"Docker refused to run {what}: {exc.explanation or exc}",
                                 "check 'docker info'; rerun with --debug") from exc


def connect() -> docker.DockerClient:
    """Connect the standard way (``DOCKER_HOST`` or the default socket), or explain why not."""
    try:
        client = docker.from_env(timeout=120)
        if client.api.base_url.startswith("http+docker://"):
            # A local socket has no proxy; without this, requests scans the whole
            # environment for proxy settings on each of the ~60 calls a check makes.
            client.api.trust_env = False
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EnvironmentFailure(
            f"no Docker engine reachable at {where}: {_first_line(exc)}",
            "start one (e.g. 'sudo dockerd &' or 'systemctl start docker') or set DOCKER_HOST",
        ) from exc
    return client


def engine_warnings(client: docker.DockerClient, *, always: bool = False) -> list[str]:
    """Human warnings about the engine (old versions with known archive-API escapes).

    Shown once per engine version (remembered under the cache directory, so it does not
    land in every report), unless ``always`` (``reprobuild doctor``).
    """
    version = str(client.version().get("Version", "0"))
    numbers: list[int] = []
    for part in version.split("+", maxsplit=1)[0].split("-", maxsplit=1)[0].split(".")[:3]:
        numbers.append(int(part) if part.isdigit() else 0)
    if tuple(numbers) >= _SAFE_ENGINE:
        return []
    warning = (f"Docker Engine {version} predates 29.5.1 (archive API fixes); reprobuild "
               "copies outputs only once no untrusted process is left, but upgrade when you "
               "can")
    if always:
        return [warning]
    if not _first_sight(version):
        return []
    return [f"{warning} (said once per engine version; 'reprobuild doctor' repeats it)"]


def _first_sight(version: str) -> bool:
    """Whether no run warned about this engine version before (and remember that one has).

    Created exclusively, so of two runs starting at once one warns. A cache that cannot be
    written means warning every time, which is the safe side.
    """
    name = re.sub(r"[^A-Za-z0-9.+_-]", "_", version)[:80] or "unknown"
    marker = cache_root() / "engine-warned" / name
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_run(client: docker.DockerClient, run_id: str) -> None:
    """Remove every container, then every network and volume, of one run. Never raises."""
    _remove_matching(client, [f"{RUN}={run_id}"], lambda _labels: True)


def sweep_stale(client: docker.DockerClient) -> int:
    """Remove objects left by reprobuild runs on this host whose process is gone.

    Returns how many objects were removed.
    """
    host = socket.gethostname()

    def stale(labels: dict[str, str]) -> bool:
        if labels.get(HOST) != host:
            return False
        pid = labels.get(PID, "")
        return not (pid.isdigit() and int(pid) > 0 and _pid_alive(int(pid)))

    return _remove_matching(client, [f"{MANAGED}=true", f"{RUN}"], stale)


def _remove_matching(client: docker.DockerClient, label_filter: list[str],
                     wanted: Callable[[dict[str, str]], bool]) -> int:
    """Remove labelled containers, then networks, then volumes (that order: in-use
    networks and volumes cannot go first). Never raises; returns how many went."""
    filters: dict[str, Any] = {"label": label_filter}
    kinds: list[tuple[Callable[[], list[Any]], Callable[[Any], None]]] = [
        # sparse: no inspect per container, which would fail on one removed meanwhile
        (lambda: client.containers.list(all=True, filters=filters, sparse=True),
         lambda c: c.remove(force=True, v=True)),
        (lambda: client.networks.list(filters=filters), lambda n: n.remove()),
        (lambda: client.volumes.list(filters=filters), lambda v: v.remove(force=True)),
    ]
    removed = 0
    for list_objects, remove in kinds:
        try:
            objects = list_objects()
        except docker.errors.DockerException:
            continue
        for obj in objects:
            if not wanted(obj.attrs.get("Labels") or {}):
                continue
            try:
                remove(obj)
                removed += 1
            except docker.errors.DockerException:
                pass  # already gone, or being removed by its own run
    return removed


_CHUNK = 1024 * 1024
"""What is read from a host file and sent at a time."""


class _Sink(io.RawIOBase):
    """A socket as a writable file for ``tarfile`` (which asks where it is)."""

    def __init__(self, raw: socket.socket) -> None:
        super().__init__()
        self._raw = raw
        self._sent = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._raw.sendall(view)
        self._sent += len(view)
        return len(view)

    def tell(self) -> int:
        return self._sent


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def _send_file(raw: socket.socket, path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            raw.sendall(chunk)


def start_with_stdin(api: docker.APIClient, container_id: str, data: bytes, *,
                     send_timeout_s: float, preamble: bytes = b"",
                     preamble_timeout_s: float = 60.0,
                     before_send: Callable[[], None] | None = None,
                     files: Sequence[Path] = (),
                     tar: Sequence[tuple[str, Path]] = ()) -> None:
    """Start a container created with ``stdin_open`` and ``StdinOnce`` and hand it ``data``.

    The attach socket is opened before the start, so no byte is lost; ``preamble`` (the
    agent itself, which the container's command reads first) goes right after the start,
    then ``before_send`` runs (the sandbox's wait for the trap's READY), then the rest.
    Our end is closed afterwards: the engine has everything sent (a unix or TCP close
    delivers what is queued) and the container sees EOF. A container that exits before
    reading it all is not an error here; its exit code tells. ``files`` follow ``data`` as
    they are and ``tar`` last, as one tar of host files: both streamed a chunk at a time,
    so the host's memory does not grow with what is sent.
    """
    sock = api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
    raw: socket.socket = sock._sock
    try:
        api.start(container_id)
        if preamble:
            with contextlib.suppress(OSError):  # a container gone already: READY tells
                raw.settimeout(preamble_timeout_s)
                raw.sendall(preamble)
        if before_send is not None:
            before_send()
        with contextlib.suppress(OSError):
            raw.settimeout(send_timeout_s)
            raw.sendall(data)
            for path in files:
                _send_file(raw, path)
            if tar:
                members = [StreamedFile(name, path.stat().st_size, _opener(path))
                           for name, path in tar]
                write_tar(_Sink(raw), members, order=FileOrder.SORTED, mtime=0)
            raw.shutdown(socket.SHUT_WR)
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        with contextlib.suppress(OSError):
            raw.close()


def wait_or_kill(api: docker.APIClient, container_id: str, *, deadline: float,
                 cancel: threading.Event, interrupted: str,
                 kill_grace_s: int = 10) -> tuple[int | None, bool]:
    """Wait for the container to exit, or kill it at ``deadline``: (exit code, timed out).

    Blocks on the engine's wait endpoint (no polling latency) in short slices, so a
    cancelled run (Ctrl-C removes its containers) raises :class:`Interrupted` promptly.
    """
    while True:
        if cancel.is_set():
            raise Interrupted(interrupted)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            with contextlib.suppress(docker.errors.DockerException):
                api.kill(container_id)
                api.wait(container_id, timeout=kill_grace_s)
            return None, True
        try:
            status = api.wait(container_id, timeout=max(1, math.ceil(min(remaining, 2.0))))
        except requests.exceptions.RequestException:
            continue  # our slice ended; the deadline decides
        if cancel.is_set():
            raise Interrupted(interrupted)
        return int(status.get("StatusCode", -1)), False
