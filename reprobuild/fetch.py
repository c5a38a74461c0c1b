"""The fetch phase: download exactly what a lockfile or the recipe names, before the offline build.

Builds run offline in the egress trap, so whatever they need from a registry is fetched
first, here, and handed to both builds as one uncompressed tar (unpacked at ``/deps``).
Three rules hold throughout:

* **Nothing of the project runs.** Only manifests and lockfiles reach the fetch container
  (never the source). Python build requirements are read from ``pyproject.toml`` on the
  host and downloaded as wheels only (``--only-binary :all:``, no sdist builds); npm runs
  ``npm ci --ignore-scripts``.
* **Network only to an allow-list, and every request logged.** The fetch container has no
  network at all (``network_mode=none``: no DNS, no route to the host or other containers).
  A relay inside it (:mod:`reprobuild.fetch_proxy`, ``relay`` mode) pipes
  ``127.0.0.1:3128`` to a unix socket on a shared volume, where the trusted proxy
  container (default bridge, ``proxy`` mode) allows ``host:port`` pairs of the strategy's
  registries only, refuses the rest with 403 *without resolving or connecting*, and logs
  every request as a JSON line. Those lines become :class:`FetchRequest` records.
* **Every file is verified.** Hashes come from the lock (a hashed requirements file named by
  ``[fetch] lock``, ``uv.lock`` entries, ``package-lock.json`` ``integrity``); pip and npm
  refuse mismatches and the host checks again before caching. A mismatch raises
  :class:`DependencyIntegrityError` naming the package, the expected and the actual hash.
  Without a lock, the newest release matching ``[build-system] requires`` *as of the
  commit's date* is resolved (pip ``--uploaded-prior-to``; PyPI's own hashes are checked by
  pip) and recorded as exact pins with sha256, so the run can be replayed.

Private CAs: ``ca_cert`` (a PEM bundle, the CLI's ``--ca-cert``) is handed to the fetch
container only (pip ``PIP_CERT``; npm ``NODE_EXTRA_CA_CERTS`` and ``npm_config_cafile``).
It is taken only when given: there is no fallback to the host's bundle, because the
container's tools must trust exactly what the user chose. The proxy does not terminate
TLS, so it needs no CA.

Cache (``cache_dir``, e.g. ``~/.cache/reprobuild``): every fetched file is stored once as
``blobs/sha256/<hex>``; ``deps/<key>.tar`` is the archive handed to the builds and
``deps/<key>.json`` its manifest (members with hashes, pins, env, notes). ``key`` is the
sha256 of every input (strategy and its version, toolchain image id, lock/manifest bytes,
resolution cutoff). Writes are atomic (temp file + rename) under a per-key lock; a hit
checks the tar against its manifest (and rebuilds it from blobs if needed), starts no
container and makes no request.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

import docker
import docker.errors
from docker.types import LogConfig, Ulimit

from reprobuild.archive import ExtractLimits, chunk_reader, extract_regular_files
from reprobuild.atomic import atomic_file, write_bytes_atomic
from reprobuild.engine import RunLabels, start_with_stdin, translate_docker_errors, wait_or_kill
from reprobuild.errors import EnvironmentFailure, InputError, Interrupted, RecipeError
from reprobuild.images import ToolchainImage
from reprobuild.node import NPM_LOCKFILES, OTHER_LOCKFILES
from reprobuild.progress import Progress
from reprobuild.recipes import Recipe
from reprobuild.source import EntryKind, SourceTree

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "ALLOW_LISTS",
    "DEPS_DIR",
    "DependencyIntegrityError",
    "DepsCache",
    "FetchLimits",
    "FetchPlan",
    "FetchRequest",
    "FetchStrategy",
    "FetchedDeps",
    "Pin",
    "build_env",
    "cache_key",
    "fetch",
    "parse_hashed_requirements",
    "parse_proxy_log",
    "plan_fetch",
    "replay_lock",
]

STRATEGY_VERSION = "1"
"""Bump when what a strategy downloads or how the archive is laid out changes."""

DEPS_DIR = "/deps"
WHEELS_DIR = f"{DEPS_DIR}/wheels"
NPM_CACHE_DIR = f"{DEPS_DIR}/npm-cache"
DEPS_MTIME = 315532800
"""Member mtime in the deps tar (1980-01-01), like the source tar's fallback."""

DEFAULT_TIMEOUT_S = 900.0
FETCH_UID = 1000
PROXY_UID = 65534
RELAY_PORT = 3128
_SOCKET_DIR = "/run/reprobuild-proxy"
_SOCKET = f"{_SOCKET_DIR}/proxy.sock"
_WORK = "/work"
_PROXY_READY_S = 30.0
_KILL_GRACE_S = 10
_TAIL_LINES = 200
_PROXY_PIDS = 300  # the proxy serves at most 256 connections, one thread each
MiB = 1024 * 1024


class FetchStrategy(str, Enum):
    """How a recipe's dependencies are fetched (``[fetch] strategy``)."""

    NONE = "none"
    PYTHON_BUILD = "python-build"
    NPM = "npm"


ALLOW_LISTS: Mapping[FetchStrategy, tuple[tuple[str, int], ...]] = {
    FetchStrategy.NONE: (),
    FetchStrategy.PYTHON_BUILD: (("pypi.org", 443), ("files.pythonhosted.org", 443)),
    FetchStrategy.NPM: (("registry.npmjs.org", 443),),
}
"""The only host:port pairs the proxy lets each strategy reach."""

DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0", "wheel")
"""PEP 517/518: what a project without ``[build-system] requires`` is built with."""

PYTHON_MARKER_ENV: Mapping[str, str] = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "platform_python_implementation": "CPython",
    "extra": "",
}
"""PEP 508 environment of the ``python`` toolchain image (Debian's 3.11.2 on amd64)."""


class DependencyIntegrityError(InputError):
    """A file the registry serves does not match the hash the lockfile pins."""

    def __init__(self, package: str, expected: str, actual: str, *,
                 source: str = "the lockfile") -> None:
        super().__init__(
            f"dependency {package} does not match {source}: expected {expected}, "
            f"the registry served {actual}",
            "the lockfile hash was edited, or the registry serves a different file than when "
            "it was locked; regenerate the lock from a trusted machine and review the diff")
        self.package = package
        self.expected = expected
        self.actual = actual


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class FetchRequest:
    """One request or tunnel the proxy saw."""

    host: str
    port: int
    method: str
    target: str
    allowed: bool
    status: int | None
    time: float


@dataclass(frozen=True)
class Pin:
    """One exact dependency: name, version and the hashes it may have (``sha256:<hex>``,
    npm ``sha512-<base64>``). ``marker`` is a PEP 508 marker that gates a Python pin."""

    name: str
    version: str
    hashes: tuple[str, ...] = ()
    marker: str | None = None


@dataclass(frozen=True)
class FetchPlan:
    """What the fetch will do, decided without Docker or network (pure, unit-tested).

    ``files`` are written under ``/work/src`` in the fetch container (relative paths):
    generated requirements for Python, manifests and the lockfile for npm. ``lock_root`` is
    where they come from in the tree. ``pins`` are known before fetching (from a lock);
    ``cutoff`` is set when versions are resolved (newest as of that Unix time).
    """

    strategy: FetchStrategy
    project_dir: str
    lock_root: str = ""
    files: tuple[tuple[str, bytes], ...] = ()
    requirements: tuple[str, ...] = ()
    pin_source: str = ""
    pins: tuple[Pin, ...] = ()
    cutoff: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def hashed(self) -> bool:
        """Whether every download is checked against a lock hash (vs resolved)."""
        return self.cutoff is None

    def key_inputs(self, image_id: str) -> dict[str, Any]:
        """Everything the cache key covers, as a JSON-able dict."""
        return {
            "reprobuild-fetch": STRATEGY_VERSION,
            "strategy": self.strategy.value,
            "image": image_id,
            "allow": [f"{h}:{p}" for h, p in ALLOW_LISTS[self.strategy]],
            "files": [[path, hashlib.sha256(data).hexdigest()] for path, data in self.files],
            "cutoff": self.cutoff,
        }


