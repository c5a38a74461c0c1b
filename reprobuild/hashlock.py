"""The strict grammar of hashed requirement locks: one parser for every lock reprobuild reads.

Two kinds of lock use pip's ``name==version --hash=...`` format: a toolchain image's
``containers/*.lock`` (the Python tools baked into the image) and a project's
``[fetch] lock`` (its build requirements). Both are security boundaries: whatever a lock
lets through is downloaded and installed, so the grammar is strict and hand-checked here,
while the requirement itself is parsed by ``packaging`` (PEP 508, imported lazily so
start-up stays fast):

* every requirement is pinned to exactly one version (``==X`` without a wildcard, or
  ``===X``), with at least one ``--hash`` and nothing else after it;
* no URLs, paths, ``-e``, ``-r``, ``-c`` or ``--no-binary``:
  nothing is built from source and no other file is read;
* option lines (index URLs and the like) only where the caller allows them, because
  they only say where to look: the fetch proxy decides whether that place is reachable;
* comments follow pip: ``#`` at the start of a line or after white space;
* the same requirement (name and marker) pinned twice is refused;
* image locks (``markers=False``) take no markers and no extras: one known environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from reprobuild.errors import RecipeError

__all__ = ["HashedLock", "LockedPin", "normalise_name", "parse_hashed_lock"]

_HASH_OPTION = re.compile(r"--hash[=\s]+(?P<algo>sha256|sha384|sha512):(?P<hex>[0-9a-fA-F]+)")
_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
PASS_OPTIONS = frozenset({"--index-url", "-i", "--extra-index-url", "--require-hashes",
                          "--prefer-binary", "--only-binary"})
"""Options a project's fetch lock may carry through to pip."""


@dataclass(frozen=True)
class LockedPin:
    """One locked requirement: exact version, hashes as ``algo:hex``, optional marker."""

    name: str
    version: str
    hashes: tuple[str, ...]
    marker: str | None
    line: int

    @property
    def key(self) -> str:
        """The normalised project name (PEP 503)."""
        return normalise_name(self.name)


@dataclass(frozen=True)
class HashedLock:
    """A parsed lock: the option lines to keep (in order) and the pins."""

    options: tuple[str, ...]
    pins: tuple[LockedPin, ...]


def normalise_name(name: str) -> str:
    """PEP 503 normalisation: lower case, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with comments removed and backslash continuations joined, numbered."""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
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


_SIMPLE_PIN = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>"
                         r"(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?"
                         r"(?:\.post[0-9]+)?(?:\.dev[0-9]+)?)")


def _requirement(text: str, where: str) -> tuple[str, str | None, bool, bool, str | None]:
    """(name, pinned version or None, has extras, has a URL, marker) of one requirement.

    The plain ``name==X.Y`` every lock line is checks without ``packaging`` (what packaging
    returns for it is exactly the text; a toolchain's lock is read on every run); anything
    else is parsed by ``packaging``, imported only then.
    """
    simple = _SIMPLE_PIN.fullmatch(text)
    if simple is not None:
        return simple["name"], simple["version"], False, False, None
    from packaging.requirements import (  # noqa: PLC0415 - lazy, see above
        InvalidRequirement,
        Requirement,
    )

    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise RecipeError(f"{where}: {text!r} is not a PEP 508 requirement: {exc}",
                          "write 'name==version --hash=sha256:<hex>'") from exc
    clauses = list(requirement.specifier)
    version = None
    if len(clauses) == 1 and clauses[0].operator in ("==", "===") \
            and not clauses[0].version.endswith(".*"):
        version = clauses[0].version
    marker = str(requirement.marker) if requirement.marker is not None else None
    return (requirement.name, version, bool(requirement.extras), bool(requirement.url),
            marker)


def parse_hashed_lock(text: str, origin: str, *, options: bool = False, markers: bool = False,
                      algorithms: frozenset[str] = frozenset(_HEX_LENGTH)) -> HashedLock:
    """Parse a hashed lock or raise :class:`RecipeError` naming ``origin:line``.

    ``options`` allows the index option lines of :data:`PASS_OPTIONS`; ``markers`` allows
    a PEP 508 marker after the pin (``name==1.0 ; python_version < "3.12"``);
    ``algorithms`` limits the hash algorithms accepted.
    """
    kept: list[str] = []
    pins: list[LockedPin] = []
    seen: dict[tuple[str, str | None], int] = {}
    for number, line in _logical_lines(text):
        where = f"{origin}:{number}"
        if line.startswith("-") and not line.startswith("--hash"):
            word = re.split(r"[\s=]", line, maxsplit=1)[0]
            if not options or word not in PASS_OPTIONS:
                allowed = ("index options (--index-url, --extra-index-url)" if options
                           else "no options")
                raise RecipeError(
                    f"{where}: option {word} is not allowed in this lock",
                    f"a lock holds only 'name==version --hash=sha256:...' lines and {allowed}; "
                    "nothing is built from source and no other file is read")
            kept.append(line)
            continue
        found = list(_HASH_OPTION.finditer(line))
        rest = _HASH_OPTION.sub("", line).strip()
        if re.search(r"(^|\s)--?[a-z]", rest):
            raise RecipeError(f"{where}: only --hash options may follow a requirement",
                              "move other options to their own lines")
        hashes: list[str] = []
        for match in found:
            algo, hexdigest = match["algo"], match["hex"].lower()
            if algo not in algorithms or len(hexdigest) != _HEX_LENGTH[algo]:
                raise RecipeError(
                    f"{where}: --hash={algo}:{hexdigest[:16]}... is not accepted here",
                    "use " + " or ".join(f"--hash={a}:<{_HEX_LENGTH[a]} hex>"
                                         for a in sorted(algorithms)))
            hashes.append(f"{algo}:{hexdigest}")
        name, version, extras, url, marker = _requirement(rest, where)
        if extras and not markers:
            raise RecipeError(f"{where}: {rest!r} names extras",
                              "this lock pins exact files: list each one on its own line")
        if url or version is None:
            raise RecipeError(f"{where}: {rest!r} is not pinned to one version",
                              "a lock pins every requirement with == and --hash, without "
                              "URLs (pip-compile --generate-hashes, uv pip compile "
                              "--generate-hashes)")
        if marker is not None and not markers:
            raise RecipeError(f"{where}: {rest!r} has an environment marker",
                              "this lock is for one known environment; drop the marker")
        if not hashes:
            raise RecipeError(f"{where}: {name}=={version} has no --hash",
                              "add --hash=sha256:<hex> (pip-compile --generate-hashes)")
        ident = (normalise_name(name), marker)
        if ident in seen:
            raise RecipeError(f"{where}: {name} is pinned twice "
                              f"(also on line {seen[ident]})", "keep one pin per requirement")
        seen[ident] = number
        pins.append(LockedPin(name, version, tuple(hashes), marker, number))
    if not pins:
        raise RecipeError(f"{origin}: the lock pins nothing",
                          "list 'name==version --hash=sha256:<hex>' lines")
    return HashedLock(tuple(kept), tuple(pins))
