"""Building and finding toolchain images in the engine (the Docker side of images).

``ensure_image`` is a tag lookup when the image exists; otherwise it bootstraps the base
(mmdebstrap + ``docker import``, or a registry pull by digest) and the toolchain layer (wheels
downloaded and hash-checked on the host, installed in a ``--network none`` container with the
hardening baseline, committed). Every step's container is labelled and removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
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
    ImageDefinition,
    LockedRequirement,
    RegistryBasePlan,
    ToolchainImage,
    ToolchainImageInfo,
    _did_you_mean,
    _env_of,
    cache_root,
    definition_hash,
    image_tag,
    layer_script,
    load_definitions,
    mmdebstrap_command,
    pip_download_command,
    registry_base_plan,
)
from reprobuild.progress import Progress
from reprobuild.sandbox.engine import HOST, MANAGED, PID, ROLE, RUN, RunLabels
from reprobuild.sandbox.hardening import Hardening, container_config

__all__ = ["ensure_image", "list_images", "prune_images"]

_BUILD_DEADLINE_S = 1800.0
_POLL_S = 0.5
_TAIL_LINES = 40
_OUR_TAG = re.compile(r"reprobuild/(?P<name>[a-z0-9][a-z0-9._-]*):(?P<hex>[0-9a-f]{16})")
_ErrorPicker = Callable[[list[str]], tuple[str, str]]
"""Picks the key line of a failed tool's output and a hint for the user."""
IMAGE_BUILD_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL")
"""What a root install step needs (files owned by others; apt dropping to ``_apt``)."""


# --------------------------------------------------------------------------- ensure


def ensure_image(client: docker.DockerClient, name: str, *, progress: Progress,
                 ca_cert: Path | None = None,
                 definitions_dir: Path | None = None) -> ToolchainImage:
    """Return the image for ``name``, building it (and its base) only if its tag is missing.

    ``definitions_dir`` defaults to :func:`containers_dir`; tests point it elsewhere.
    """
    definitions = load_definitions(definitions_dir)
    if name not in definitions:
        raise InputError(f"no image definition named '{name}'",
                         _did_you_mean(name, sorted(definitions)))
    return _ensure(client, definitions[name], definitions, progress, ca_cert)


def _ensure(client: docker.DockerClient, defn: ImageDefinition,
            definitions: Mapping[str, ImageDefinition], progress: Progress,
            ca_cert: Path | None) -> ToolchainImage:
    digest = definition_hash(defn, definitions)
    tag = image_tag(defn, definitions)
    found = _lookup(client, defn.name, tag, digest)
    if found is not None:
        return found
    with _host_lock(tag, progress):
        found = _lookup(client, defn.name, tag, digest)
        if found is not None:
            return found
        started = time.monotonic()
        if defn.kind == "toolchain":
            base = _ensure(client, definitions[defn.base], definitions, progress, ca_cert)
            progress.step(f"building toolchain image {tag}")
            _build_layer(client, defn, definitions, base, tag, digest, progress)
        elif defn.kind == "mmdebstrap":
            progress.step(f"bootstrapping base image {tag} (mmdebstrap)")
            _bootstrap_mmdebstrap(client, defn, definitions, tag, digest, progress)
        else:
            progress.step(f"bootstrapping base image {tag} from {defn.reference}")
            _bootstrap_registry(client, defn, definitions, tag, digest, progress, ca_cert)
        progress.detail(f"{tag} ready in {time.monotonic() - started:.0f} s")
    found = _lookup(client, defn.name, tag, digest)
    if found is None:  # pragma: no cover - someone removed it between two calls
        raise EnvironmentFailure(f"image {tag} vanished right after it was built",
                                 "is another process pruning reprobuild images?")
    return found


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
def _host_lock(tag: str, progress: Progress) -> Iterator[None]:
    """Serialise builds of one tag on this host; other hosts just race to an equal result."""
    path = cache_root() / "locks" / (re.sub(r"[^A-Za-z0-9._-]", "_", tag) + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.detail(f"waiting for another reprobuild process building {tag}")
            fcntl.flock(handle, fcntl.LOCK_EX)
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
                          progress: Progress) -> None:
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
        _run_host(argv, env=env, progress=progress, what="mmdebstrap",
                  on_error=_apt_failure)
        tar_sha = sha256_file(output)
        progress.detail(f"rootfs.tar sha256 {tar_sha}")
        versions = _dpkg_versions_from_tar(output)
        labels = _labels(defn, digest, versions, "base-image")
        labels["org.reprobuild.rootfs-sha256"] = tar_sha
        changes = [f"ENV {k}={json.dumps(v)}" for k, v in _env_of(defn, definitions).items()]
        changes.append("LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()))
        changes.append('CMD ["/bin/sh"]')
        progress.detail("importing the root filesystem into the engine")
        try:
            answer = client.api.import_image(src=str(output), changes=changes)
        except docker.errors.DockerException as exc:
            raise _docker_failure("importing the base root filesystem", exc) from exc
    match = re.search(r"sha256:[0-9a-f]{64}", str(answer))
    if match is None:
        raise EnvironmentFailure(f"docker import gave no image id: {str(answer)[:200]}")
    _tag_if_absent(client, match.group(0), tag, digest)


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
                        progress: Progress, ca_cert: Path | None) -> None:
    plan = registry_base_plan(defn)
    image = _pull_verified(client, plan, progress)
    files: dict[str, bytes] = {}
    if ca_cert is not None:
        try:
            files[Path(_CA_IN_CONTAINER).name] = ca_cert.read_bytes()
        except OSError as exc:
            raise InputError(f"--ca-cert {ca_cert}: {exc.strerror}") from exc
    progress.detail(f"installing {len(defn.packages)} pinned Debian packages with apt")
    _build_in_container(client, defn, definitions, image=str(image.id), script=plan.script,
                        network_mode=plan.network_mode, files=files, tag=tag, digest=digest,
                        role="base-image", progress=progress, on_error=_apt_failure)


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