@dataclass(frozen=True)
class FetchedDeps:
    """The result of :func:`fetch`; ``archive`` is what the builds unpack at ``/deps``."""

    strategy: FetchStrategy
    key: str
    archive: Path | None
    env: tuple[tuple[str, str], ...]
    pins: tuple[tuple[str, str], ...]
    requests: tuple[FetchRequest, ...]
    cache_hit: bool
    seconds: float
    failure: str | None
    notes: tuple[str, ...] = ()
    hashes: tuple[tuple[str, str], ...] = field(default=())
    """``name==version`` -> ``sha256:<hex>`` of the file fetched (Python; for replay)."""
    log: str = ""
    """The last lines the fetch tool (pip, npm) printed; empty on a cache hit."""


def cache_key(plan: FetchPlan, image_id: str) -> str:
    """The sha256 over every input of a fetch: same key, same archive."""
    text = json.dumps(plan.key_inputs(image_id), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def build_env(strategy: FetchStrategy) -> tuple[tuple[str, str], ...]:
    """Extra environment of the offline build for a strategy."""
    if strategy is FetchStrategy.PYTHON_BUILD:
        # pip and uv (``build --installer uv``) both install only the fetched wheels.
        return (("PIP_NO_INDEX", "1"), ("PIP_FIND_LINKS", WHEELS_DIR),
                ("UV_OFFLINE", "1"), ("UV_NO_INDEX", "1"), ("UV_FIND_LINKS", WHEELS_DIR),
                ("UV_PYTHON_DOWNLOADS", "never"))
    if strategy is FetchStrategy.NPM:
        return (("npm_config_cache", NPM_CACHE_DIR), ("npm_config_offline", "true"),
                ("npm_config_audit", "false"), ("npm_config_fund", "false"),
                ("npm_config_update_notifier", "false"))
    return ()


# --------------------------------------------------------------------------- PEP 440 / 508

_VERSION = re.compile(
    r"""^\s*v?(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)
    (?P<pre>[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?))?
    (?P<dev>[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$""",
    re.VERBOSE | re.IGNORECASE)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_SPEC = re.compile(r"^\s*(===|==|!=|<=|>=|~=|<|>)\s*([^\s,]+)\s*$")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*"
    r"(?:\[(?P<extras>[^\]]*)\])?\s*(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.*?))?\s*$")


class _Unsupported(ValueError):
    """A version, specifier or marker this small evaluator does not handle."""


@dataclass(frozen=True, order=True)
class Version:
    """A PEP 440 version, comparable (local labels are kept but only compared for ==)."""

    key: tuple[Any, ...]
    release: tuple[int, ...] = field(compare=False)
    epoch: int = field(compare=False)
    is_pre: bool = field(compare=False)
    text: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse or raise :class:`_Unsupported`."""
        m = _VERSION.match(text)
        if m is None:
            raise _Unsupported(f"not a PEP 440 version: {text!r}")
        epoch = int(m["epoch"] or 0)
        release = tuple(int(p) for p in m["release"].split("."))
        trimmed = list(release)
        while len(trimmed) > 1 and trimmed[-1] == 0:
            trimmed.pop()
        pre: tuple[Any, ...]
        if m["pre"] is None:
            pre = (-1,) if m["post"] is None and m["dev"] is not None else (3,)
        else:
            pre = (1, _PRE_RANK[m["pre_l"].lower()], int(m["pre_n"] or 0))
        post_n = m["post_n1"] or m["post_n2"]
        post = (-1,) if m["post"] is None else (1, int(post_n or 0))
        dev = (3,) if m["dev"] is None else (1, int(m["dev_n"] or 0))
        return cls((epoch, tuple(trimmed), pre, post, dev), release, epoch,
                   m["pre"] is not None or m["dev"] is not None, text.strip())


def _prefix_match(version: Version, prefix_text: str) -> bool:
    prefix = Version.parse(prefix_text)
    if prefix.epoch != version.epoch:
        return False
    width = len(prefix.release)
    padded = version.release + (0,) * max(0, width - len(version.release))
    return padded[:width] == prefix.release


def specifier_contains(specifier: str, version_text: str) -> bool:
    """Whether ``version_text`` satisfies a comma-separated PEP 440 specifier set."""
    version = Version.parse(version_text)
    clauses = [c for c in specifier.strip().strip("()").split(",") if c.strip()]
    mentions_pre = False
    for clause in clauses:
        m = _SPEC.match(clause)
        if m is None:
            raise _Unsupported(f"bad specifier clause {clause!r}")
        op, text = m.groups()
        if op == "===":
            if version.text != text:
                return False
            continue
        if text.endswith(".*"):
            if op not in ("==", "!="):
                raise _Unsupported(f"wildcard with {op}")
            if _prefix_match(version, text[:-2]) != (op == "=="):
                return False
            continue
        other = Version.parse(text)
        mentions_pre = mentions_pre or other.is_pre
        if op == "~=":
            parts = other.release
            if len(parts) < 2:
                raise _Unsupported(f"~= needs two release parts: {clause!r}")
            stem = ".".join(str(p) for p in parts[:-1])
            prefix = f"{other.epoch}!{stem}" if other.epoch else stem
            ok = version >= other and _prefix_match(version, prefix)
        else:
            ok = {"==": version.key == other.key, "!=": version.key != other.key,
                  "<=": version <= other, ">=": version >= other,
                  "<": version < other, ">": version > other}[op]
        if not ok:
            return False
    return not (version.is_pre and not mentions_pre)


@dataclass(frozen=True)
class Requirement:
    """A parsed PEP 508 requirement (URL requirements keep ``url``)."""

    name: str
    extras: tuple[str, ...]
    specifier: str
    marker: str | None
    url: str | None
    text: str

    @property
    def key(self) -> str:
        """The normalised name (PEP 503)."""
        return normalise_name(self.name)


def normalise_name(name: str) -> str:
    """PEP 503 normalisation: lower case, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> Requirement:
    """Parse a PEP 508 string; raise :class:`_Unsupported` when it is not one."""
    m = _REQUIREMENT.match(text)
    if m is None:
        raise _Unsupported(f"not a PEP 508 requirement: {text!r}")
    spec = m["spec"] or ""
    url = None
    if spec.startswith("@"):
        url, spec = spec[1:].strip(), ""
    elif spec and not all(_SPEC.match(c) for c in spec.strip("()").split(",") if c.strip()):
        raise _Unsupported(f"bad version specifier in {text!r}")
    extras = tuple(normalise_name(e.strip()) for e in (m["extras"] or "").split(",") if e.strip())
    return Requirement(m["name"], extras, spec.strip("() "), m["marker"] or None, url,
                       text.strip())


