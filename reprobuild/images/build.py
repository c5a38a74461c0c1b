"""Building and finding toolchain images in the engine (the Docker side of images).

``ensure_images`` is a tag lookup when the images exist; otherwise it builds what is missing
as a small dependency graph (:func:`~reprobuild.images.definitions.plan_builds`): the bases
(mmdebstrap + ``docker import``, or a registry pull by digest) and, as soon as its base is
there, each toolchain layer (wheels downloaded and hash-checked on the host, installed in a
``--network none`` container with the hardening baseline, committed). Independent images
build at the same time, up to ``jobs`` at once, and every toolchain's host-side downloads
start at once, while the bases are still being bootstrapped. The first failure stops the
rest (each step's container is killed, every container is removed) and is the one raised;
Ctrl-C does the same. Each image's state and elapsed time go to the Progress observer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import fcntl
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

from reprobuild.archive import files_tar
from reprobuild.errors import EnvironmentFailure, InputError
from reprobuild.hashing import sha256_file
from reprobuild.hashlock import normalise_name
from reprobuild.images.definitions import (
    _CA_IN_CONTAINER,
    _MMDEBSTRAP_HOOKS,
    _STAGE,
    _UPLOAD,
    _VERSIONS_BEGIN,
    _VERSIONS_END,
    DEFINITION_LABEL,
    IMAGE_LABEL,
    VERSIONS_LABEL,
    BuildStep,
    ImageDefinition,
    LockedRequirement,
    RegistryBasePlan,
    ToolchainImage,
    ToolchainImageInfo,
    _base_of,
    _did_you_mean,
    _env_of,
    cache_root,
    default_jobs,
    definition_hash,
    image_tag,
    layer_script,
    load_definitions,
    lock_text,
    mmdebstrap_command,
    pip_download_command,
    plan_builds,
    registry_base_plan,
)
from reprobuild.progress import Progress
from reprobuild.sandbox.engine import HOST, MANAGED, PID, ROLE, RUN, RunLabels
from reprobuild.sandbox.hardening import Hardening, container_config
from reprobuild.sandbox.spec import host_cpus

__all__ = ["ImageSet", "ImageState", "ImageTiming", "ensure_image", "ensure_images",
           "list_images", "prune_images"]

_BUILD_DEADLINE_S = 1800.0
_POLL_S = 0.5
_TAIL_LINES = 40
_HEARTBEAT_S = 10.0
_OUR_TAG = re.compile(r"reprobuild/(?P<name>[a-z0-9][a-z0-9._-]*):(?P<hex>[0-9a-f]{16})")
_ErrorPicker = Callable[[list[str]], tuple[str, str]]
"""Picks the key line of a failed tool's output and a hint for the user."""
IMAGE_BUILD_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL")
"""What a root install step needs (files owned by others; apt dropping to ``_apt``)."""
_ROOTFS_TMPFS = Path("/dev/shm")
_ROOTFS_TMPFS_NEEDS = 4 << 30
"""Free space (and available memory) /dev/shm must have to hold a root filesystem while it
is bootstrapped: the trixie base peaks at about 1.3 GB, two bases at once at about 1.7 GB."""


class _Cancelled(Exception):
    """A step stopped because another image failed or the run was interrupted (never
    leaves this module)."""


class ImageState(enum.Enum):
    """Where one image of a build plan is."""

    WAITING = "waiting"
    DOWNLOADING = "downloading"
    BUILDING = "building"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ImageTiming:
    """How long one image took, split into what is downloaded and what is ours."""

    name: str
    tag: str
    download_s: float | None
    """Host-side download of a toolchain's locked files (PyPI), 0 when all were in the wheel
    cache; None for a base (apt downloads inside mmdebstrap)."""
    waited_s: float
    """From the start until it could build: its downloads, its base, a free slot."""
    build_s: float
    """The bootstrap (apt included) or the offline layer, commit and tag."""
    state: ImageState


@dataclass(frozen=True)
class ImageSet:
    """The images asked for (and their bases), and how long the ones built here took."""

    images: Mapping[str, ToolchainImage]
    built: tuple[ImageTiming, ...]


# --------------------------------------------------------------------------- ensure


def ensure_image(client: docker.DockerClient, name: str, *, progress: Progress,
                 ca_cert: Path | None = None,
                 definitions_dir: Path | None = None) -> ToolchainImage:
    """Return the image for ``name``, building it (and its base) only if its tag is missing.

    ``definitions_dir`` defaults to :func:`containers_dir`; tests point it elsewhere.
    """
    found = ensure_images(client, [name], progress=progress, ca_cert=ca_cert,
                          definitions_dir=definitions_dir)
    return found.images[name]


