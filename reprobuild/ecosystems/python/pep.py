"""PEP 440 versions, PEP 508 requirements and markers, and wheel tags, via ``packaging``.

This is a thin, typed wrapper over the `packaging`_ library, the reference implementation
pip and uv follow. It replaces a hand-written evaluator that disagreed with the PEPs in
corner cases (post and local releases against ``>``/``==``, ``~=`` with one release
part, unknown marker variables, manylinux tags newer than the image's glibc).

What the wrapper adds on top of ``packaging``:

* One exception, :class:`Unsupported`, for anything that is not valid PEP 440/508, so
  callers need not know ``packaging``'s several exception types.
* Marker evaluation against the *toolchain image*, never the host: ``packaging`` fills
  missing variables from the running interpreter, which describes the machine reprobuild
  runs on, not the container the build runs in.
* Wheel compatibility for a described image (Python, glibc, machine) instead of the host's
  ``sys_tags()``, which read the running interpreter and the host's libc.

``packaging`` is imported inside the functions, not here: reprobuild's commands start on
every CI run and most of them never touch a Python requirement.

.. _packaging: https://packaging.pypa.io/
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.markers import Marker
    from packaging.specifiers import SpecifierSet
    from packaging.tags import Tag
    from packaging.version import Version

__all__ = [
    "MARKER_VARIABLES",
    "Requirement",
    "Unsupported",
    "WheelTarget",
    "evaluate_marker",
    "marker_environment",
    "normalise_name",
    "parse_requirement",
    "parse_version",
    "parse_wheel_name",
    "pin_line",
    "pinned_version",
    "requirement_line",
    "same_version",
    "specifier_contains",
    "supported_tags",
    "wheel_fits",
]

MARKER_VARIABLES: tuple[str, ...] = (
    "implementation_name",
    "implementation_version",
    "os_name",
    "platform_machine",
    "platform_python_implementation",
    "platform_release",
    "platform_system",
    "platform_version",
    "python_full_version",
    "python_version",
    "sys_platform",
)
"""PEP 508's environment markers; :func:`evaluate_marker` needs every one (``extra`` aside)."""

_CACHE_SIZE = 1024
_FULL_VERSION = re.compile(r"^(?P<major>[0-9]+)\.(?P<minor>[0-9]+)\.[0-9]+")


class Unsupported(ValueError):
    """Not valid PEP 440/508: a version, specifier, requirement or marker, or a marker
    variable the environment does not define."""


# --------------------------------------------------------------------------- names, versions


def normalise_name(name: str) -> str:
    """The PEP 503 form of a project name, so ``Foo_Bar`` and ``foo-bar`` compare equal."""
    from packaging.utils import canonicalize_name  # noqa: PLC0415 - lazy: start-up time

    return str(canonicalize_name(name))


def parse_version(text: str) -> Version:
    """A PEP 440 version; raise :class:`Unsupported` rather than ``InvalidVersion``."""
    from packaging.version import InvalidVersion, Version  # noqa: PLC0415 - lazy

    try:
        return Version(text)
    except InvalidVersion as exc:
        raise Unsupported(f"not a PEP 440 version: {text!r}") from exc


def same_version(a: str, b: str) -> bool:
    """Whether two version strings name one release (``1.0`` and ``1.0.0`` do).

    Wheel file names and locks spell versions differently; when either is not PEP 440
    there is no normal form, so only identical strings match.
    """
    try:
        return parse_version(a) == parse_version(b)
    except Unsupported:
        return a == b