_MARKER_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'[^']*'|"[^"]*")|(?P<op>===|==|!=|<=|>=|~=|<|>|not\s+in\b|in\b)|
    (?P<paren>[()])|(?P<bool>and\b|or\b)|(?P<var>[a-z_][a-z0-9_.]*))""",
    re.VERBOSE)


def evaluate_marker(marker: str, env: Mapping[str, str]) -> bool:
    """Evaluate a PEP 508 marker; unknown variables or syntax raise :class:`_Unsupported`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = marker.strip()
    while pos < len(text):
        m = _MARKER_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _Unsupported(f"cannot parse marker {marker!r}")
        kind = next(k for k, v in m.groupdict().items() if v is not None)
        tokens.append((kind, m[kind]))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    index = 0

    def peek() -> tuple[str, str] | None:
        return tokens[index] if index < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens):
            raise _Unsupported(f"marker ends early: {marker!r}")
        index += 1
        return tokens[index - 1]

    def value() -> tuple[str, bool]:
        kind, tok = take()
        if kind == "str":
            return tok[1:-1], False
        if kind == "var":
            if tok not in env:
                raise _Unsupported(f"unknown marker variable {tok!r}")
            return env[tok], True
        raise _Unsupported(f"unexpected {tok!r} in marker {marker!r}")

    def compare() -> bool:
        if peek() == ("paren", "("):
            take()
            result = either()
            if take() != ("paren", ")"):
                raise _Unsupported(f"unbalanced parentheses in {marker!r}")
            return result
        left, _ = value()
        kind, op = take()
        if kind != "op":
            raise _Unsupported(f"expected an operator in {marker!r}")
        right, _ = value()
        op = " ".join(op.split())
        if op == "in":
            return left in right
        if op == "not in":
            return left not in right
        try:
            return specifier_contains(f"{op}{right}", left) if op != "===" else left == right
        except _Unsupported:
            if op in ("==", "!="):
                return (left == right) == (op == "==")
            raise

    def both() -> bool:
        result = compare()
        while peek() == ("bool", "and"):
            take()
            result = compare() and result
        return result

    def either() -> bool:
        result = both()
        while peek() == ("bool", "or"):
            take()
            result = both() or result
        return result

    result = either()
    if index != len(tokens):
        raise _Unsupported(f"trailing tokens in marker {marker!r}")
    return result


def _marker_ok(marker: str | None, env: Mapping[str, str]) -> bool:
    return marker is None or evaluate_marker(marker, env)


# --------------------------------------------------------------------------- hashed locks

_HASH_OPTION = re.compile(r"--hash[=\s]+(?P<algo>sha256|sha384|sha512):(?P<hex>[0-9a-fA-F]+)")
# Options a hashed lock may carry through to pip: they only say where to look, and the
# proxy decides whether that place is reachable.
_PASS_OPTIONS = frozenset({"--index-url", "-i", "--extra-index-url", "--require-hashes",
                           "--prefer-binary", "--only-binary"})


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            yield start, buffer.strip()
        buffer = ""
    if buffer.strip():
        yield start, buffer.strip()


def parse_hashed_requirements(text: str, origin: str) -> tuple[tuple[str, ...], tuple[Pin, ...]]:
    """Parse a pip hashed requirements file: (option lines to keep, pins).

    Every requirement must be ``name==version`` with at least one ``--hash``. Options that
    would build from source or read other files (``-e``, ``-r``, ``-c``, ``--no-binary``,
    URLs, paths) are refused, so nothing can run in the fetch container.
    """
    options: list[str] = []
    pins: list[Pin] = []
    for number, line in _logical_lines(text):
        where = f"{origin}:{number}"
        if line.startswith("-") and not line.startswith("--hash"):
            word = re.split(r"[\s=]", line, maxsplit=1)[0]
            if word not in _PASS_OPTIONS:
                raise RecipeError(
                    f"{where}: option {word} is not allowed in a fetch lock",
                    "a fetch lock holds only 'name==version --hash=sha256:...' lines and "
                    "index options (--index-url, --extra-index-url); nothing is built from "
                    "source and no other file is read")
            options.append(line)
            continue
        hashes = tuple(f"{m['algo']}:{m['hex'].lower()}" for m in _HASH_OPTION.finditer(line))
        rest = _HASH_OPTION.sub("", line).strip()
        if re.search(r"(^|\s)--?[a-z]", rest):
            raise RecipeError(f"{where}: only --hash options may follow a requirement",
                              "move other options to their own lines")
        try:
            req = parse_requirement(rest)
        except _Unsupported as exc:
            raise RecipeError(f"{where}: {exc}",
                              "write 'name==version --hash=sha256:<hex>'") from exc
        match = _SPEC.match(req.specifier) if req.specifier else None
        if req.url or match is None or match[1] not in ("==", "===") or "*" in match[2]:
            raise RecipeError(f"{where}: {rest!r} is not pinned to one version",
                              "a fetch lock pins every requirement with == and --hash "
                              "(pip-compile --generate-hashes, uv pip compile --generate-hashes)")
        if not hashes:
            raise RecipeError(f"{where}: {req.name}=={match[2]} has no --hash",
                              "add --hash=sha256:<hex> (pip-compile --generate-hashes)")
        pins.append(Pin(req.name, match[2], hashes, req.marker))
    if not pins:
        raise RecipeError(f"{origin}: the lock pins nothing",
                          "list 'name==version --hash=sha256:<hex>' lines")
    return tuple(options), tuple(pins)


def _render_requirements(options: Sequence[str], pins: Sequence[Pin]) -> bytes:
    lines = ["# generated by reprobuild's fetch phase", *options]
    for pin in pins:
        line = f"{pin.name}=={pin.version}"
        if pin.marker:
            line += f" ; {pin.marker}"
        line += "".join(f" --hash={h}" for h in pin.hashes)
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- uv.lock

_WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
    r"-(?P<plat>[^-]+)\.whl$")


def _wheel_fits(filename: str, env: Mapping[str, str]) -> bool:
    """Whether a wheel could install on the toolchain (CPython 3.11, glibc Linux x86_64)."""
    m = _WHEEL_NAME.match(filename)
    if m is None:
        return False
    nodot = env["python_version"].replace(".", "")
    machine = env["platform_machine"]
    pys, abis, plats = (m[k].split(".") for k in ("py", "abi", "plat"))
    py_ok = any(p in ("py3", f"py{nodot}", f"cp{nodot}") or
                (p.startswith("cp3") and p[3:].isdigit() and int(p[3:]) <= int(nodot[1:])
                 and "abi3" in abis) for p in pys)
    abi_ok = any(a in ("none", "abi3", f"cp{nodot}") for a in abis)
    plat_ok = any(p == "any" or ((p.startswith("manylinux") or p == "linux_" + machine)
                                 and p.endswith(machine)) for p in plats)
    return py_ok and abi_ok and plat_ok


