"""Pinned toolchain image definitions: ``containers/*.toml`` parsed, checked and hashed.

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

This module is pure (no Docker, no network): what an image is, its tag, and the exact
commands that would build it. :mod:`reprobuild.images.build` runs them.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild.errors import InputError
from reprobuild.hashlock import normalise_name, parse_hashed_lock

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "IMAGE_LABEL",
    "KINDS",
    "BuildStep",
    "ImageDefinition",
    "LockedRequirement",
    "RegistryBasePlan",
    "ToolchainImage",
    "ToolchainImageInfo",
    "build_waves",
    "cache_root",
    "containers_dir",
    "default_jobs",
    "definition_hash",
    "image_tag",
    "layer_script",
    "load_definitions",
    "lock_text",
    "mmdebstrap_command",
    "parse_lock",
    "pip_download_command",
    "plan_builds",
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
"""The image's libfaketime, at one path whatever the Debian multiarch directory is."""
_UPLOAD = "/tmp"  # inside our own throwaway container, never on the host
_STAGE = f"{_UPLOAD}/reprobuild-stage"
_CA_IN_CONTAINER = f"{_UPLOAD}/reprobuild-ca.pem"

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
class BuildStep:
    """One image a build plan makes, and what it has to wait for.

    A base has no ``base`` and nothing to download on the host (apt's downloads run inside
    its bootstrap); a toolchain layer needs its base image and its locked files
    (``downloads``), which are fetched on the host while the base is still being built.
    """

    name: str
    tag: str
    base: str = ""
    downloads: int = 0


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
    package = Path(__file__).resolve().parents[1]
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


# --------------------------------------------------------------------------- build plans


MAX_JOBS = 3
"""Images built at once at most: the bases' dpkg runs and the layers' checks are CPU-bound,
their downloads, imports and commits wait on the network and the disk."""


def default_jobs(cpus: int) -> int:
    """How many images build at the same time on a machine with ``cpus`` CPUs: one per CPU
    up to :data:`MAX_JOBS` (host-side downloads do not take a slot)."""
    return max(1, min(cpus, MAX_JOBS))


def plan_builds(definitions: Mapping[str, ImageDefinition], names: Iterable[str],
                ready: Collection[str] = ()) -> tuple[BuildStep, ...]:
    """The images to build for ``names``: each one not in ``ready`` (found in the engine
    under its tag) and its base unless that is ready; bases first, then by name.

    Pure, so which images can build concurrently is decided (and tested) without Docker.
    """
    wanted: dict[str, ImageDefinition] = {}
    for name in names:
        defn = definitions.get(name)
        if defn is None:
            raise InputError(f"no image definition named '{name}'",
                             _did_you_mean(name, sorted(definitions)))
        if name in ready:
            continue  # built on its base already: the base need not exist any more
        for needed in (defn, _base_of(defn, definitions)):
            if needed.name not in ready:
                wanted[needed.name] = needed
    order = sorted(wanted.values(), key=lambda d: (not d.is_base, d.name))
    return tuple(BuildStep(name=d.name, tag=image_tag(d, definitions),
                           base="" if d.is_base else d.base,
                           downloads=len(d.requirements))
                 for d in order)


def build_waves(steps: Iterable[BuildStep]) -> tuple[tuple[str, ...], ...]:
    """The steps in waves: an image's base is in an earlier wave or was ready before, so
    the images of one wave can build at the same time (what a cold machine can overlap)."""
    pending = {step.name: step for step in steps}
    waves: list[tuple[str, ...]] = []
    while pending:
        wave = tuple(sorted(name for name, step in pending.items()
                            if step.base not in pending))
        if not wave:  # pragma: no cover - plan_builds never makes a cycle (bases have none)
            raise InputError(f"image definitions form a cycle: {', '.join(sorted(pending))}")
        waves.append(wave)
        for name in wave:
            del pending[name]
    return tuple(waves)


def lock_text(requirements: Iterable[LockedRequirement]) -> bytes:
    """A lock of exactly ``requirements`` in :func:`parse_lock`'s grammar (what the host
    still has to download when its wheel cache holds the rest)."""
    lines = [f"{r.name}=={r.version} " + " ".join(f"--hash=sha256:{h}" for h in r.hashes)
             for r in requirements]
    return "".join(f"{line}\n" for line in lines).encode()


def cache_root() -> Path:
    """Where reprobuild keeps downloads on the host (XDG cache dir)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "reprobuild"
