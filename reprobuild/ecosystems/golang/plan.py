"""Planning a Go module's fetch: ``go.mod`` and ``go.sum`` in, every module version pinned.

The fetch runs ``go mod download`` on the module's ``go.mod`` and ``go.sum`` alone (never
the source: ``go mod download`` compiles nothing and runs no code of the module). Every
module version ``go.sum`` lists is a pin with its ``h1:`` hash (the zip's, and the
``go.mod``'s); the host checks every downloaded file against them again
(:func:`module_hash`). A module with ``vendor/modules.txt`` needs no fetch at all: its
dependencies are in the tree.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from reprobuild.ecosystems.interface import FetchPlan, Pin, files_of, join
from reprobuild.errors import RecipeError
from reprobuild.source import SourceTree

__all__ = [
    "STRATEGY",
    "GoMod",
    "module_hash",
    "parse_go_mod",
    "parse_go_sum",
    "plan_go",
    "unescape_path",
]

STRATEGY = "go-mod"

_DIRECTIVE = re.compile(r"^\s*(module|go|toolchain)\s+(\S+)", re.MULTILINE)
_REPLACE_LOCAL = re.compile(r"=>\s*(\.{1,2}/\S*)")
_SUM_LINE = re.compile(r"^(?P<mod>\S+) (?P<version>v\S+?)(?P<gomod>/go\.mod)? "
                       r"(?P<hash>h1:[A-Za-z0-9+/]{43}=)$")
_MAX_ZIP = 512 << 20


@dataclass(frozen=True)
class GoMod:
    """What reprobuild reads from a ``go.mod`` (the go command reads the rest)."""

    module: str
    go: str | None
    toolchain: str | None
    local_replacements: tuple[str, ...]


def parse_go_mod(text: str, origin: str) -> GoMod:
    """The module path, ``go`` and ``toolchain`` directives and local replacements."""
    found: dict[str, str] = {}
    for m in _DIRECTIVE.finditer(text):
        found.setdefault(m[1], m[2])
    if "module" not in found:
        raise RecipeError(f"{origin} has no module directive", "is it a go.mod?")
    local = tuple(sorted({m[1] for m in _REPLACE_LOCAL.finditer(text)}))
    return GoMod(module=found["module"].strip('"'), go=found.get("go"),
                 toolchain=found.get("toolchain"), local_replacements=local)


def parse_go_sum(text: str, origin: str) -> tuple[Pin, ...]:
    """Every module version with its hashes (``h1:`` of the zip, ``go.mod h1:``)."""
    hashes: dict[tuple[str, str], list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _SUM_LINE.fullmatch(line.strip())
        if m is None:
            raise RecipeError(f"{origin}:{number}: not a go.sum line: {line[:120]!r}",
                              "regenerate it with `go mod tidy`")
        kind = "go.mod " if m["gomod"] else ""
        hashes.setdefault((m["mod"], m["version"]), []).append(kind + m["hash"])
    return tuple(Pin(mod, version, tuple(sorted(found)))
                 for (mod, version), found in sorted(hashes.items()))


def plan_go(tree: SourceTree) -> FetchPlan:
    """The fetch plan of the Go module in the project directory."""
    files = files_of(tree)
    project = tree.subdir
    mod_path = join(project, "go.mod")
    if mod_path not in files:
        raise RecipeError(f"no go.mod in {project or 'the repository root'}",
                          "give --subdir the module's directory")
    try:
        text = files[mod_path].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{mod_path} is not UTF-8", "fix go.mod") from exc
    go_mod = parse_go_mod(text, mod_path)
    notes = [f"module {go_mod.module}" + (f", go {go_mod.go}" if go_mod.go else "")
             + (f", toolchain {go_mod.toolchain}" if go_mod.toolchain else "")]
    if join(project, "vendor/modules.txt") in files:
        notes.append("vendor/modules.txt: the dependencies are vendored in the tree; "
                     "nothing to fetch")
        return FetchPlan(strategy=STRATEGY, project_dir=project, lock_root=project,
                         pin_source=f"vendor:{join(project, 'vendor/modules.txt')}",
                         notes=tuple(notes))
    sum_path = join(project, "go.sum")
    if sum_path not in files:
        if "\nrequire" in text or text.startswith("require"):
            raise RecipeError(f"{mod_path} requires modules but there is no go.sum beside it",
                              "run `go mod tidy` and commit go.sum: the fetch checks every "
                              "module against it")
        return FetchPlan(strategy=STRATEGY, project_dir=project, lock_root=project,
                         pin_source="go.mod (no requirements)", notes=tuple(notes))
    pins = parse_go_sum(files[sum_path].decode("utf-8", "replace"), sum_path)
    selected = [("go.mod", files[mod_path]), ("go.sum", files[sum_path])]
    for relative in go_mod.local_replacements:
        target = str(PurePosixPath(project or ".") / relative / "go.mod")
        normal = str(PurePosixPath(target))
        if normal in files:
            selected.append((str(PurePosixPath(relative) / "go.mod"), files[normal]))
        else:
            notes.append(f"replacement {relative} has no go.mod in the tree")
    return FetchPlan(strategy=STRATEGY, project_dir=project, lock_root=project,
                     files=tuple(selected), pin_source=f"go.sum:{sum_path}", pins=pins,
                     notes=tuple(notes))


def _h1(entries: Mapping[str, bytes]) -> str:
    """Go's dirhash Hash1: sha256 over "sha256hex  name\\n" lines, sorted by name."""
    summary = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                      for name, data in sorted(entries.items()))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def module_hash(zip_bytes: bytes) -> str:
    """The ``h1:`` hash of a module zip, as ``go.sum`` records it (refusing bad names)."""
    import zipfile  # noqa: PLC0415 - only the fetch's check needs it

    entries: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        total = 0
        for info in archive.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                raise ValueError(f"unsafe name {name!r} in a module zip")
            total += info.file_size
            if total > _MAX_ZIP:
                raise ValueError("module zip too large")
            entries[name] = archive.read(info)
    return _h1(entries)


def go_mod_hash(data: bytes) -> str:
    """The ``go.mod h1:`` hash of a module's go.mod file."""
    return _h1({"go.mod": data})


def unescape_path(escaped: str) -> str:
    """A module cache path back to the module path (``!azure`` is ``Azure``)."""
    return re.sub(r"!([a-z])", lambda m: m[1].upper(), escaped)