def _uv_pins(data: Mapping[str, Any], requirements: Sequence[Requirement],
             env: Mapping[str, str]) -> tuple[Pin, ...]:
    """Pins for ``requirements`` and everything they need, all from ``uv.lock`` entries.

    Raises :class:`_Unsupported` with the reason when the lock does not cover them (a
    package missing, more than one candidate, no fitting wheel, a non-PyPI source).
    """
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for package in data.get("package", []):
        if isinstance(package, dict) and isinstance(package.get("name"), str):
            by_name.setdefault(normalise_name(package["name"]), []).append(package)
    pins: dict[tuple[str, str], Pin] = {}
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    todo: list[tuple[str, str, tuple[str, ...], str | None]] = [
        (r.key, r.specifier, r.extras, None) for r in requirements]
    while todo:
        name, spec, extras, exact = todo.pop()
        candidates = by_name.get(name, [])
        if exact is not None:
            candidates = [c for c in candidates if c.get("version") == exact]
        if spec:
            candidates = [c for c in candidates if specifier_contains(spec, str(c.get("version")))]
        if len(candidates) > 1:
            candidates = [c for c in candidates if any(
                evaluate_marker(m, env) for m in c.get("resolution-markers", ["extra == ''"]))]
        if len(candidates) != 1:
            raise _Unsupported(f"uv.lock has {len(candidates)} entries for {name}{spec}")
        package = candidates[0]
        version = str(package.get("version"))
        if (name, version, extras) in seen:
            continue
        seen.add((name, version, extras))
        source = package.get("source") or {}
        if source.get("registry") not in ("https://pypi.org/simple", "https://pypi.org/simple/"):
            raise _Unsupported(f"uv.lock takes {name} from {source}, not PyPI")
        wheels = [w for w in package.get("wheels", []) if isinstance(w, dict)]
        fitting = [w for w in wheels
                   if _wheel_fits(str(w.get("url", "")).rsplit("/", 1)[-1], env)]
        if not fitting:
            raise _Unsupported(f"uv.lock has no wheel of {name} {version} for this toolchain")
        hashes = tuple(sorted({str(w["hash"]) for w in fitting if
                               re.fullmatch(r"sha256:[0-9a-f]{64}", str(w.get("hash", "")))}))
        if len(hashes) != len(fitting):
            raise _Unsupported(f"uv.lock has a wheel of {name} without a sha256")
        pins[(name, version)] = Pin(str(package["name"]), version, hashes)
        deps = list(package.get("dependencies", []))
        optional = package.get("optional-dependencies", {})
        for extra in extras:
            if extra not in optional:
                raise _Unsupported(f"uv.lock has no extra {extra!r} of {name}")
            deps += list(optional[extra])
        for dep in deps:
            if not _marker_ok(dep.get("marker"), env):
                continue
            todo.append((normalise_name(str(dep["name"])), "",
                         tuple(normalise_name(e) for e in dep.get("extra", [])),
                         dep.get("version")))
    return tuple(sorted(pins.values(), key=lambda p: (normalise_name(p.name), p.version)))


# --------------------------------------------------------------------------- planning


def _files_of(tree: SourceTree) -> dict[str, bytes]:
    return {e.path: e.data for e in tree.entries if e.kind is EntryKind.FILE}


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def plan_fetch(tree: SourceTree, recipe: Recipe, *, now: float | None = None,
               marker_env: Mapping[str, str] = PYTHON_MARKER_ENV) -> FetchPlan:
    """Decide the fetch from the tree's bytes and the recipe alone (no Docker, no network).

    ``now`` only matters for a plain directory (no commit date) that needs resolution: its
    cutoff is the start of the current UTC day, so the cache key changes once a day.
    """
    try:
        strategy = FetchStrategy(recipe.fetch_strategy)
    except ValueError as exc:
        raise RecipeError(f"{recipe.origin}: unknown [fetch].strategy "
                          f"{recipe.fetch_strategy!r}") from exc
    if strategy is FetchStrategy.NONE:
        return FetchPlan(strategy=strategy, project_dir=tree.subdir)
    if strategy is FetchStrategy.PYTHON_BUILD:
        return _plan_python(tree, recipe, now, marker_env)
    return _plan_npm(tree, recipe)


def _build_requires(files: Mapping[str, str | bytes], project: str,
                    notes: list[str]) -> tuple[str, ...]:
    data = files.get(_join(project, "pyproject.toml"))
    if data is None:
        notes.append("no pyproject.toml: PEP 517's default build requirements "
                     + ", ".join(DEFAULT_BUILD_REQUIRES))
        return DEFAULT_BUILD_REQUIRES
    try:
        doc = tomllib.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{_join(project, 'pyproject.toml')}: not valid TOML: {exc}",
                          "fix pyproject.toml; nothing was fetched") from exc
    system = doc.get("build-system")
    if not isinstance(system, dict) or "requires" not in system:
        notes.append("pyproject.toml has no [build-system] requires: PEP 517's default "
                     + ", ".join(DEFAULT_BUILD_REQUIRES))
        return DEFAULT_BUILD_REQUIRES
    requires = system["requires"]
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise RecipeError(f"{_join(project, 'pyproject.toml')}: [build-system] requires must "
                          "be a list of strings", "see PEP 518")
    found = [str(r) for r in requires]
    # Static extras a hatchling build asks for through get_requires_for_build_*: hook and
    # target dependencies declared in pyproject.toml (no code runs to find them).
    build = doc.get("tool", {}).get("hatch", {}).get("build", {})
    extra: list[str] = []
    if isinstance(build, dict):
        tables = [build, *[t for t in build.get("targets", {}).values() if isinstance(t, dict)]]
        for table in tables:
            extra += [d for d in table.get("dependencies", []) if isinstance(d, str)]
            for hook in table.get("hooks", {}).values():
                if isinstance(hook, dict):
                    extra += [d for d in hook.get("dependencies", []) if isinstance(d, str)]
    for item in extra:
        if item not in found:
            found.append(item)
    if extra:
        notes.append("added hatch build-hook/target dependencies: " + ", ".join(extra))
    return tuple(found)


