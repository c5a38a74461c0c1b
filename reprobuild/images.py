"""Pinned toolchain images: definitions in ``containers/``, built locally, cached by hash.

Two builds are only comparable if they ran on the same toolchain, and a verdict is only
worth something if someone else can get that toolchain again. So every image is described by
a small TOML definition with exact Debian versions and a hash-locked pip requirements file,
and is tagged ``reprobuild/<name>:<first 16 hex of the definition hash>``: a warm run costs one
image inspect, and any change to a pin, a lock or the base produces a new tag.

Two kinds of base exist. ``mmdebstrap`` bootstraps a Debian root filesystem on the host and
imports it (no registry needed, bit-identical tarballs for the same mirror state). ``registry``
pulls an image pinned by digest and installs the Debian packages with apt, the only step that
gets a network. Toolchain layers never have one: their wheels are downloaded and hash-checked
on the host, then installed in a ``--network none`` container that is committed as the image.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.images import Image

from reprobuild.archive import files_tar
from reprobuild.errors import EnvironmentFailure, InputError
from reprobuild.hashing import sha256_file
from reprobuild.hashlock import normalise_name, parse_hashed_lock
from reprobuild.progress import Progress
from reprobuild.sandbox.engine import HOST, MANAGED, PID, ROLE, RUN, RunLabels
from reprobuild.sandbox.hardening import Hardening, container_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "IMAGE_LABEL",
    "KINDS",
    "ImageDefinition",
    "LockedRequirement",
    "RegistryBasePlan",
    "ToolchainImage",
    "ToolchainImageInfo",
    "containers_dir",
    "definition_hash",
    "ensure_image",
    "image_tag",
    "layer_script",
    "list_images",
    "load_definitions",
    "mmdebstrap_command",
    "parse_lock",
    "pip_download_command",
    "prune_images",
    "registry_base_plan",
    "toolchain_names",
]

IMAGE_LABEL = "org.reprobuild.image"
DEFINITION_LABEL = "org.reprobuild.definition"
VERSIONS_LABEL = "org.reprobuild.versions"

KINDS = ("mmdebstrap", "registry", "toolchain")
BASE_KINDS = frozenset({"mmdebstrap", "registry"})

VENV = "/opt/reprobuild/venv"
FAKETIME_LINK = "/opt/reprobuild/lib/libfaketime.so.1"
_UPLOAD = "/tmp"  # inside our own throwaway container, never on the host
_STAGE = f"{_UPLOAD}/reprobuild-stage"
_CA_IN_CONTAINER = f"{_UPLOAD}/reprobuild-ca.pem"

_BUILD_DEADLINE_S = 1800.0
_POLL_S = 0.5
_TAIL_LINES = 40
_VERSIONS_BEGIN = "@@reprobuild-versions@@"
_VERSIONS_END = "@@reprobuild-versions-end@@"

_GLIBC_MINOR = 36
"""glibc 2.36 (bookworm): wheels for manylinux_2_17 up to manylinux_2_36 run on it."""
_ARCH_TO_PLATFORM = {"amd64": "x86_64", "arm64": "aarch64"}
_MMDEBSTRAP_HOOKS = Path("/usr/share/mmdebstrap/hooks")
_VARIANTS = frozenset({"extract", "custom", "essential", "apt", "required", "minbase",
                       "buildd", "important", "standard"})

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEB_PIN = re.compile(r"(?P<name>[a-z0-9][a-z0-9+.-]+)=(?P<version>[A-Za-z0-9.+~:-]+)")
_MIRROR = re.compile(r"deb (\[[^\]]*\] )?\S+ \S+( \S+)+")
_HOOK = re.compile(r"[a-z0-9][a-z0-9-]*")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PY_VERSION = re.compile(r"3\.[0-9]+")
_PYTHON_PACKAGE = re.compile(r"python(3\.\d+)(?:-minimal)?")
_OUR_TAG = re.compile(r"reprobuild/(?P<name>[a-z0-9][a-z0-9._-]*):(?P<hex>[0-9a-f]{16})")

# The runtime contract the sandbox relies on, applied to every base after its packages.
# It runs with $ROOT set to the root filesystem: the mmdebstrap chroot on the host, or "/"
# inside the registry image's container. Its text is part of every definition hash.
CONTRACT_SCRIPT = r"""
add_account() {
    grep -q "^$1:" "$ROOT/etc/group" || echo "$1:x:$2:" >> "$ROOT/etc/group"
    grep -q "^$1:" "$ROOT/etc/passwd" \
        || echo "$1:x:$2:$2:reprobuild $1:$3:/bin/sh" >> "$ROOT/etc/passwd"
}
add_account builder 1000 /home/builder
add_account rebuilder 2000 /home/rebuilder
if [ -x "$ROOT/usr/sbin/locale-gen" ]; then
    printf '%s\n' 'en_US.UTF-8 UTF-8' 'et_EE.UTF-8 UTF-8' > "$ROOT/etc/locale.gen"
    chroot "$ROOT" /usr/sbin/locale-gen