# --------------------------------------------------------------------------- specifiers


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _specifier_set(text: str) -> SpecifierSet:
    """Parse once: a lock checks the same few specifiers against many candidates."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet  # noqa: PLC0415 - lazy

    stripped = text.strip()
    if stripped.startswith("(") and stripped.endswith(")"):
        # PEP 508 still allows ``name (>=1,<2)``, the old PEP 345 spelling.
        stripped = stripped[1:-1]
    if stripped.strip() and not all(clause.strip() for clause in stripped.split(",")):
        # SpecifierSet skips empty clauses (">=1,,<2", ">=1,"); PEP 508's grammar has none.
        raise Unsupported(f"empty clause in specifier {text!r}")
    try:
        return SpecifierSet(stripped)
    except InvalidSpecifier as exc:
        raise Unsupported(f"not a PEP 440 specifier: {text!r}") from exc


def specifier_contains(specifier: str, version: str) -> bool:
    """Whether ``version`` satisfies a comma-separated specifier set.

    Pre-releases match only when a clause of the set names one (PEP 440: pre-releases are
    excluded unless explicitly requested). ``packaging`` 26 accepts them by default for a
    single version, because "nothing else satisfies the set" holds trivially for one
    candidate; that is the wrong question for "does this locked version satisfy the
    requirement", so the choice is made here explicitly. An empty set constrains nothing.
    """
    specs = _specifier_set(specifier)
    text = version.strip()
    parse_version(text)  # an invalid version is an error, not "does not match"
    if not specs:
        return True
    return specs.contains(text, prereleases=specs.prereleases is True)


# --------------------------------------------------------------------------- requirements


@dataclass(frozen=True)
class Requirement:
    """A parsed PEP 508 requirement, as plain strings so it can be stored and compared.

    ``specifier`` is ``packaging``'s normal form (clauses sorted, ``''`` when none);
    ``marker`` is the normalised marker text; ``url`` is set for ``name @ url``.
    """

    name: str
    extras: tuple[str, ...]
    specifier: str
    marker: str | None
    url: str | None
    text: str

    @property
    def key(self) -> str:
        """The PEP 503 name, for matching against locks and indexes."""
        return normalise_name(self.name)


def parse_requirement(text: str) -> Requirement:
    """Parse a PEP 508 requirement; raise :class:`Unsupported` when it is not one."""
    import packaging.requirements  # noqa: PLC0415 - lazy (its Requirement is not ours)

    try:
        parsed = packaging.requirements.Requirement(text)
    except packaging.requirements.InvalidRequirement as exc:
        raise Unsupported(f"not a PEP 508 requirement: {text!r} ({exc})") from exc
    return Requirement(
        name=parsed.name,
        extras=tuple(sorted(normalise_name(e) for e in parsed.extras)),
        specifier=str(parsed.specifier),
        marker=None if parsed.marker is None else str(parsed.marker),
        url=parsed.url,
        text=text.strip(),
    )


_PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_FILE_HASH = re.compile(r"(?:sha256|sha384|sha512):[0-9a-f]+")


def _one_line(line: str, what: str) -> str:
    """A requirements-file line rebuilt from parsed parts must still be one printable line
    that is not an option: the last guard between a manifest value and pip's options."""
    if not line.isprintable() or line.startswith("-"):
        raise Unsupported(f"{what} is not one requirement: {line!r}")
    return line


def requirement_line(req: Requirement) -> str:
    """``req`` as one line of a requirements file, rebuilt from its parsed parts.

    A requirement from a manifest is never copied into a requirements file as text: pip
    reads every line of that file, options too, so a value with an embedded newline would
    become an option line (``--index-url https://mirror.attacker.example/``).
    """
    if not _PROJECT_NAME.fullmatch(req.name):
        raise Unsupported(f"not a project name: {req.name!r}")
    extras = f"[{','.join(req.extras)}]" if req.extras else ""
    line = f"{req.name}{extras}"
    line += f" @ {req.url}" if req.url is not None else req.specifier
    if req.marker is not None:
        line += f" ; {_marker(req.marker)}"
    return _one_line(line, f"requirement {req.text!r}")


def pin_line(name: str, version: str, hashes: Sequence[str] = (),
             marker: str | None = None) -> str:
    """``name==version ; marker --hash=...`` of a lock's pin, every part validated and
    re-serialised (a lock's names and versions are a repository's text, like a manifest's)."""
    if not _PROJECT_NAME.fullmatch(name):
        raise Unsupported(f"not a project name: {name!r}")
    try:
        line = f"{name}=={parse_version(version)}"
    except Unsupported:
        raise Unsupported(f"{name}: not a PEP 440 version: {version!r}") from None
    if marker is not None:
        line += f" ; {_marker(marker)}"
    for digest in hashes:
        if not _FILE_HASH.fullmatch(digest):
            raise Unsupported(f"not a file hash: {digest!r}")
        line += f" --hash={digest}"
    return _one_line(line, f"pin {name}=={version}")


def pinned_version(req: Requirement) -> str | None:
    """The one version ``req`` allows (``==X`` without a wildcard, or ``===X``), else None.

    A hashed lock must name exactly one release per package: ``~=1.4``, ``>=1`` or
    ``==1.*`` leave the choice to the resolver, so they are not pins.
    """
    if req.url is not None or not req.specifier:
        return None
    clauses = list(_specifier_set(req.specifier))
    if len(clauses) != 1:
        return None
    (clause,) = clauses
    if clause.operator == "===" or (clause.operator == "==" and not
                                    clause.version.endswith(".*")):
        return clause.version
    return None


# --------------------------------------------------------------------------- markers


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _marker(text: str) -> Marker:
    """Parse once: a uv.lock repeats the same few markers on many packages."""
    from packaging.markers import InvalidMarker, Marker  # noqa: PLC0415 - lazy

    try:
        return Marker(text)
    except InvalidMarker as exc:
        raise Unsupported(f"not a PEP 508 marker: {text!r} ({exc})") from exc