def _plan_python(tree: SourceTree, recipe: Recipe, now: float | None,
                 env: Mapping[str, str]) -> FetchPlan:
    files = _files_of(tree)
    project = tree.subdir
    notes: list[str] = []
    requires = _build_requires(files, project, notes)
    parsed: list[Requirement] = []
    for text in requires:
        try:
            parsed.append(parse_requirement(text))
        except _Unsupported as exc:
            raise RecipeError(f"[build-system] requires: {exc}", "see PEP 508") from exc
    wanted = [r for r in parsed if _marker_ok_or_true(r.marker, env)]

    if recipe.fetch_lock is not None:
        path = _join(project, recipe.fetch_lock)
        data = files.get(path)
        if data is None:
            raise RecipeError(f"{recipe.origin}: [fetch].lock names {path!r}, which is not in "
                              "the source tree", "commit the lock, or fix the path")
        options, pins = parse_hashed_requirements(data.decode("utf-8", "replace"), path)
        by_key = {normalise_name(p.name): p for p in pins}
        for req in wanted:
            pin = by_key.get(req.key)
            if pin is None or (req.specifier and not _contains_or_true(req.specifier,
                                                                      pin.version)):
                raise RecipeError(
                    f"{path} does not pin build requirement {req.text!r}",
                    "add it (and its dependencies) with a hash, e.g. with "
                    "pip-compile --generate-hashes")
        return FetchPlan(strategy=FetchStrategy.PYTHON_BUILD, project_dir=project,
                         lock_root=project,
                         files=(("requirements.txt", _render_requirements(options, pins)),),
                         requirements=requires, pin_source=f"lock:{path}", pins=pins,
                         notes=tuple(notes))

    uv_path = next((p for p in (_join(project, "uv.lock"), "uv.lock") if p in files), None)
    if uv_path is not None:
        try:
            uv_lock = tomllib.loads(files[uv_path].decode("utf-8"))
            pins = _uv_pins(uv_lock, wanted, env)
        except (_Unsupported, UnicodeDecodeError, tomllib.TOMLDecodeError,
                KeyError, TypeError, AttributeError) as exc:
            notes.append(f"{uv_path} does not cover the build requirements ({exc}); resolving")
        else:
            return FetchPlan(strategy=FetchStrategy.PYTHON_BUILD, project_dir=project,
                             lock_root=project,
                             files=(("requirements.txt", _render_requirements((), pins)),),
                             requirements=requires, pin_source=f"uv.lock:{uv_path}",
                             pins=pins, notes=tuple(notes))

    if tree.commit_time is not None:
        cutoff = tree.commit_time
    else:
        day = 86400
        cutoff = int((time.time() if now is None else now) // day * day)
        notes.append("the source is not a git commit: resolving as of the start of today (UTC)")
    body = "\n".join(["# generated by reprobuild's fetch phase", *requires]) + "\n"
    return FetchPlan(strategy=FetchStrategy.PYTHON_BUILD, project_dir=project,
                     lock_root=project, files=(("requirements.txt", body.encode()),),
                     requirements=requires, pin_source="resolved", cutoff=cutoff,
                     notes=tuple(notes))


def _marker_ok_or_true(marker: str | None, env: Mapping[str, str]) -> bool:
    try:
        return _marker_ok(marker, env)
    except _Unsupported:
        return True


def _contains_or_true(spec: str, version: str) -> bool:
    try:
        return specifier_contains(spec, version)
    except _Unsupported:
        return True




def _glob_match(path: str, pattern: str) -> bool:
    """npm workspace globs: ``*`` stays inside one path segment, ``**`` spans several."""
    if "**" in pattern:
        return fnmatchcase(path, pattern)
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(map(fnmatchcase, parts, wanted))


def _plan_npm(tree: SourceTree, recipe: Recipe) -> FetchPlan:
    files = _files_of(tree)
    project = tree.subdir
    parts = PurePosixPath(project).parts if project else ()
    levels = ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]
    root: str | None = None
    lock_name = ""
    for level in levels:
        lock_name = next((n for n in NPM_LOCKFILES if _join(level, n) in files), "")
        if lock_name:
            root = level
            break
        others = [_join(level, n) for n in OTHER_LOCKFILES if _join(level, n) in files]
        if others:
            raise RecipeError(
                f"found {', '.join(others)} but no package-lock.json: only npm lockfiles "
                "(package-lock.json, npm-shrinkwrap.json) are supported for the fetch phase",
                "generate one with `npm install --package-lock-only` and commit it; pnpm and "
                "yarn lockfiles are not read")
    if root is None:
        raise RecipeError(
            f"no package-lock.json in {project or 'the repository root'} or above it: the npm "
            "fetch installs exactly what the lockfile names",
            "run `npm install --package-lock-only` and commit package-lock.json")
    notes: list[str] = []
    lock_path = _join(root, lock_name)
    manifest_path = _join(root, "package.json")
    if manifest_path not in files:
        raise RecipeError(f"{lock_path} has no package.json next to it",
                          "npm ci needs both files")
    try:
        lock = json.loads(files[lock_path])
        manifest = json.loads(files[manifest_path])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecipeError(f"{lock_path} or {manifest_path} is not valid JSON: {exc}",
                          "fix the file; nothing was fetched") from exc
    if not isinstance(lock, dict) or not isinstance(manifest, dict):
        raise RecipeError(f"{lock_path}: expected a JSON object", "regenerate the lockfile")
    packages = lock.get("packages")
    if not isinstance(packages, dict):
        raise RecipeError(
            f"{lock_path} is lockfileVersion {lock.get('lockfileVersion')}; the fetch phase "
            "needs lockfileVersion 2 or 3 (npm 7 or newer)",
            "regenerate it with npm >= 7: `npm install --package-lock-only`")

    workspace_dirs: set[str] = set()
    for key, value in packages.items():
        if key and "node_modules/" not in f"/{key}" and isinstance(value, dict):
            workspace_dirs.add(key)
    globs = manifest.get("workspaces", [])
    if isinstance(globs, dict):
        globs = globs.get("packages", [])
    prefix = f"{root}/" if root else ""
    manifests = sorted(p[len(prefix):] for p in files
                       if p.startswith(prefix) and p.endswith("/package.json"))
    for pattern in globs if isinstance(globs, list) else []:
        if isinstance(pattern, str):
            clean = pattern.strip().rstrip("/").removeprefix("./")
            workspace_dirs |= {m.rsplit("/", 1)[0] for m in manifests
                               if _glob_match(m.rsplit("/", 1)[0], clean)
                               and "node_modules/" not in m}
    if root != project:
        relative = project[len(prefix):]
        if relative not in workspace_dirs:
            raise RecipeError(
                f"{project} is not a workspace of the npm project at "
                f"{root or 'the repository root'} ({lock_path} has no entry for it)",
                "add it to \"workspaces\" in package.json and refresh the lockfile, or give "
                "it its own package-lock.json")
    selected: list[tuple[str, bytes]] = [("package.json", files[manifest_path]),
                                         (lock_name, files[lock_path])]
    for directory in sorted(workspace_dirs):
        path = _join(directory, "package.json")
        if path in manifests:
            selected.append((path, files[_join(root, path)]))
        else:
            notes.append(f"workspace {directory} has no package.json in the tree")
    if _join(root, ".npmrc") in files:
        notes.append(".npmrc is not used by the fetch (registry and settings come from "
                     "reprobuild)")

    pins: dict[tuple[str, str, str], Pin] = {}
    for key, value in packages.items():
        if "node_modules/" not in f"/{key}" or not isinstance(value, dict) or value.get("link"):
            continue
        name = str(value.get("name") or key.rsplit("node_modules/", 1)[-1])
        version = str(value.get("version", ""))
        integrity = str(value.get("integrity", ""))
        resolved = str(value.get("resolved", ""))
        if resolved and not resolved.startswith("https://registry.npmjs.org/"):
            notes.append(f"{name}@{version} resolves from {resolved[:120]} (off the registry)")
        if not integrity and not value.get("inBundle"):
            notes.append(f"{name}@{version} has no integrity in the lockfile")
        pins[(name, version, integrity)] = Pin(name, version, tuple(integrity.split()))
    return FetchPlan(strategy=FetchStrategy.NPM, project_dir=project, lock_root=root,
                     files=tuple(selected), pin_source=f"package-lock:{lock_path}",
                     pins=tuple(sorted(pins.values(), key=lambda p: (p.name, p.version))),
                     notes=tuple(dict.fromkeys(notes)))


# --------------------------------------------------------------------------- proxy log


def parse_proxy_log(text: str) -> tuple[FetchRequest, ...]:
    """The proxy's request lines as records (other lines and garbage are skipped)."""
    found: list[FetchRequest] = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or event.get("event") != "request":
            continue
        port = event.get("port")
        status = event.get("status")
        found.append(FetchRequest(
            host=str(event.get("host") or ""), port=port if isinstance(port, int) else 0,
            method=str(event.get("method") or ""), target=str(event.get("target") or ""),
            allowed=event.get("allowed") is True,
            status=status if isinstance(status, int) else None,
            time=float(event.get("time") or 0.0)))
    return tuple(found)


def proxy_source() -> str:
    """The proxy/relay program's text (run with ``python3 -I -S``)."""
    return Path(__file__).with_name("fetch_proxy.py").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- failures

_PIP_MISMATCH = re.compile(
    r"^\s*(?P<pkg>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+) from (?P<url>\S+)[^\n]*$\s*"
    r"Expected (?P<algo>sha\d+) (?P<expected>[0-9a-f]+)(?:\s*or [0-9a-f]+)*\s*"
    r"Got\s+(?P<actual>[0-9a-f]+)", re.MULTILINE)
_NPM_INTEGRITY = re.compile(
    r"(?P<want>sha\d+-[A-Za-z0-9+/=]+) integrity checksum failed when using sha\d+: wanted "
    r"(?P<wanted>sha\d+-[A-Za-z0-9+/=]+) but got (?P<got>sha\d+-[A-Za-z0-9+/=]+)")