fi
lib=$(cat "$ROOT"/var/lib/dpkg/info/libfaketime*.list | grep '/faketime/libfaketime\.so\.1$' \
      | head -n 1)
[ -n "$lib" ] || { echo "libfaketime.so.1 is not installed" >&2; exit 1; }
mkdir -p "$ROOT/opt/reprobuild/lib"
ln -sfn "$lib" "$ROOT/opt/reprobuild/lib/libfaketime.so.1"
"""

# Checked inside every toolchain layer container before it is committed, so an image that
# breaks the contract is never tagged.
CONTRACT_CHECK = r"""
fail() { echo "runtime contract broken: $*" >&2; exit 1; }
for tool in sh tar sleep env date cat ls mkdir rm; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done
[ "$(getent passwd builder | cut -d: -f3,4,6)" = "1000:1000:/home/builder" ] || fail builder
[ "$(getent passwd rebuilder | cut -d: -f3,4,6)" = "2000:2000:/home/rebuilder" ] \
    || fail rebuilder
[ "$(getent group builder | cut -d: -f3)" = 1000 ] || fail "group builder"
[ "$(getent group rebuilder | cut -d: -f3)" = 2000 ] || fail "group rebuilder"
[ "$(TZ=Etc/GMT-14 date +%z)" = "+1400" ] || fail "tzdata (TZ=Etc/GMT-14)"
for loc in C.UTF-8 en_US.UTF-8 et_EE.UTF-8; do
    [ -z "$(LC_ALL=$loc locale 2>&1 >/dev/null)" ] || fail "locale $loc"
done
f=/opt/reprobuild/lib/libfaketime.so.1
[ -e "$f" ] || fail "$f"
now=$(date +%s)
shifted=$(LD_PRELOAD=$f FAKETIME=+398d date +%s)
[ $((shifted - now)) -gt 34000000 ] || fail "libfaketime does not shift the clock"
# The sandbox's agent (PID 1 of every build) and how it drops the build's privileges;
# the egress trap's tools.
[ -x /usr/bin/python3 ] || fail "/usr/bin/python3 (the sandbox's agent) is missing"
[ -x /usr/bin/setpriv ] || fail "/usr/bin/setpriv (util-linux) is missing"
for tool in nft ip; do
    command -v "$tool" >/dev/null || fail "$tool (the egress trap) is missing"
done
"""

_VERSIONS_SCRIPT = rf"""
echo '{_VERSIONS_BEGIN}'
dpkg-query -W -f='${{db:Status-Abbrev}}\t${{Package}}\t${{Version}}\n' | sed -n 's/^ii *\t/deb\t/p'
if [ -x {VENV}/bin/python ]; then
    {VENV}/bin/python -c 'import importlib.metadata as m
for d in m.distributions(): print("pypi", d.metadata["Name"], d.version, sep="\t")'
fi
echo '{_VERSIONS_END}'
"""

_LAYER_TEMPLATE = """
{python} -m venv --without-pip {venv}
{venv}/bin/python "{stage}/{pip_wheel}/pip" install --no-index --find-links "{stage}" \\
    --require-hashes --no-cache-dir --disable-pip-version-check --no-input \\
    --progress-bar off -r "{stage}/requirements.lock"