def _build_layer(client: docker.DockerClient, defn: ImageDefinition,
                 definitions: Mapping[str, ImageDefinition], base: ToolchainImage, tag: str,
                 digest: str, progress: Progress) -> None:
    wheels_dir = cache_root() / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reprobuild-lock-") as scratch:
        lock_path = Path(scratch) / "requirements.lock"
        lock_path.write_bytes(defn.lock_bytes)
        progress.detail(f"downloading {len(defn.requirements)} locked files on the host")
        argv = pip_download_command(defn, definitions, lock_path, wheels_dir, _host_pip())
        _run_host(argv, env=dict(os.environ), progress=progress, what="pip download",
                  on_error=_pip_failure)
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
    progress.detail("installing the locked wheels offline")
    _build_in_container(client, defn, definitions, image=base.image_id,
                        script=layer_script(defn, pip_wheel), network_mode="none",
                        files=files, tag=tag, digest=digest,
                        role="toolchain-image", progress=progress, on_error=_layer_failure)


def _cached_file(wheels_dir: Path, requirement: LockedRequirement) -> Path:
    """The downloaded file of a requirement: right name prefix and a locked hash."""
    prefix = normalise_name(f"{requirement.name}-{requirement.version}") + "-"
    for path in sorted(wheels_dir.iterdir()):
        if normalise_name(path.name).startswith(prefix) and path.is_file() \
                and sha256_file(path) in requirement.hashes:
            return path
    raise EnvironmentFailure(
        f"pip download left no file for {requirement.name}=={requirement.version} "
        f"matching the locked hashes in {wheels_dir}",
        "check the lock's --hash values against PyPI")


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
                        role: str, progress: Progress, on_error: _ErrorPicker) -> None:
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
        code, stdout, stderr = _run_container(api, container_id, _BUILD_DEADLINE_S)
        lines = (stdout + stderr).splitlines()
        if code != 0:
            key, hint = on_error(stderr.splitlines() or lines)
            tail = "\n".join(lines[-_TAIL_LINES:])
            raise EnvironmentFailure(
                f"building {tag} failed (exit {code}): {key}\n--- last output ---\n{tail}", hint)
        versions = _parse_versions(stdout)
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


def _run_container(api: docker.APIClient, container_id: str,
                   deadline_s: float) -> tuple[int, str, str]:
    """Start, poll against our own deadline (SDK waits are only HTTP timeouts), collect logs."""
    try:
        api.start(container_id)
        end = time.monotonic() + deadline_s
        while True:
            state = api.inspect_container(container_id).get("State", {})
            if state.get("Status") in ("exited", "dead"):
                break
            if time.monotonic() > end:
                api.kill(container_id)
                raise EnvironmentFailure(f"image build step exceeded {deadline_s:.0f} s",
                                         "is the machine overloaded?")
            time.sleep(_POLL_S)
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
              on_error: _ErrorPicker) -> None:
    """Run a trusted host tool, stream its info lines, kill it on Ctrl-C or after the deadline."""
    tail: deque[str] = deque(maxlen=400)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env), text=True,
                                errors="replace")
    except OSError as exc:
        raise EnvironmentFailure(f"cannot run {what}: {exc.strerror}") from exc
    timer = threading.Timer(_BUILD_DEADLINE_S, proc.kill)
    timer.start()
    with proc:
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                if line.startswith(("I: ", "Saved ", "Collecting ")):
                    progress.detail(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # Ctrl-C or an error while reading: do not leave it behind
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if code != 0:
        lines = [line for line in tail if not line.startswith("(Reading database")]
        key, hint = on_error(lines)
        shown = "\n".join(lines[-_TAIL_LINES:])
        raise EnvironmentFailure(f"{what} failed (exit {code}): {key}\n--- last output ---\n"
                                 f"{shown}", hint)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _docker_failure(doing: str, exc: BaseException) -> EnvironmentFailure:
    return EnvironmentFailure(f"Docker engine error while {doing}: {_first_line(exc)}",
                              "is the engine running and reachable (docker info)?")