def integrity_failure(log: str, plan: FetchPlan) -> DependencyIntegrityError | None:
    """The integrity error pip or npm reported in ``log``, naming the package, if any."""
    m = _PIP_MISMATCH.search(log)
    if m is not None:
        return DependencyIntegrityError(f"{m['pkg']}=={m['version']}",
                                        f"{m['algo']}:{m['expected']}",
                                        f"{m['algo']}:{m['actual']}",
                                        source=plan.pin_source.split(":", 1)[-1] or "the lock")
    m = _NPM_INTEGRITY.search(log)
    if m is not None or "EINTEGRITY" in log:
        wanted = m["wanted"] if m else "the lockfile's integrity"
        got = m["got"] if m else "something else"
        names = [f"{p.name}@{p.version}" for p in plan.pins if m and m["wanted"] in p.hashes]
        return DependencyIntegrityError(", ".join(names) or "a package", wanted, got,
                                        source=plan.pin_source.split(":", 1)[-1])
    return None


def _key_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("ERROR:", "npm ERR! code", "npm error code")):
            return line
    return lines[-1] if lines else "(no output)"


# --------------------------------------------------------------------------- cache


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._target.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)
        return len(chunk)


@dataclass(frozen=True)
class _Member:
    path: str
    sha256: str
    size: int


class DepsCache:
    """The content-addressed cache under ``cache_dir`` (see the module docstring)."""

    FORMAT = 1

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives."""
        return self.root / "blobs" / "sha256" / sha256

    def tar_path(self, key: str) -> Path:
        """The archive of one key."""
        return self.root / "deps" / f"{key}.tar"

    def meta_path(self, key: str) -> Path:
        """The manifest of one key."""
        return self.root / "deps" / f"{key}.json"

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Serialise fetches of one key across processes on this host."""
        path = self.root / "locks" / f"deps-{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, key: str) -> dict[str, Any] | None:
        """The manifest of a usable cached archive, or None (rebuilds the tar from blobs)."""
        try:
            meta = json.loads(self.meta_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("format") != self.FORMAT \
                or meta.get("key") != key:
            return None
        tar = self.tar_path(key)
        try:
            if tar.stat().st_size == meta["tar_size"] and _sha256_path(tar) == meta["tar_sha256"]:
                return meta
        except (OSError, KeyError):
            pass
        members = [_Member(str(p), str(h), int(s)) for p, h, s in meta.get("files", [])]
        if not all(self.blob(m.sha256).is_file() for m in members):
            return None
        try:
            digest, size = self._write_tar(key, members, verify=True)
        except (OSError, ValueError):
            return None
        if digest != meta.get("tar_sha256") or size != meta.get("tar_size"):
            return None
        return meta

    def store(self, key: str, staging: Path, members: Sequence[_Member],
              meta: dict[str, Any]) -> dict[str, Any]:
        """Move staged files into blobs, write the archive and then its manifest."""
        for member in members:
            target = self.blob(member.sha256)
            if target.is_file():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".blob.", dir=target.parent)
            os.close(fd)
            shutil.copyfile(staging / member.path, tmp)
            Path(tmp).chmod(0o644)
            Path(tmp).replace(target)
        digest, size = self._write_tar(key, members, verify=False)
        full = {**meta, "format": self.FORMAT, "key": key, "tar_sha256": digest,
                "tar_size": size, "files": [[m.path, m.sha256, m.size] for m in members]}
        write_bytes_atomic(json.dumps(full, indent=1, sort_keys=True).encode(),
                           self.meta_path(key))
        return full

    def _open(self, member: _Member, *, verify: bool) -> IO[bytes]:
        path = self.blob(member.sha256)
        if verify and _sha256_path(path) != member.sha256:
            raise ValueError(f"cached blob {path} is corrupt")
        return path.open("rb")

    def _write_tar(self, key: str, members: Sequence[_Member], *,
                   verify: bool) -> tuple[str, int]:
        target = self.tar_path(key)
        with atomic_file(target) as raw:
            hashing = _HashingWriter(raw)
            write_deps_tar(hashing, members, functools.partial(self._open, verify=verify))
        return hashing.digest.hexdigest(), hashing.size


def write_deps_tar(out: IO[bytes] | io.RawIOBase, members: Sequence[_Member],
                   open_member: Callable[[_Member], IO[bytes]]) -> None:
    """A deterministic uncompressed tar: sorted, parents first, fixed owner/mode/mtime.

    tarfile pads it to whole 10240-byte records, so it can follow another such tar on one
    stream and be unpacked by a second ``tar -x -f -``.
    """
    dirs: set[str] = set()
    for member in members:
        parts = member.path.split("/")
        dirs |= {"/".join(parts[:i]) for i in range(1, len(parts))}
    entries: list[tuple[str, _Member | None]] = [(d, None) for d in dirs]
    entries += [(m.path, m) for m in members]
    entries.sort(key=lambda e: e[0].split("/"))
    with tarfile.open(fileobj=cast(IO[bytes], out), mode="w",
                      format=tarfile.PAX_FORMAT) as tar:
        for name, entry in entries:
            info = tarfile.TarInfo(name)
            info.mtime = DEPS_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            info.mode = 0o644
            info.size = entry.size
            with open_member(entry) as handle:
                tar.addfile(info, handle)


# --------------------------------------------------------------------------- docker run


@dataclass
class _Outcome:
    exit_code: int | None
    timed_out: bool
    log: str
    requests: tuple[FetchRequest, ...]
    files: list[_Member]
    staging: Path


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


def fetch_script(plan: FetchPlan) -> str:
    """The fetch container's whole shell script (the tool runs as its last command)."""
    head = script_head()
    if plan.strategy is FetchStrategy.PYTHON_BUILD:
        args = ["python", "-m", "pip", "download", "--dest", WHEELS_DIR,
                "--only-binary", ":all:", "--no-cache-dir", "--disable-pip-version-check",
                "--no-input", "--progress-bar", "off", "--retries", "2", "--timeout", "60"]
        if plan.cutoff is None:
            args += ["--no-deps", "--require-hashes"]
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.cutoff))
            args += ["--uploaded-prior-to", stamp]
        args += ["-r", "requirements.txt"]
        return head + f"mkdir -p {WHEELS_DIR}\n" + " ".join(args) + "\n"
    args = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund",
            "--cache", NPM_CACHE_DIR, "--registry=https://registry.npmjs.org/",
            "--loglevel=warn"]
    return head + " ".join(args) + "\n"