rm -rf "{stage}"
{checks}
sh -euc {contract_check}
rm -rf /tmp/* /root/.cache
{versions}
"""

_ErrorPicker = Callable[[list[str]], tuple[str, str]]
"""Picks the key line of a failed tool's output and a hint for the user."""

IMAGE_BUILD_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL")
"""What a root install step needs (files owned by others; apt dropping to ``_apt``)."""

_RECIPE_VERSION = "2"
"""Bump when the way images are assembled changes in a way the scripts above do not show."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LockedRequirement:
    """One ``name==version --hash=sha256:...`` line of a lock file."""

    name: str
    version: str
    hashes: tuple[str, ...]

    @property
    def key(self) -> str:
        """The normalised project name (PEP 503)."""
        return normalise_name(self.name)


@dataclass(frozen=True)
class ImageDefinition:
    """One parsed, validated ``containers/<name>.toml``; fields unused by a kind stay empty."""

    name: str
    kind: str
    source: Path
    description: str = ""
    # bases (mmdebstrap, registry)
    suite: str = ""
    architecture: str = ""
    variant: str = ""
    source_date_epoch: int | None = None
    reference: str = ""
    mirrors: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    dpkg_options: tuple[str, ...] = ()
    apt_options: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    customize: tuple[str, ...] = ()
    # toolchains
    base: str = ""
    python: str = ""
    python_version: str = ""
    lock: str = ""
    lock_bytes: bytes = b""
    requirements: tuple[LockedRequirement, ...] = ()
    sdists: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    # all
    env: tuple[tuple[str, str], ...] = ()

    @property
    def is_base(self) -> bool:
        """Whether this is a root filesystem rather than a layer on one."""
        return self.kind in BASE_KINDS


@dataclass(frozen=True)
class ToolchainImage:
    """A ready image: what the sandbox runs and what the report records."""

    name: str
    tag: str
    image_id: str
    definition_sha256: str
    versions: tuple[tuple[str, str], ...]
    path_env: str
    architecture: str = "amd64"
    """The engine's name of the image's CPU (``amd64``, ``arm64``)."""

    @property
    def python(self) -> str | None:
        """The ``3.N`` of the image's Python, from its pinned package list."""
        found = {m.group(1) for name, _ in self.versions
                 if (m := _PYTHON_PACKAGE.fullmatch(name))}
        return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class ToolchainImageInfo:
    """One tagged reprobuild image in the engine, for ``reprobuild images list``."""

    name: str
    tag: str
    image_id: str
    size: int
    created: str
    current: bool


@dataclass(frozen=True)
class RegistryBasePlan:
    """What bootstrapping a ``registry`` base will do; pure, so it can be unit-tested."""

    repository: str
    digest: str
    script: str
    network_mode: str


# --------------------------------------------------------------------------- loading

_STR, _INT, _LIST, _ENV = "a string", "an integer", "a list of strings", "a table of strings"
_COMMON = {"kind": (_STR, True), "description": (_STR, False), "env": (_ENV, False)}
_BASE_COMMON = {
    "architecture": (_STR, True),
    "mirrors": (_LIST, True),
    "packages": (_LIST, True),
    "dpkg_options": (_LIST, False),
    "apt_options": (_LIST, False),
    "customize": (_LIST, False),
}
_SCHEMA: Mapping[str, Mapping[str, tuple[str, bool]]] = {
    "mmdebstrap": {**_COMMON, **_BASE_COMMON, "suite": (_STR, True), "variant": (_STR, True),
                   "source_date_epoch": (_INT, True), "hooks": (_LIST, False)},
    "registry": {**_COMMON, **_BASE_COMMON, "reference": (_STR, True)},
    "toolchain": {**_COMMON, "base": (_STR, True), "python": (_STR, True),
                  "python_version": (_STR, True), "lock": (_STR, True),
                  "sdists": (_LIST, False), "checks": (_LIST, False)},
}


def containers_dir() -> Path:
    """``<package>/_data/containers`` in an installed wheel, else ``<repo>/containers``."""
    package = Path(__file__).resolve().parent
    bundled = package / "_data" / "containers"
    return bundled if bundled.is_dir() else package.parent / "containers"


def load_definitions(directory: Path | None = None) -> dict[str, ImageDefinition]:
    """Parse and cross-check every ``*.toml`` definition; malformed ones are InputError."""
    where = directory if directory is not None else containers_dir()
    if not where.is_dir():
        raise InputError(f"no image definitions at {where}",
                         "reinstall reprobuild; the wheel ships them under "
                         "reprobuild/_data/containers")
    found = {path.stem: _load_one(path) for path in sorted(where.glob("*.toml"))}
    for defn in found.values():
        if defn.kind != "toolchain":
            continue
        base = found.get(defn.base)
        if base is None:
            raise InputError(f"{defn.source}: base: no definition named '{defn.base}'",
                             _did_you_mean(defn.base, [n for n, d in found.items() if d.is_base]))
        if not base.is_base:
            raise InputError(f"{defn.source}: base: '{defn.base}' is a {base.kind}, not a base",
                             "point base at a definition of kind mmdebstrap or registry")
    return found


def toolchain_names(directory: Path | None = None) -> list[str]:
    """Names of the toolchain (non-base) definitions, sorted."""
    return sorted(n for n, d in load_definitions(directory).items() if d.kind == "toolchain")


def _load_one(path: Path) -> ImageDefinition:
    name = path.stem
    if not _NAME.fullmatch(name):
        raise InputError(f"{path}: the file name must be a lowercase image name "
                         "([a-z0-9][a-z0-9._-]*)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _SCHEMA:
        raise InputError(f"{path}: kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    schema = _SCHEMA[kind]
    for key in data:
        if key not in schema:
            raise InputError(f"{path}: {key}: unknown key for kind '{kind}'",
                             _did_you_mean(key, list(schema)))
    for key, (_type, required) in schema.items():
        if required and key not in data:
            raise InputError(f"{path}: {key}: missing (required for kind '{kind}')")
    values = {key: _typed(path, key, schema[key][0], value) for key, value in data.items()}
    if kind == "toolchain":
        return _toolchain(path, name, values)
    return _base(path, name, kind, values)


def _typed(path: Path, key: str, expected: str, value: object) -> Any:
    ok: bool
    if expected == _STR:
        ok = isinstance(value, str)
    elif expected == _INT:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif expected == _LIST:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if not ok:
        article = "a non-negative integer" if expected == _INT else expected
        raise InputError(f"{path}: {key}: must be {article}, got {value!r}")
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        for env_key in value:
            if not _ENV_NAME.fullmatch(env_key):
                raise InputError(f"{path}: env.{env_key}: not a valid variable name")
        return tuple(sorted(value.items()))
    return value


def _check_each(path: Path, key: str, items: tuple[str, ...], pattern: re.Pattern[str],
                expected: str) -> None:
    for index, item in enumerate(items):
        if not pattern.fullmatch(item):
            raise InputError(f"{path}: {key}[{index}]: {item!r} is not {expected}")


def _base(path: Path, name: str, kind: str, v: dict[str, Any]) -> ImageDefinition:
    architecture: str = v["architecture"]
    if architecture not in _ARCH_TO_PLATFORM:
        raise InputError(f"{path}: architecture: {architecture!r} is not supported",
                         f"use one of {', '.join(sorted(_ARCH_TO_PLATFORM))}")
    packages: tuple[str, ...] = v["packages"]
    _check_each(path, "packages", packages, _DEB_PIN, "pinned as name=version "
                "(take the version from `apt-cache policy NAME`)")
    _check_each(path, "mirrors", v["mirrors"], _MIRROR, "a one-line 'deb URI SUITE COMPONENT'")
    if not v["mirrors"]:
        raise InputError(f"{path}: mirrors: needs at least one 'deb ...' line")
    names = {p.split("=", 1)[0] for p in packages}
    for needed, why in (("tzdata", "TZ variation"), ("libfaketime", "clock variation")):
        if needed not in names:
            raise InputError(f"{path}: packages: must install {needed} (runtime contract: {why})")
    if not names & {"locales", "locales-all"}:
        raise InputError(f"{path}: packages: must install locales or locales-all "
                         "(runtime contract: en_US.UTF-8 and et_EE.UTF-8)")
    fields: dict[str, Any] = {
        "architecture": architecture, "mirrors": v["mirrors"], "packages": packages,
        "dpkg_options": v.get("dpkg_options", ()), "apt_options": v.get("apt_options", ()),
        "customize": v.get("customize", ()),
    }
    if kind == "mmdebstrap":
        if v["variant"] not in _VARIANTS:
            raise InputError(f"{path}: variant: {v['variant']!r} is not an mmdebstrap variant",
                             _did_you_mean(v["variant"], sorted(_VARIANTS)))
        _check_each(path, "hooks", v.get("hooks", ()), _HOOK,
                    f"the name of a directory under {_MMDEBSTRAP_HOOKS}")
        fields.update(suite=v["suite"], variant=v["variant"], hooks=v.get("hooks", ()),
                      source_date_epoch=v["source_date_epoch"])
    else:
        fields["reference"] = _check_reference(path, v["reference"])
    return ImageDefinition(name=name, kind=kind, source=path, description=v.get("description", ""),
                           env=v.get("env", ()), **fields)


def _check_reference(path: Path, reference: str) -> str:
    """A registry base must be pinned by digest: a tag can be moved under our feet."""
    repository, at, digest = reference.partition("@")
    if not at or not _DIGEST.fullmatch(digest):
        raise InputError(f"{path}: reference: {reference!r} is not pinned by digest",
                         "use NAME@sha256:<64 hex> (e.g. docker.io/library/debian@sha256:...); "
                         "tags move, digests do not")
    if ":" in repository.rsplit("/", 1)[-1]:
        raise InputError(f"{path}: reference: {reference!r} carries a tag as well as a digest",
                         "drop the ':tag' part; the engine would ignore it anyway")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._:/-]*", repository) or repository.endswith("/"):
        raise InputError(f"{path}: reference: {repository!r} is not a repository name")
    return reference


def _toolchain(path: Path, name: str, v: dict[str, Any]) -> ImageDefinition:
    if not _NAME.fullmatch(v["base"]):
        raise InputError(f"{path}: base: {v['base']!r} is not an image name")
    if not v["python"].startswith("/"):
        raise InputError(f"{path}: python: must be an absolute path, got {v['python']!r}")
    if not _PY_VERSION.fullmatch(v["python_version"]):
        raise InputError(f"{path}: python_version: must look like '3.11', "
                         f"got {v['python_version']!r}")
    lock: str = v["lock"]
    if "/" in lock or lock.startswith(".") or not lock:
        raise InputError(f"{path}: lock: must be a file name next to the definition, got {lock!r}")
    lock_path = path.parent / lock
    try:
        lock_bytes = lock_path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: lock: cannot read {lock_path}: {exc.strerror}") from exc
    requirements = parse_lock(lock_bytes.decode("utf-8", errors="replace"), lock_path)
    keys = {r.key for r in requirements}
    if "pip" not in keys:
        raise InputError(f"{lock_path}: must pin pip (it installs everything else offline)")
    sdists: tuple[str, ...] = v.get("sdists", ())
    for index, sdist in enumerate(sdists):
        if normalise_name(sdist) not in keys:
            raise InputError(f"{path}: sdists[{index}]: {sdist!r} is not in {lock}")
        if normalise_name(sdist) == "pip":
            raise InputError(f"{path}: sdists[{index}]: pip must come as a wheel")
    return ImageDefinition(
        name=name, kind="toolchain", source=path, description=v.get("description", ""),
        base=v["base"], python=v["python"], python_version=v["python_version"], lock=lock,
        lock_bytes=lock_bytes, requirements=requirements, sdists=sdists,
        checks=v.get("checks", ()), env=v.get("env", ()),
    )


def parse_lock(text: str, source: Path) -> tuple[LockedRequirement, ...]:
    """Parse an image lock: :mod:`reprobuild.hashlock`'s grammar, sha256 only, no options,
    markers or extras (an image is one known environment)."""
    lock = parse_hashed_lock(text, str(source), algorithms=frozenset({"sha256"}))
    return tuple(LockedRequirement(p.name, p.version,
                                   tuple(h.removeprefix("sha256:") for h in p.hashes))
                 for p in lock.pins)


def _did_you_mean(word: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(word, options, n=1)
    return f"did you mean '{close[0]}'?" if close else (
        f"expected one of: {', '.join(options)}" if options else None)


# --------------------------------------------------------------------------- hashing


def _canonical(defn: ImageDefinition) -> dict[str, Any]:
    """Everything that shapes the image; not the name, description or file location."""
    return {
        "kind": defn.kind, "suite": defn.suite, "architecture": defn.architecture,
        "variant": defn.variant, "source_date_epoch": defn.source_date_epoch,
        "reference": defn.reference, "mirrors": list(defn.mirrors), "hooks": list(defn.hooks),
        "dpkg_options": list(defn.dpkg_options), "apt_options": list(defn.apt_options),
        "packages": list(defn.packages), "customize": list(defn.customize),
        "python": defn.python, "python_version": defn.python_version,
        "lock_sha256": hashlib.sha256(defn.lock_bytes).hexdigest() if defn.lock_bytes else "",
        "sdists": list(defn.sdists), "checks": list(defn.checks),
        "env": [list(pair) for pair in defn.env],
    }


def definition_hash(defn: ImageDefinition, definitions: Mapping[str, ImageDefinition]) -> str:
    """sha256 over the canonical definition, its base's hash, the lock and our build scripts.

    Pure (no I/O): it is the cache key, so it must only change when the image would.
    """
    payload: dict[str, Any] = {"recipe": _RECIPE_VERSION, "definition": _canonical(defn)}
    if defn.is_base:
        payload["contract"] = CONTRACT_SCRIPT
    else:
        base = definitions.get(defn.base)
        if base is None:
            raise InputError(f"{defn.source}: base: no definition named '{defn.base}'")
        payload["base"] = definition_hash(base, definitions)
        payload["layer"] = _LAYER_TEMPLATE
        payload["contract_check"] = CONTRACT_CHECK
        payload["versions"] = _VERSIONS_SCRIPT
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def image_tag(defn: ImageDefinition, definitions: Mapping[str, ImageDefinition]) -> str:
    """``reprobuild/<name>:<first 16 hex of the definition hash>``."""
    return f"reprobuild/{defn.name}:{definition_hash(defn, definitions)[:16]}"


def _env_of(defn: ImageDefinition, definitions: Mapping[str, ImageDefinition]) -> dict[str, str]:
    env: dict[str, str] = {}
    if not defn.is_base:
        env.update(_env_of(definitions[defn.base], definitions))
    env.update(defn.env)
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def _base_of(defn: ImageDefinition, definitions: Mapping[str, ImageDefinition]) -> ImageDefinition:
    return defn if defn.is_base else definitions[defn.base]


# --------------------------------------------------------------------------- plans (pure)


def _hook_command(script: str, root: str) -> str:
    return f"ROOT={root} sh -euc {shlex.quote(script)}"


def mmdebstrap_command(defn: ImageDefinition, output: Path,
                       hooks_dir: Path = _MMDEBSTRAP_HOOKS) -> list[str]:
    """The mmdebstrap invocation for a base (run with SOURCE_DATE_EPOCH set)."""
    argv = ["mmdebstrap", f"--variant={defn.variant}", f"--architectures={defn.architecture}",
            "--format=tar", "--skip=output/dev", "--skip=output/mknod"]
    argv += [f"--hook-dir={hooks_dir / hook}" for hook in defn.hooks]
    argv += [f"--dpkgopt={opt}" for opt in defn.dpkg_options]
    argv += [f"--aptopt={opt}" for opt in defn.apt_options]
    argv.append(f"--include={','.join(defn.packages)}")
    root = '"$1"'  # mmdebstrap runs hooks as: sh -c HOOK exec ROOTDIR
    argv.append(f"--customize-hook={_hook_command(CONTRACT_SCRIPT, root)}")
    argv += [f"--customize-hook={_hook_command(step, root)}" for step in defn.customize]
    argv += [defn.suite, str(output), *defn.mirrors]
    return argv


def registry_base_plan(defn: ImageDefinition) -> RegistryBasePlan:
    """Pull by digest, then install the pinned packages with apt (the one networked step)."""
    if defn.kind != "registry":
        raise InputError(f"{defn.source}: not a registry base")
    repository, _, digest = defn.reference.partition("@")
    apt_conf = [opt if opt.rstrip().endswith(";") else f"{opt};" for opt in defn.apt_options]
    lines = [
        "export DEBIAN_FRONTEND=noninteractive",
        "rm -f /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list",
        f"printf '%s\\n' {' '.join(shlex.quote(m) for m in defn.mirrors)} "
        "> /etc/apt/sources.list",
        "mkdir -p /etc/dpkg/dpkg.cfg.d /etc/apt/apt.conf.d",
        f"printf '%s\\n' {' '.join(shlex.quote(o) for o in defn.dpkg_options)} "
        "> /etc/dpkg/dpkg.cfg.d/99reprobuild" if defn.dpkg_options else ":",
        f"printf '%s\\n' {' '.join(shlex.quote(o) for o in apt_conf)} "
        "> /etc/apt/apt.conf.d/99reprobuild" if apt_conf else ":",
        f"if [ -f {_CA_IN_CONTAINER} ]; then echo 'Acquire::https::CAInfo "
        f"\"{_CA_IN_CONTAINER}\";' > /etc/apt/apt.conf.d/98reprobuild-ca; fi",
        "apt-get update",
        "apt-get install -y --no-install-recommends "
        + " ".join(shlex.quote(p) for p in defn.packages),
        _hook_command(CONTRACT_SCRIPT, "/"),
        *(_hook_command(step, "/") for step in defn.customize),
        "apt-get clean",
        "rm -rf /var/lib/apt/lists/* /etc/apt/apt.conf.d/98reprobuild-ca "
        f"{_CA_IN_CONTAINER}",
        _VERSIONS_SCRIPT.strip(),
    ]
    return RegistryBasePlan(repository=repository, digest=digest, script="\n".join(lines),
                            network_mode="bridge")


def layer_script(defn: ImageDefinition, pip_wheel: str) -> str:
    """The offline script that turns the base into a toolchain image."""
    checks = "\n".join(f"echo '+ check {i + 1}'\nsh -euc {shlex.quote(check)}"
                       for i, check in enumerate(defn.checks))
    return _LAYER_TEMPLATE.format(
        python=shlex.quote(defn.python), venv=VENV, stage=_STAGE, pip_wheel=pip_wheel,
        checks=checks, contract_check=shlex.quote(CONTRACT_CHECK), versions=_VERSIONS_SCRIPT,
    )


def pip_download_command(defn: ImageDefinition, definitions: Mapping[str, ImageDefinition],
                         lock_path: Path, dest: Path, pip: list[str]) -> list[str]:
    """Host-side download of exactly the locked files, for the image's Python and CPU."""
    machine = _ARCH_TO_PLATFORM[_base_of(defn, definitions).architecture]
    nodot = defn.python_version.replace(".", "")
    argv = [*pip, "download", "--no-deps", "--require-hashes", "--only-binary=:all:"]
    argv += [f"--no-binary={name}" for name in defn.sdists]
    argv += ["--python-version", defn.python_version, "--implementation", "cp",
             "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none",
             *(arg for glibc in range(_GLIBC_MINOR, 16, -1)
               for arg in ("--platform", f"manylinux_2_{glibc}_{machine}")),
             "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
             "-r", str(lock_path), "-d", str(dest)]
    return argv


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


def cache_root() -> Path:
    """Where reprobuild keeps downloads on the host (XDG cache dir)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "reprobuild"


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