def ensure_images(client: docker.DockerClient, names: Sequence[str], *, progress: Progress,
                  ca_cert: Path | None = None, definitions_dir: Path | None = None,
                  jobs: int | None = None, heartbeat_s: float = _HEARTBEAT_S) -> ImageSet:
    """Return the images for ``names`` (and their bases), building the missing ones,
    independent ones at the same time (``jobs`` at once, default one per CPU up to 3).

    Warm, this is one inspect per image. ``heartbeat_s``: how often the summary of every
    image's state is sent again while nothing changes (the CLI asks for 1 s on a terminal).
    """
    definitions = load_definitions(definitions_dir)
    for name in names:
        if name not in definitions:
            raise InputError(f"no image definition named '{name}'",
                             _did_you_mean(name, sorted(definitions)))
    found: dict[str, ToolchainImage] = {}
    # The images asked for first, their bases only for those missing: warm, one inspect each.
    for name in dict.fromkeys(names):
        image = _lookup_defn(client, definitions[name], definitions)
        if image is not None:
            found[name] = image
    missing = [name for name in dict.fromkeys(names) if name not in found]
    for base in dict.fromkeys(_base_of(definitions[n], definitions).name for n in missing):
        image = _lookup_defn(client, definitions[base], definitions) \
            if base not in found else None
        if image is not None:
            found[base] = image
    steps = plan_builds(definitions, missing, ready=found)
    if not steps:
        return ImageSet(images={n: found[n] for n in names}, built=())
    run = _PlanRun(client, definitions, steps, found, progress, ca_cert,
                   jobs or default_jobs(host_cpus()), heartbeat_s)
    images, timings = run.run()
    return ImageSet(images={n: images[n] for n in names}, built=timings)


def _lookup_defn(client: docker.DockerClient, defn: ImageDefinition,
                 definitions: Mapping[str, ImageDefinition]) -> ToolchainImage | None:
    return _lookup(client, defn.name, image_tag(defn, definitions),
                   definition_hash(defn, definitions))


# --------------------------------------------------------------------------- plan runs