def fetch_env(plan: FetchPlan, path_env: str, *, has_ca: bool) -> dict[str, str]:
    """The fetch container's environment: proxy through the relay, CA, quiet tools."""
    proxy = f"http://127.0.0.1:{RELAY_PORT}"
    env = {"PATH": path_env or "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/fetch",
           "LANG": "C.UTF-8", "TZ": "UTC", "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy,
           "https_proxy": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
    if plan.strategy is FetchStrategy.PYTHON_BUILD:
        env["PIP_CONFIG_FILE"] = "/dev/null"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if has_ca:
            env["PIP_CERT"] = f"{_WORK}/ca.pem"
    else:
        env |= {"npm_config_https_proxy": proxy, "npm_config_proxy": proxy,
                "npm_config_update_notifier": "false", "npm_config_fetch_retries": "1",
                "npm_config_fetch_retry_mintimeout": "1000",
                "npm_config_fetch_retry_maxtimeout": "5000",
                "NODE_OPTIONS": ""}
        if has_ca:
            env["NODE_EXTRA_CA_CERTS"] = f"{_WORK}/ca.pem"
            env["npm_config_cafile"] = f"{_WORK}/ca.pem"
    return env


def _input_tar(plan: FetchPlan, ca: bytes | None) -> bytes:
    files: dict[str, bytes] = {"fetch_proxy.py": proxy_source().encode()}
    if ca is not None:
        files["ca.pem"] = ca
    for path, data in plan.files:
        files[f"src/{path}"] = data
    buffer = io.BytesIO()
    members = [_Member(p, "", len(d)) for p, d in files.items()]
    write_deps_tar(buffer, members, lambda member: io.BytesIO(files[member.path]))
    return buffer.getvalue()


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


class _Runner:
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

    def run(self, plan: FetchPlan, toolchain: ToolchainImage, ca: bytes | None,
            staging: Path) -> _Outcome:
        try:
            with translate_docker_errors("the fetch phase", image=toolchain.tag,
                                         cancel=self.cancel):
                return self._run(plan, toolchain, ca, staging)
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

    def _run(self, plan: FetchPlan, toolchain: ToolchainImage, ca: bytes | None,
             staging: Path) -> _Outcome:
        socket_volume = self._volume("socket", PROXY_UID, 1)
        deps_volume = self._volume("deps", FETCH_UID, self.limits.deps_mb)
        proxy_id = self._start_proxy(plan, toolchain, socket_volume, deps_volume)
        fetch_id = self._create_fetch(plan, toolchain, socket_volume, deps_volume,
                                      has_ca=ca is not None)
        self.progress.detail("fetch container started (network only through the proxy)")
        exit_code, timed_out = self._start_and_wait(fetch_id, _input_tar(plan, ca))
        log = self.api.logs(fetch_id, stdout=True, stderr=True).decode("utf-8", "replace")
        self.api.remove_container(fetch_id, force=True)
        self.containers.remove(fetch_id)
        files: list[_Member] = []
        if exit_code == 0 and not timed_out:
            chunks, _stat = self.api.get_archive(proxy_id, f"{DEPS_DIR}/.")
            reader = chunk_reader(chunks)
            limits = ExtractLimits(max_files=self.limits.max_files,
                                   max_file_bytes=self.limits.max_file_mb * MiB,
                                   max_total_bytes=self.limits.deps_mb * MiB)
            extracted = extract_regular_files(reader, staging, limits, strip_prefix=".")
            files = [_Member(f.path, f.sha256, f.size) for f in extracted]
        with contextlib.suppress(docker.errors.DockerException):
            self.api.kill(proxy_id, signal="SIGTERM")
            self.api.wait(proxy_id, timeout=_KILL_GRACE_S)
        proxy_log = self.api.logs(proxy_id, stdout=True, stderr=False).decode("utf-8", "replace")
        return _Outcome(exit_code, timed_out, log, parse_proxy_log(proxy_log), files, staging)

    def _start_proxy(self, plan: FetchPlan, toolchain: ToolchainImage, socket_volume: str,
                     deps_volume: str) -> str:
        allow = ",".join(f"{h}:{p}" for h, p in ALLOW_LISTS[plan.strategy])
        host_config = self.api.create_host_config(
            network_mode="bridge", cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            read_only=True, tmpfs={"/tmp": "size=16m,noexec,nosuid,nodev"},
            binds={socket_volume: {"bind": _SOCKET_DIR, "mode": "rw"},
                   deps_volume: {"bind": DEPS_DIR, "mode": "ro"}},
            pids_limit=_PROXY_PIDS, mem_limit="256m", memswap_limit="256m",
            log_config=LogConfig(type=LogConfig.types.JSON,
                                 config={"max-size": "20m", "max-file": "1"}))
        created = self.api.create_container(
            toolchain.image_id,
            command=["/usr/bin/python3", "-I", "-S", "-c", proxy_source(), "proxy", _SOCKET,
                     allow],
            name=f"{self.name}-proxy", user=f"{PROXY_UID}:{PROXY_UID}", working_dir="/",
            labels=self.labels.for_role("fetch-proxy"), host_config=host_config)
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

    def _create_fetch(self, plan: FetchPlan, toolchain: ToolchainImage, socket_volume: str,
                      deps_volume: str, *, has_ca: bool) -> str:
        limits = self.limits
        uid = FETCH_UID
        opts = f"nosuid,nodev,noexec,uid={uid},gid={uid},mode=0755"
        host_config = self.api.create_host_config(
            network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            read_only=True,
            tmpfs={_WORK: f"size={limits.work_mb}m,{opts}", "/tmp": f"size=256m,{opts}",
                   "/home/fetch": f"size=256m,{opts}"},
            binds={deps_volume: {"bind": DEPS_DIR, "mode": "rw"},
                   socket_volume: {"bind": _SOCKET_DIR, "mode": "ro"}},
            pids_limit=limits.pids, mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            ulimits=[Ulimit(name="core", soft=0, hard=0),
                     Ulimit(name="nofile", soft=4096, hard=4096)],
            log_config=LogConfig(type=LogConfig.types.JSON,
                                 config={"max-size": "10m", "max-file": "1"}),
            ipc_mode="private")
        config = self.api.create_container_config(
            toolchain.image_id, ["/bin/sh", "-c", fetch_script(plan)],
            user=f"{uid}:{uid}", working_dir="/", stdin_open=True,
            environment=fetch_env(plan, toolchain.path_env, has_ca=has_ca),
            labels=self.labels.for_role("fetch"), host_config=host_config)
        config["StdinOnce"] = True
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


# --------------------------------------------------------------------------- verification


def _check_python(plan: FetchPlan, files: Sequence[_Member],
                  staging: Path) -> tuple[list[_Member], tuple[tuple[str, str], ...],
                                          tuple[tuple[str, str], ...]]:
    kept: list[_Member] = []
    pins: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for member in files:
        if not member.path.startswith("wheels/"):
            continue
        filename = member.path.removeprefix("wheels/")
        m = _WHEEL_NAME.match(filename)
        if "/" in filename or m is None:
            raise EnvironmentFailure(f"the fetch produced {member.path}, which is not a wheel",
                                     "only wheels are fetched; this is a reprobuild bug")
        name, version = normalise_name(m["name"]), m["version"]
        actual = f"sha256:{member.sha256}"
        if plan.hashed:
            pin = next((p for p in plan.pins if normalise_name(p.name) == name
                        and _same_version(p.version, version)), None)
            if pin is None:
                raise EnvironmentFailure(f"the fetch produced {filename}, which the lock does "
                                         "not pin", "this is a reprobuild bug")
            if not any(_file_hash(staging / member.path, h.split(":", 1)[0]) == h
                       for h in pin.hashes):
                raise DependencyIntegrityError(f"{pin.name}=={version}",
                                               " or ".join(pin.hashes), actual,
                                               source=plan.pin_source.split(":", 1)[-1])
        pins[name] = version
        hashes[f"{name}=={version}"] = actual
        kept.append(member)
    if not kept:
        raise EnvironmentFailure("the fetch downloaded no wheels", "see the fetch log")
    return kept, tuple(sorted(pins.items())), tuple(sorted(hashes.items()))


def _same_version(a: str, b: str) -> bool:
    try:
        return Version.parse(a).key == Version.parse(b).key
    except _Unsupported:
        return a == b


def _file_hash(path: Path, algo: str) -> str:
    digest = hashlib.new(algo)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MiB), b""):
            digest.update(block)
    return f"{algo}:{digest.hexdigest()}"


def replay_lock(deps: FetchedDeps) -> str:
    """A hashed requirements file pinning what a Python fetch got (``[fetch] lock`` input)."""
    lines = [f"{spec} --hash={digest}" for spec, digest in deps.hashes]
    return "".join(line + "\n" for line in lines)