def evaluate_marker(marker: str, env: Mapping[str, str]) -> bool:
    """Evaluate a PEP 508 marker against ``env``, the environment of the toolchain image.

    ``packaging`` silently fills variables missing from the environment with the *host's*
    values, which would judge ``platform_machine == "aarch64"`` by the machine reprobuild
    runs on. So every PEP 508 variable must be in ``env`` (see
    :func:`marker_environment`); a missing one raises :class:`Unsupported`. ``extra``
    defaults to ``""`` (no extra requested).
    """
    parsed = _marker(marker)
    missing = [name for name in MARKER_VARIABLES if name not in env]
    if missing:
        raise Unsupported(f"the marker environment lacks {', '.join(missing)} "
                          f"(evaluating {marker!r})")
    from packaging.markers import (  # noqa: PLC0415 - lazy
        UndefinedComparison,
        UndefinedEnvironmentName,
    )

    environment: dict[str, str] = {"extra": "", **env}
    try:
        # Every default is overridden above, so nothing of the host is left to leak in.
        return parsed.evaluate(environment)
    except (UndefinedComparison, UndefinedEnvironmentName, KeyError) as exc:
        # KeyError: variables outside PEP 508's list (``extras``, ``dependency_groups``).
        raise Unsupported(f"cannot evaluate marker {marker!r}: {exc}") from exc


def marker_environment(*, python_full_version: str, machine: str, release: str = "",
                       implementation: str = "cpython") -> dict[str, str]:
    """The complete PEP 508 environment of a Linux toolchain image.

    Built from what an image definition states rather than probed, so a plan never depends
    on the host. ``platform_version`` (the kernel's build string) is unknowable before the
    container runs and is ``""``; ``release`` is ``platform.release()`` inside the image.
    Only CPython images exist, and for CPython ``implementation_version`` equals
    ``python_full_version``; another implementation would need its own version, so it is
    refused rather than guessed.
    """
    match = _FULL_VERSION.match(python_full_version)
    if match is None:
        raise Unsupported(f"python_full_version must be X.Y.Z, not {python_full_version!r}")
    if implementation != "cpython":
        raise Unsupported(f"only CPython toolchain images are described, not {implementation!r}")
    return {
        "implementation_name": implementation,
        "implementation_version": python_full_version,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": release,
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": python_full_version,
        "python_version": f"{match['major']}.{match['minor']}",
        "sys_platform": "linux",
        "extra": "",
    }


# --------------------------------------------------------------------------- wheel tags

# PEP 513/571/599 names for glibc 2.5, 2.12 and 2.17, still on many wheels.
_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}


@dataclass(frozen=True)
class WheelTarget:
    """What decides which wheels install in a toolchain image: CPython ``python``
    (major, minor), the image's glibc (major, minor) and its machine (``x86_64``)."""

    python: tuple[int, int]
    glibc: tuple[int, int]
    machine: str

    def supported_tags(self) -> frozenset[Tag]:
        """Every wheel tag pip in this image would accept (see :func:`supported_tags`)."""
        return supported_tags(self)


def _platforms(target: WheelTarget) -> list[str]:
    """``manylinux_2_M`` from the image's glibc down, legacy aliases, then ``linux_*``.

    Mirrors ``packaging.tags``' manylinux logic, which reads the host's libc instead: the
    oldest policy is glibc 2.17, except on x86_64/i686, where manylinux1 (2.5) exists.
    """
    arch = re.sub(r"[-.]", "_", target.machine)
    major, minor = target.glibc
    if major != 2:
        raise Unsupported(f"glibc {major}.{minor}: only glibc 2.x images are described")
    oldest = 5 if arch in ("x86_64", "i686") else 17
    platforms: list[str] = []
    for m in range(minor, oldest - 1, -1):
        platforms.append(f"manylinux_{major}_{m}_{arch}")
        legacy = _LEGACY_MANYLINUX.get((major, m))
        if legacy is not None:
            platforms.append(f"{legacy}_{arch}")
    platforms.append(f"linux_{arch}")
    return platforms


@functools.cache
def supported_tags(target: WheelTarget) -> frozenset[Tag]:
    """The tags a CPython of ``target`` accepts, computed from the target, not the host.

    ``packaging.tags.sys_tags()`` would describe the interpreter running reprobuild; here
    the ABI is the image's plain ``cpXY`` (Debian's CPython is not a debug or free-threaded
    build) and the platforms come from :func:`_platforms`.
    """
    from packaging.tags import compatible_tags, cpython_tags  # noqa: PLC0415 - lazy

    major, minor = target.python
    interpreter = f"cp{major}{minor}"
    platforms = _platforms(target)
    return frozenset((*cpython_tags(target.python, abis=[interpreter], platforms=platforms),
                      *compatible_tags(target.python, interpreter, platforms)))


def _parse_wheel(filename: str) -> tuple[str, Version, frozenset[Tag]] | None:
    from packaging.utils import (  # noqa: PLC0415 - lazy
        InvalidWheelFilename,
        parse_wheel_filename,
    )

    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    return str(name), version, tags


def wheel_fits(filename: str, target: WheelTarget) -> bool:
    """Whether pip in the image could install this wheel; False for a non-wheel name."""
    parsed = _parse_wheel(filename)
    if parsed is None:
        return False
    return not parsed[2].isdisjoint(supported_tags(target))


def parse_wheel_name(filename: str) -> tuple[str, str] | None:
    """(PEP 503 name, normalised version) of a wheel file name, None when it is not one."""
    parsed = _parse_wheel(filename)
    if parsed is None:
        return None
    return parsed[0], str(parsed[1])