class _PlanRun:
    """Runs a build plan: every download at once, then each image as soon as its base and
    its downloads are there and one of ``jobs`` slots is free. Only the calling thread
    decides; workers build and report through the board."""

    def __init__(self, client: docker.DockerClient, definitions: Mapping[str, ImageDefinition],
                 steps: Sequence[BuildStep], found: Mapping[str, ToolchainImage],
                 progress: Progress, ca_cert: Path | None, jobs: int,
                 heartbeat_s: float) -> None:
        self.client = client
        self.definitions = definitions
        self.steps = tuple(steps)
        self.ready = dict(found)
        self.ca_cert = ca_cert
        self.jobs = max(1, jobs)
        self.heartbeat_s = heartbeat_s
        self.cancel = threading.Event()
        self.board = _Board(progress, self.steps, self.jobs)

    def run(self) -> tuple[dict[str, ToolchainImage], tuple[ImageTiming, ...]]:
        """Build every step; the first failure cancels the others and is raised once they
        have all ended (their containers removed). Ctrl-C does the same."""
        fetching = [s for s in self.steps if s.downloads]
        downloads = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(fetching)), thread_name_prefix="reprobuild-image-download")
        builds = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.jobs, thread_name_prefix="reprobuild-image-build")
        running: dict[concurrent.futures.Future[ToolchainImage | None], tuple[str, str]] = {}
        fetched = {s.name for s in self.steps if not s.downloads}
        started: set[str] = set()
        failure: BaseException | None = None
        try:
            self.board.start()
            for step in fetching:
                running[downloads.submit(self._download, step)] = ("download", step.name)
            while True:
                if failure is None:
                    for step in self._startable(fetched, started, running.values()):
                        started.add(step.name)
                        base = self.ready.get(step.base) if step.base else None
                        self.board.set(step.name, ImageState.BUILDING, self._building(step))
                        running[builds.submit(self._build, step, base)] = ("build", step.name)
                if not running:
                    break
                done, _ = concurrent.futures.wait(
                    running, timeout=min(self.heartbeat_s, _POLL_S),
                    return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    kind, name = running.pop(future)
                    error = future.exception()
                    if error is None:
                        result = future.result()
                        if kind == "download":
                            fetched.add(name)
                        elif result is not None:
                            self.ready[name] = result
                            self.board.set(name, ImageState.DONE, f"{result.tag} ready")
                    elif isinstance(error, _Cancelled):
                        self.board.set(name, ImageState.CANCELLED, "cancelled")
                    else:
                        self.board.set(name, ImageState.FAILED, "failed")
                        if failure is None:
                            failure = error
                            self.cancel.set()
                self.board.heartbeat(self.heartbeat_s)
            if failure is not None:
                self.board.cancel_waiting()
                raise failure
            return self.ready, self.board.timings()
        finally:
            # Ctrl-C or a failure: every step sees the event within a poll interval, kills
            # its container or tool and removes what it created before its thread ends.
            self.cancel.set()
            downloads.shutdown(wait=True, cancel_futures=True)
            builds.shutdown(wait=True, cancel_futures=True)
            for future, (_kind, name) in running.items():  # left by an interrupt
                if future.cancelled() or isinstance(future.exception(), _Cancelled):
                    self.board.set(name, ImageState.CANCELLED, "cancelled")

    def _startable(self, fetched: set[str], started: set[str],
                   running: Iterable[tuple[str, str]]) -> list[BuildStep]:
        busy = sum(1 for kind, _ in running if kind == "build")
        free = self.jobs - busy
        found = []
        for step in self.steps:
            if free <= 0:
                break
            if step.name in started or step.name not in fetched:
                continue
            if step.base and step.base not in self.ready:
                continue
            found.append(step)
            free -= 1
        return found

    def _building(self, step: BuildStep) -> str:
        defn = self.definitions[step.name]
        if defn.kind == "toolchain":
            return f"installing its locked files offline on {defn.base}"
        if defn.kind == "mmdebstrap":
            return "bootstrapping the root filesystem (mmdebstrap, apt)"
        return f"bootstrapping from {defn.reference}"

    def _download(self, step: BuildStep) -> None:
        defn = self.definitions[step.name]
        _download_locked(defn, self.definitions, self.board, self.cancel)

    def _build(self, step: BuildStep, base: ToolchainImage | None) -> ToolchainImage:
        defn = self.definitions[step.name]
        progress = _ImageProgress(self.board, step.name)
        digest = definition_hash(defn, self.definitions)
        with _host_lock(step.tag, progress, self.cancel):
            found = _lookup(self.client, defn.name, step.tag, digest)
            if found is not None:
                progress.detail("built by another reprobuild process meanwhile")
                return found
            if defn.kind == "toolchain":
                assert base is not None
                _build_layer(self.client, defn, self.definitions, base, step.tag, digest,
                             progress, self.cancel)
            elif defn.kind == "mmdebstrap":
                _bootstrap_mmdebstrap(self.client, defn, self.definitions, step.tag, digest,
                                      progress, self.cancel)
            else:
                _bootstrap_registry(self.client, defn, self.definitions, step.tag, digest,
                                    progress, self.ca_cert, self.cancel)
        found = _lookup(self.client, defn.name, step.tag, digest)
        if found is None:  # pragma: no cover - someone removed it between two calls
            raise EnvironmentFailure(f"image {step.tag} vanished right after it was built",
                                     "is another process pruning reprobuild images?")
        return found


class _Board:
    """Each image's state and times, told to the Progress observer from one place: worker
    threads report through it, so lines never interleave. A transition is a detail line
    (``python: done …``); the summary of every image (``images 3/8 built · building …``)
    is the step, sent at the start and then every heartbeat."""

    def __init__(self, progress: Progress, steps: Sequence[BuildStep], jobs: int) -> None:
        self._progress = progress
        self._steps = {s.name: s for s in steps}
        self._jobs = jobs
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._state = dict.fromkeys(self._steps, ImageState.WAITING)
        self._since = dict.fromkeys(self._steps, self._t0)
        self._download_s: dict[str, float] = {}
        self._build_started: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._last_summary = self._t0

    def start(self) -> None:
        """Say what will be built, how many at once."""
        with self._lock:
            count = len(self._steps)
            self._progress.step(f"building {count} image{'s' if count != 1 else ''}, "
                                f"{min(self._jobs, count)} at a time: "
                                f"{', '.join(self._steps)}")
            self._last_summary = time.monotonic()

    def set(self, name: str, state: ImageState, message: str) -> None:
        """A transition of one image, with a line saying it (and how long it took)."""
        with self._lock:
            now = time.monotonic()
            previous = self._state[name]
            if previous is ImageState.DOWNLOADING:
                self._download_s[name] = now - self._since[name]
                if state is ImageState.WAITING:
                    message += f" in {self._download_s[name]:.1f} s"
            if state is ImageState.BUILDING:
                self._build_started[name] = now
            if state in (ImageState.DONE, ImageState.FAILED, ImageState.CANCELLED):
                self._ended[name] = now
                message += self._took(name, now)
            self._state[name] = state
            self._since[name] = now
            self._progress.detail(f"{name}: {message}")

    def cancel_waiting(self) -> None:
        """After a failure: the images that never started are cancelled."""
        for name, state in list(self._state.items()):
            if state is ImageState.WAITING:
                self.set(name, ImageState.CANCELLED, "not started")

    def detail(self, name: str, message: str) -> None:
        """A line from one image's tools (mmdebstrap's phases, pip's files)."""
        with self._lock:
            self._progress.detail(f"{name}: {message}")

    def heartbeat(self, every_s: float) -> None:
        """The summary again if the last one is ``every_s`` old."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_summary >= every_s:
                self._progress.step(self._summary(now))
                self._last_summary = now

    def timings(self) -> tuple[ImageTiming, ...]:
        """One record per image of the plan, in plan order."""
        with self._lock:
            result = []
            for name, step in self._steps.items():
                end = self._ended.get(name, time.monotonic())
                began = self._build_started.get(name, end)
                result.append(ImageTiming(
                    name=name, tag=step.tag,
                    download_s=(round(self._download_s.get(name, 0.0), 3)
                                if step.downloads else None),
                    waited_s=round(began - self._t0, 3), build_s=round(end - began, 3),
                    state=self._state[name]))
            return tuple(result)

    def _took(self, name: str, now: float) -> str:
        parts = []
        if name in self._build_started:
            parts.append(f"build {now - self._build_started[name]:.1f} s")
        if self._download_s.get(name):
            parts.append(f"PyPI {self._download_s[name]:.1f} s")
        spent = f" ({', '.join(parts)})" if parts else ""
        return f" after {now - self._t0:.1f} s{spent}"

    def _summary(self, now: float) -> str:
        states = self._state
        done = sum(1 for s in states.values() if s is ImageState.DONE)
        parts = [f"images {done}/{len(states)} built"]
        for label, state in (("building", ImageState.BUILDING),
                             ("downloading", ImageState.DOWNLOADING)):
            names = [f"{n} {now - self._since[n]:.0f}s" for n, s in states.items()
                     if s is state]
            if names:
                parts.append(f"{label} {', '.join(names)}")
        waiting = []
        for name, state in states.items():
            if state is not ImageState.WAITING:
                continue
            base = self._steps[name].base
            pending = base in states and states[base] is not ImageState.DONE
            waiting.append(f"{name} (for {base})" if pending else f"{name} (for a slot)")
        if waiting:
            parts.append(f"waiting {', '.join(waiting)}")
        return " · ".join(parts)


class _ImageProgress:
    """The Progress one image's steps see: every line goes to the board under its name."""

    def __init__(self, board: _Board, name: str) -> None:
        self._board = board
        self._name = name

    def step(self, message: str) -> None:
        """A phase of this image, as a line of its own."""
        self._board.detail(self._name, message)

    def detail(self, message: str) -> None:
        """A line of this image's tools."""
        self._board.detail(self._name, message)


def _lookup(client: docker.DockerClient, name: str, tag: str,
            digest: str) -> ToolchainImage | None:
    """One inspect; the tag only counts if its definition label matches the hash."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise _docker_failure(f"inspecting {tag}", exc) from exc
    config = image.attrs.get("Config") or {}
    labels: dict[str, str] = config.get("Labels") or {}
    if labels.get(DEFINITION_LABEL) != digest:
        return None
    try:
        versions = json.loads(labels.get(VERSIONS_LABEL, "{}"))
    except json.JSONDecodeError:
        versions = {}
    path_env = next((e.split("=", 1)[1] for e in config.get("Env") or []
                     if e.startswith("PATH=")), "")
    return ToolchainImage(name=name, tag=tag, image_id=str(image.id), definition_sha256=digest,
                          versions=tuple(sorted((str(k), str(v)) for k, v in versions.items())),
                          path_env=path_env,
                          architecture=str(image.attrs.get("Architecture") or "amd64"))


@contextlib.contextmanager
def _host_lock(tag: str, progress: Progress, cancel: threading.Event) -> Iterator[None]:
    """Serialise builds of one tag on this host; other hosts just race to an equal result."""
    path = cache_root() / "locks" / (re.sub(r"[^A-Za-z0-9._-]", "_", tag) + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    progress.detail(f"waiting for another reprobuild process building {tag}")
                    said = True
                if cancel.wait(_POLL_S):
                    raise _Cancelled(tag) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _labels(defn: ImageDefinition, digest: str, versions: Mapping[str, str],
            role: str) -> dict[str, str]:
    # The run/pid/host labels of the temporary container would leak into a committed image
    # (and from there into every container made from it); blank them so sweeps ignore it.
    return {MANAGED: "true", ROLE: role, IMAGE_LABEL: defn.name, DEFINITION_LABEL: digest,
            VERSIONS_LABEL: json.dumps(dict(sorted(versions.items())), separators=(",", ":")),
            RUN: "", PID: "", HOST: ""}


def _tag_if_absent(client: docker.DockerClient, image_id: str, tag: str, digest: str) -> None:
    """Tag our fresh image unless a concurrent builder got there first; then drop ours.

    A tag that exists without our definition label is not ours to keep: move it.
    """
    repository, _, version = tag.rpartition(":")
    try:
        try:
            existing = client.images.get(tag)
        except docker.errors.ImageNotFound:
            existing = None
        if existing is None or existing.labels.get(DEFINITION_LABEL) != digest:
            client.api.tag(image_id, repository, version, force=True)
        elif existing.id != image_id:
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(image_id, noprune=False)
    except docker.errors.DockerException as exc:
        raise _docker_failure(f"tagging {tag}", exc) from exc


# --------------------------------------------------------------------------- mmdebstrap


def _bootstrap_mmdebstrap(client: docker.DockerClient, defn: ImageDefinition,
                          definitions: Mapping[str, ImageDefinition], tag: str, digest: str,
                          progress: Progress, cancel: threading.Event) -> None:
    if shutil.which("mmdebstrap") is None:
        raise EnvironmentFailure(
            "mmdebstrap is not installed, so the base image cannot be bootstrapped",
            "install it (apt-get install mmdebstrap) or use a kind = \"registry\" base")
    for hook in defn.hooks:
        if not (_MMDEBSTRAP_HOOKS / hook).is_dir():
            raise EnvironmentFailure(f"mmdebstrap hook directory {_MMDEBSTRAP_HOOKS / hook} "
                                     "is missing", "install mmdebstrap >= 1.0 from Debian")
    with tempfile.TemporaryDirectory(prefix="reprobuild-base-") as scratch:
        output = Path(scratch) / "rootfs.tar"
        argv = mmdebstrap_command(defn, output)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(defn.source_date_epoch)}
        chroot_dir = _rootfs_tmpdir(env)
        if chroot_dir is not None:
            env["TMPDIR"] = chroot_dir
        _run_host(argv, env=env, progress=progress, what=f"mmdebstrap for {tag}",
                  on_error=_apt_failure, cancel=cancel)
        tar_sha = sha256_file(output)
        progress.detail(f"rootfs.tar sha256 {tar_sha}")
        versions = _dpkg_versions_from_tar(output)
        labels = _labels(defn, digest, versions, "base-image")
        labels["org.reprobuild.rootfs-sha256"] = tar_sha
        changes = [f"ENV {k}={json.dumps(v)}" for k, v in _env_of(defn, definitions).items()]
        changes.append("LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()))
        changes.append('CMD ["/bin/sh"]')
        _check_cancel(cancel, tag)
        progress.detail("importing the root filesystem into the engine")
        try:
            answer = client.api.import_image(src=str(output), changes=changes)
        except docker.errors.DockerException as exc:
            raise _docker_failure("importing the base root filesystem", exc) from exc
    match = re.search(r"sha256:[0-9a-f]{64}", str(answer))
    if match is None:
        raise EnvironmentFailure(f"docker import gave no image id: {str(answer)[:200]}")
    _tag_if_absent(client, match.group(0), tag, digest)


def _rootfs_tmpdir(env: Mapping[str, str]) -> str | None:
    """Where mmdebstrap should build the root filesystem: /dev/shm when it is a memory file
    system with room to spare, unless TMPDIR says otherwise.

    dpkg's unpacking and fsyncs are most of a bootstrap; in memory they cost less
    (measured on 2 CPUs: bookworm 22 s on disk, 16 s in /dev/shm; trixie 30 s, 25 s) and the
    tarball is the same byte for byte. ``nodev``/``nosuid`` are fine, ``noexec`` is not
    (mmdebstrap runs the chroot's maintainer scripts).
    """
    if env.get("TMPDIR"):
        return None
    try:
        stat = os.statvfs(_ROOTFS_TMPFS)
    except OSError:
        return None
    if stat.f_flag & (os.ST_NOEXEC | os.ST_RDONLY) or not os.access(_ROOTFS_TMPFS, os.W_OK):
        return None
    if stat.f_bavail * stat.f_frsize < _ROOTFS_TMPFS_NEEDS:
        return None
    if _mem_available() < _ROOTFS_TMPFS_NEEDS:
        return None
    return str(_ROOTFS_TMPFS)


def _mem_available() -> int:
    """MemAvailable from /proc/meminfo in bytes (0 when unknown: then stay on disk)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _apt_failure(lines: list[str]) -> tuple[str, str]:
    """Pick apt's key line and a hint from a failed mmdebstrap/apt run."""
    errors = [line for line in lines if line.startswith("E: ")]
    specific = [line for line in errors if "mmdebstrap" not in line and "failed" not in line]
    key = (specific or errors or lines[-1:] or ["(no output)"])[0]
    missing = re.search(r"Version '.*' for '(?P<pkg>.*)' was not found|"
                        r"Unable to locate package (?P<pkg2>\S+)|"
                        r"Package '?(?P<pkg3>[^' ]+)'? has no installation candidate", key)
    if missing:
        package = missing["pkg"] or missing["pkg2"] or missing["pkg3"] or "NAME"
        return key, ("the mirror no longer has that pinned version: update the pin in the "
                     f"definition (`apt-cache policy {package}` shows the current one), or "
                     "point mirrors at a snapshot mirror of the pin's date")
    if re.search(r"Could not resolve|Failed to fetch|Temporary failure|Connection", key):
        return key, "the Debian mirror is unreachable; check the network or the mirror URL"
    return key, "see the lines above; run again with a working Debian mirror"


def _dpkg_versions_from_tar(path: Path) -> dict[str, str]:
    """Installed packages from ``var/lib/dpkg/status`` inside our own rootfs tarball."""
    with tarfile.open(path) as archive:
        member = next((m for m in archive if m.name in ("./var/lib/dpkg/status",
                                                        "var/lib/dpkg/status")), None)
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            raise EnvironmentFailure("the bootstrapped rootfs has no dpkg status file")
        text = handle.read().decode("utf-8", errors="replace")
    versions: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


# --------------------------------------------------------------------------- registry


def _bootstrap_registry(client: docker.DockerClient, defn: ImageDefinition,
                        definitions: Mapping[str, ImageDefinition], tag: str, digest: str,
                        progress: Progress, ca_cert: Path | None,
                        cancel: threading.Event) -> None:
    plan = registry_base_plan(defn)
    image = _pull_verified(client, plan, progress)
    files: dict[str, bytes] = {}
    if ca_cert is not None:
        try:
            files[Path(_CA_IN_CONTAINER).name] = ca_cert.read_bytes()
        except OSError as exc:
            raise InputError(f"--ca-cert {ca_cert}: {exc.strerror}") from exc
    _check_cancel(cancel, tag)
    progress.detail(f"installing {len(defn.packages)} pinned Debian packages with apt")
    _build_in_container(client, defn, definitions, image=str(image.id), script=plan.script,
                        network_mode=plan.network_mode, files=files, tag=tag, digest=digest,
                        role="base-image", progress=progress, on_error=_apt_failure,
                        cancel=cancel)


def _pull_verified(client: docker.DockerClient, plan: RegistryBasePlan,
                   progress: Progress) -> Image:
    reference = f"{plan.repository}@{plan.digest}"
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        progress.detail(f"pulling {reference}")
        try:
            image = client.images.pull(plan.repository, tag=plan.digest)
        except docker.errors.DockerException as exc:
            raise EnvironmentFailure(
                f"could not pull {reference}: {_first_line(exc)}",
                "no registry reachable? `docker save`/`docker load` the image from a machine "
                "that has it, or use the mmdebstrap base (containers/base-bookworm.toml)",
            ) from exc
    except docker.errors.DockerException as exc:
        raise _docker_failure(f"inspecting {reference}", exc) from exc
    repo_digests: list[str] = image.attrs.get("RepoDigests") or []
    if not any(d.endswith(f"@{plan.digest}") for d in repo_digests):
        raise EnvironmentFailure(
            f"image for {reference} does not carry that digest (it has {repo_digests})",
            "remove the local image and pull again; never retag another image as this one")
    return image


# --------------------------------------------------------------------------- layers


def _download_locked(defn: ImageDefinition, definitions: Mapping[str, ImageDefinition],
                     board: _Board, cancel: threading.Event) -> None:
    """Put a toolchain's locked files in the host's wheel cache: only the missing ones are
    downloaded (a base pin bump rebuilds every layer without asking PyPI again), into a
    private directory, hash-checked, then moved in, so concurrent downloads of the same
    file (every lock pins pip) never see each other's partial files."""
    wheels_dir = cache_root() / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    missing = [r for r in defn.requirements if _find_cached(wheels_dir, r) is None]
    if not missing:
        board.detail(defn.name, f"all {len(defn.requirements)} locked files are in the "
                                "wheel cache")
        return
    board.set(defn.name, ImageState.DOWNLOADING,
              f"downloading {len(missing)} of {len(defn.requirements)} locked files from PyPI")
    progress = _ImageProgress(board, defn.name)
    with tempfile.TemporaryDirectory(prefix="wheels-download-", dir=wheels_dir.parent) as tmp:
        scratch = Path(tmp)
        lock_path = scratch / "requirements.lock"
        lock_path.write_bytes(lock_text(missing))
        dest = scratch / "files"
        argv = pip_download_command(defn, definitions, lock_path, dest, _host_pip())
        _run_host(argv, env=dict(os.environ), progress=progress,
                  what=f"pip download for image '{defn.name}'", on_error=_pip_failure,
                  cancel=cancel)
        for requirement in missing:
            path = _cached_file(dest, requirement)
            path.replace(wheels_dir / path.name)
    board.set(defn.name, ImageState.WAITING, "downloaded")


def _build_layer(client: docker.DockerClient, defn: ImageDefinition,
                 definitions: Mapping[str, ImageDefinition], base: ToolchainImage, tag: str,
                 digest: str, progress: Progress, cancel: threading.Event) -> None:
    """Install the (already downloaded) locked files offline on the base and commit."""
    wheels_dir = cache_root() / "wheels"
    stage = Path(_STAGE).name
    files = {f"{stage}/requirements.lock": defn.lock_bytes}
    pip_wheel = ""
    for requirement in defn.requirements:
        path = _cached_file(wheels_dir, requirement)
        files[f"{stage}/{path.name}"] = path.read_bytes()
        if requirement.key == "pip":
            pip_wheel = path.name
    if not pip_wheel.endswith(".whl"):
        raise EnvironmentFailure(f"pip came as {pip_wheel!r}, not a wheel")
    _build_in_container(client, defn, definitions, image=base.image_id,
                        script=layer_script(defn, pip_wheel), network_mode="none",
                        files=files, tag=tag, digest=digest,
                        role="toolchain-image", progress=progress, on_error=_layer_failure,
                        cancel=cancel)


def _find_cached(directory: Path, requirement: LockedRequirement) -> Path | None:
    """The downloaded file of a requirement: right name prefix and a locked hash."""
    prefix = normalise_name(f"{requirement.name}-{requirement.version}") + "-"
    if not directory.is_dir():
        return None
    for path in sorted(directory.iterdir()):
        if normalise_name(path.name).startswith(prefix) and path.is_file() \
                and sha256_file(path) in requirement.hashes:
            return path
    return None


def _cached_file(directory: Path, requirement: LockedRequirement) -> Path:
    found = _find_cached(directory, requirement)
    if found is None:
        raise EnvironmentFailure(
            f"pip download left no file for {requirement.name}=={requirement.version} "
            f"matching the locked hashes in {directory}",
            "check the lock's --hash values against PyPI")
    return found


def _host_pip() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise EnvironmentFailure("no pip on this host to download the locked wheels",
                             "install pip (python3 -m ensurepip, or apt-get install python3-pip)")


def _pip_failure(lines: list[str]) -> tuple[str, str]:
    errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or ["(none)"]
    hint = ("a locked file changed or vanished on the index; re-check the lock's hashes"
            if any("HASH" in line.upper() for line in lines)
            else "PyPI must be reachable from this host (pip's own proxy/CA settings apply)")
    return errors[0], hint


def _layer_failure(lines: list[str]) -> tuple[str, str]:
    key = next((line for line in reversed(lines)
                if line.startswith(("ERROR", "runtime contract")) or "Error" in line),
               lines[-1] if lines else "(no output)")
    return key, "the definition's lock or checks do not fit its base; see the output above"


def _build_in_container(client: docker.DockerClient, defn: ImageDefinition,
                        definitions: Mapping[str, ImageDefinition], *, image: str, script: str,
                        network_mode: str, files: Mapping[str, bytes], tag: str, digest: str,
                        role: str, progress: Progress, on_error: _ErrorPicker,
                        cancel: threading.Event) -> None:
    """Run a trusted build script in a throwaway container and commit it as ``tag``.

    ``files`` (paths relative to /tmp) are copied in before it starts: the container may
    have no network, and nothing from the host is ever bind-mounted.
    """
    env = _env_of(defn, definitions)
    api = client.api
    # Root, because it installs into the image, and a writable root filesystem, because
    # it is committed; otherwise the same baseline as every container reprobuild makes.
    hardening = Hardening(network_mode=network_mode, cap_add=IMAGE_BUILD_CAPS,
                          read_only=False, pids=1024, memory_mb=4096, log_mb=64)
    container_id: str | None = None
    try:
        try:
            config = container_config(
                api, image, ["/bin/sh", "-euc", script], hardening=hardening,
                labels={**RunLabels.new().for_role("image-build"), IMAGE_LABEL: defn.name},
                user="0:0", environment=env)
            created = api.create_container_from_config(config)  # type: ignore[no-untyped-call]
            container_id = str(created["Id"])
            if files:
                api.put_archive(container_id, _UPLOAD, files_tar(files))
        except docker.errors.DockerException as exc:
            raise _docker_failure(f"creating the build container for {tag}", exc) from exc
        code, stdout, stderr = _run_container(api, container_id, _BUILD_DEADLINE_S, cancel)
        lines = (stdout + stderr).splitlines()
        if code != 0:
            key, hint = on_error(stderr.splitlines() or lines)
            tail = "\n".join(lines[-_TAIL_LINES:])
            raise EnvironmentFailure(
                f"building {tag} failed (exit {code}): {key}\n--- last output ---\n{tail}", hint)
        versions = _parse_versions(stdout)
        _check_cancel(cancel, tag)
        conf = {"Env": [f"{k}={v}" for k, v in env.items()], "Cmd": ["/bin/sh"],
                "WorkingDir": "/", "User": "", "Labels": _labels(defn, digest, versions, role)}
        try:
            committed = api.commit(container_id, conf=conf)
        except docker.errors.DockerException as exc:
            raise _docker_failure(f"committing {tag}", exc) from exc
        _tag_if_absent(client, str(committed["Id"]), tag, digest)
    finally:
        if container_id is not None:
            with contextlib.suppress(docker.errors.DockerException):
                api.remove_container(container_id, force=True, v=True)


def _run_container(api: docker.APIClient, container_id: str, deadline_s: float,
                   cancel: threading.Event) -> tuple[int, str, str]:
    """Start, poll against our own deadline (SDK waits are only HTTP timeouts) and the
    cancel event, collect logs. The caller removes the container."""
    try:
        _check_cancel(cancel, container_id)
        api.start(container_id)
        end = time.monotonic() + deadline_s
        while True:
            state = api.inspect_container(container_id).get("State", {})
            if state.get("Status") in ("exited", "dead"):
                break
            if cancel.is_set():
                api.kill(container_id)
                raise _Cancelled(container_id)
            if time.monotonic() > end:
                api.kill(container_id)
                raise EnvironmentFailure(f"image build step exceeded {deadline_s:.0f} s",
                                         "is the machine overloaded?")
            cancel.wait(_POLL_S)
        code = int(state.get("ExitCode", -1))
        stdout = api.logs(container_id, stdout=True, stderr=False).decode("utf-8", "replace")
        stderr = api.logs(container_id, stdout=False, stderr=True).decode("utf-8", "replace")
    except docker.errors.DockerException as exc:
        raise _docker_failure("running an image build step", exc) from exc
    return code, stdout, stderr


def _parse_versions(stdout: str) -> dict[str, str]:
    """Our versions block: dpkg packages by name; a pip name clashing with one gets 'pypi:'."""
    block = stdout.split(_VERSIONS_BEGIN, 1)[-1].split(_VERSIONS_END, 1)[0]
    deb: dict[str, str] = {}
    pypi: dict[str, str] = {}
    for line in block.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] == "deb":
            deb[parts[1]] = parts[2]
        elif len(parts) == 3 and parts[0] == "pypi":
            pypi[normalise_name(parts[1])] = parts[2]
    if not deb:
        raise EnvironmentFailure("the build step reported no package versions")
    versions = dict(deb)
    for name, version in pypi.items():
        versions[f"pypi:{name}" if name in deb else name] = version
    return versions


# --------------------------------------------------------------------------- list / prune


def list_images(client: docker.DockerClient) -> list[ToolchainImageInfo]:
    """Every tagged ``reprobuild/<name>:<hash16>`` image we built, current or not."""
    try:
        definitions: dict[str, ImageDefinition] = load_definitions()
    except InputError:
        definitions = {}
    return _list(client, definitions)


def _list(client: docker.DockerClient,
          definitions: Mapping[str, ImageDefinition]) -> list[ToolchainImageInfo]:
    current = {image_tag(d, definitions) for d in definitions.values()}
    try:
        found = client.images.list(filters={"label": [f"{MANAGED}=true", IMAGE_LABEL]})
    except docker.errors.DockerException as exc:
        raise _docker_failure("listing images", exc) from exc
    result: list[ToolchainImageInfo] = []
    for image in found:
        labels: dict[str, str] = (image.attrs.get("Config") or {}).get("Labels") or {}
        for tag in image.tags:
            match = _OUR_TAG.fullmatch(tag)
            if match is None or match["name"] != labels.get(IMAGE_LABEL):
                continue
            result.append(ToolchainImageInfo(
                name=match["name"], tag=tag, image_id=str(image.id),
                size=int(image.attrs.get("Size") or 0), created=str(image.attrs.get("Created")),
                current=tag in current))
    return sorted(result, key=lambda info: (info.name, info.tag))


def prune_images(client: docker.DockerClient, *, all: bool = False) -> list[str]:
    """Untag/remove our images that are not current (or all); bases last, in-use ones kept."""
    definitions = load_definitions()  # strict: never judge "current" from broken definitions
    infos = [i for i in _list(client, definitions) if all or not i.current]
    layered_first = sorted(infos, key=lambda i: i.name.startswith("base"))
    removed: list[str] = []
    for info in layered_first:
        try:
            client.images.remove(info.tag)
        except docker.errors.DockerException:
            continue  # used by a container, or a child image still needs it
        removed.append(info.tag)
    return removed


# --------------------------------------------------------------------------- helpers


def _run_host(argv: list[str], *, env: Mapping[str, str], progress: Progress, what: str,
              on_error: _ErrorPicker, cancel: threading.Event) -> None:
    """Run a trusted host tool, stream its info lines, stop it on Ctrl-C, when ``cancel``
    is set (another image failed) or after the deadline."""
    tail: deque[str] = deque(maxlen=400)
    _check_cancel(cancel, what)
    try:
        # A process group of its own, stopped as a whole: mmdebstrap only waits for its
        # children on SIGTERM (it counts on a terminal signalling the group), then
        # unmounts and removes its chroot.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env), text=True,
                                errors="replace", start_new_session=True)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot run {what}: {exc.strerror}") from exc
    deadline = time.monotonic() + _BUILD_DEADLINE_S
    finished = threading.Event()

    def stop(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def watch() -> None:
        while not finished.wait(_POLL_S):
            if cancel.is_set() or time.monotonic() > deadline:
                stop(signal.SIGTERM)
                return

    watcher = threading.Thread(target=watch, name="reprobuild-image-tool", daemon=True)
    watcher.start()
    with proc:
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                if line.startswith(("I: ", "Saved ")):
                    progress.detail(line)
            code = proc.wait()
        finally:
            finished.set()
            if proc.poll() is None:  # Ctrl-C or an error while reading: do not leave it behind
                stop(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    stop(signal.SIGKILL)
                    proc.wait()
            watcher.join()
    if cancel.is_set() and code != 0:
        raise _Cancelled(what)
    if code != 0:
        lines = [line for line in tail if not line.startswith("(Reading database")]
        key, hint = on_error(lines)
        shown = "\n".join(lines[-_TAIL_LINES:])
        raise EnvironmentFailure(f"{what} failed (exit {code}): {key}\n--- last output ---\n"
                                 f"{shown}", hint)


def _check_cancel(cancel: threading.Event, what: str) -> None:
    if cancel.is_set():
        raise _Cancelled(what)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _docker_failure(doing: str, exc: BaseException) -> EnvironmentFailure:
    return EnvironmentFailure(f"Docker engine error while {doing}: {_first_line(exc)}",
                              "is the engine running and reachable (docker info)?")