def _check_npm(plan: FetchPlan, files: Sequence[_Member]) -> tuple[list[_Member], list[str]]:
    kept: list[_Member] = []
    notes: list[str] = []
    content: set[str] = set()
    for member in files:
        if not member.path.startswith("npm-cache/_cacache/"):
            continue  # npm's _logs and notifier stamps are not dependencies
        rest = member.path.removeprefix("npm-cache/_cacache/")
        if rest.startswith("tmp/"):
            continue
        m = re.fullmatch(r"content-v2/(sha\d+)/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]+)", rest)
        if m is not None:
            content.add(f"{m[1]}:{m[2]}{m[3]}{m[4]}")
        kept.append(member)
    missing = 0
    for pin in plan.pins:
        for sri in pin.hashes:
            algo, _, b64 = sri.partition("-")
            try:
                hexdigest = base64.b64decode(b64, validate=True).hex()
            except (ValueError, binascii.Error):
                continue
            if f"{algo}:{hexdigest}" not in content:
                missing += 1
    if missing:
        notes.append(f"{missing} lockfile entries were not downloaded (optional or for other "
                     "platforms)")
    if not kept:
        raise EnvironmentFailure("the npm fetch left an empty cache", "see the fetch log")
    return kept, notes


def _verify_npm_content(staging: Path, files: Sequence[_Member]) -> None:
    """cacache names each content file by its own hash: check it (npm did too)."""
    for member in files:
        m = re.fullmatch(r"npm-cache/_cacache/content-v2/(sha\d+)/([0-9a-f]{2})/([0-9a-f]{2})/"
                         r"([0-9a-f]+)", member.path)
        if m is None:
            continue
        algo = m[1]
        digest = hashlib.new(algo)
        with (staging / member.path).open("rb") as handle:
            for block in iter(lambda: handle.read(MiB), b""):
                digest.update(block)
        if digest.hexdigest() != m[2] + m[3] + m[4]:
            raise DependencyIntegrityError(member.path, f"{algo}:{m[2]}{m[3]}{m[4]}",
                                           f"{algo}:{digest.hexdigest()}",
                                           source="its npm cache name")


# --------------------------------------------------------------------------- fetch


def _blocked(requests_: Iterable[FetchRequest]) -> list[str]:
    return sorted({f"{r.host}:{r.port}" for r in requests_ if not r.allowed})


def fetch(client: docker.DockerClient, labels: RunLabels, *, tree: SourceTree, recipe: Recipe,
          toolchain: ToolchainImage, ca_cert: Path | None, cache_dir: Path,
          progress: Progress, cancel: threading.Event,
          limits: FetchLimits | None = None, plan: FetchPlan | None = None) -> FetchedDeps:
    """Fetch the recipe's dependencies into the cache (or find them there).

    Returns with ``failure`` set when the tool failed or anything off the allow-list was
    requested (those requests are in ``requests`` with ``allowed=False``); raises
    :class:`DependencyIntegrityError` on a hash mismatch, :class:`RecipeError` for a lock
    it cannot use, :class:`EnvironmentFailure` for Docker problems and :class:`Interrupted`
    when ``cancel`` is set. Everything it creates is removed before it returns.
    """
    started = time.monotonic()
    plan = plan or plan_fetch(tree, recipe)
    strategy = plan.strategy
    if strategy is FetchStrategy.NONE:
        return FetchedDeps(strategy=strategy, key="", archive=None, env=(), pins=(),
                           requests=(), cache_hit=False, seconds=0.0, failure=None)
    key = cache_key(plan, toolchain.image_id)
    cache = DepsCache(cache_dir)
    ca: bytes | None = None
    if ca_cert is not None:
        try:
            ca = ca_cert.read_bytes()
        except OSError as exc:
            raise InputError(f"--ca-cert {ca_cert}: {exc.strerror or exc}",
                             "pass a readable PEM bundle") from exc
        if b"-----BEGIN CERTIFICATE-----" not in ca:
            raise InputError(f"--ca-cert {ca_cert} holds no PEM certificate",
                             "pass a PEM bundle (-----BEGIN CERTIFICATE-----)")
    progress.detail(f"{strategy.value}: pins from {plan.pin_source}")
    with cache.locked(key):
        meta = cache.load(key)
        if meta is not None:
            progress.detail(f"dependency cache hit {key[:16]}")
            return _result(plan, key, cache.tar_path(key), meta, (), True, started, None)
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
        try:
            runner = _Runner(client, labels, cancel, progress, limits or FetchLimits())
            outcome = runner.run(plan, toolchain, ca, scratch / "deps")
            blocked = _blocked(outcome.requests)
            if outcome.exit_code != 0 or outcome.timed_out:
                error = integrity_failure(outcome.log, plan)
                if error is not None and not blocked:
                    raise error
            if blocked or outcome.exit_code != 0 or outcome.timed_out:
                return _failed(plan, key, outcome, blocked, started)
            return _store(plan, key, cache, outcome, started, progress)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _failed(plan: FetchPlan, key: str, outcome: _Outcome, blocked: list[str],
            started: float) -> FetchedDeps:
    allow = ", ".join(f"{h}:{p}" for h, p in ALLOW_LISTS[plan.strategy])
    if blocked:
        failure = (f"the fetch tried to reach {', '.join(blocked)}, not on the allow-list "
                   f"({allow}); refused without connecting")
    elif outcome.timed_out:
        failure = "the fetch timed out"
    else:
        failure = f"the fetch failed (exit {outcome.exit_code}): {_key_line(outcome.log)}"
    return FetchedDeps(strategy=plan.strategy, key=key, archive=None,
                       env=build_env(plan.strategy),
                       pins=tuple((p.name, p.version) for p in plan.pins),
                       requests=outcome.requests, cache_hit=False,
                       seconds=round(time.monotonic() - started, 3), failure=failure,
                       notes=plan.notes, log=_tail(outcome.log))


def _tail(log: str) -> str:
    return "\n".join(log.splitlines()[-_TAIL_LINES:])


def _store(plan: FetchPlan, key: str, cache: DepsCache, outcome: _Outcome, started: float,
           progress: Progress) -> FetchedDeps:
    notes = list(plan.notes)
    hashes: tuple[tuple[str, str], ...] = ()
    if plan.strategy is FetchStrategy.PYTHON_BUILD:
        kept, pins, hashes = _check_python(plan, outcome.files, outcome.staging)
    else:
        kept, more = _check_npm(plan, outcome.files)
        _verify_npm_content(outcome.staging, kept)
        notes += more
        pins = tuple((p.name, p.version) for p in plan.pins)
    total = sum(m.size for m in kept)
    progress.detail(f"fetched {len(kept)} files ({total / MiB:.1f} MiB); caching {key[:16]}")
    meta = cache.store(key, outcome.staging, kept, {
        "strategy": plan.strategy.value, "pin_source": plan.pin_source,
        "cutoff": plan.cutoff, "requirements": list(plan.requirements),
        "env": [list(e) for e in build_env(plan.strategy)],
        "pins": [list(p) for p in pins], "hashes": [list(h) for h in hashes],
        "notes": notes, "created": round(time.time(), 3),
        "requests": [r.__dict__ for r in outcome.requests]})
    result = _result(plan, key, cache.tar_path(key), meta, outcome.requests, False, started,
                     None)
    return dataclasses.replace(result, log=_tail(outcome.log))


def _result(plan: FetchPlan, key: str, archive: Path, meta: Mapping[str, Any],
            requests_: tuple[FetchRequest, ...], hit: bool, started: float,
            failure: str | None) -> FetchedDeps:
    return FetchedDeps(
        strategy=plan.strategy, key=key, archive=archive,
        env=tuple((str(k), str(v)) for k, v in meta.get("env", [])),
        pins=tuple((str(n), str(v)) for n, v in meta.get("pins", [])),
        requests=requests_, cache_hit=hit, seconds=round(time.monotonic() - started, 3),
        failure=failure, notes=tuple(str(n) for n in meta.get("notes", [])),
        hashes=tuple((str(n), str(h)) for n, h in meta.get("hashes", [])))
