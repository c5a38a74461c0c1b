"""What an ecosystem supplies, and the records it exchanges with the shared machinery.

The split follows Google's OSS Rebuild (one package per ecosystem under ``pkg/rebuild``):
an ecosystem *plans* and shared code *runs and compares*. An ecosystem knows its
manifests and lockfiles, its registries, its package tools' command lines, environment
variables and error messages, and how to check what those tools downloaded. It never
starts a container, opens a socket or prints: :mod:`reprobuild.fetch` runs the fetch it
planned (in the hardened fetch container, through the allow-list proxy), and the
pipeline runs the builds with the environment it names.

Every method is pure or reads only files it is handed, so each ecosystem's planning is
unit-tested without Docker, and a new ecosystem is a new subpackage plus one line in
:data:`reprobuild.ecosystems.ECOSYSTEMS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reprobuild.archive import ExtractedFile
from reprobuild.errors import RecipeError, ReprobuildError
from reprobuild.source import EntryKind, SourceTree

if TYPE_CHECKING:
    from reprobuild.images import ImageDefinition, ToolchainImage

__all__ = [
    "DEPS_BIN",
    "DEPS_DIR",
    "NO_FETCH",
    "UNTRUSTED_CA_HINT",
    "Ecosystem",
    "FetchJob",
    "FetchPlan",
    "FetchSettings",
    "Pin",
    "PublishedFile",
    "ReleaseConditions",
    "ReleaseRef",
    "Releases",
    "Verified",
    "files_of",
    "join",
    "levels_above",
    "load_yaml",
    "outside",
    "resolve",
]

DEPS_DIR = "/deps"
"""Where the fetched dependencies are unpacked in the builds (and written by the fetch)."""

DEPS_BIN = f"{DEPS_DIR}/bin"
"""Tools an ecosystem fetched (pnpm): a ``PATH`` entry of ``build_env`` goes before the
image's ``PATH``, and the files ``Verified.executables`` names keep their execute bit."""

UNTRUSTED_CA_HINT = ("the registry's certificate was not trusted: behind a TLS-intercepting "
                     "proxy pass --ca-cert (or set REPROBUILD_CA_CERT)")
"""What every ecosystem's ``failure_hint`` says when its tool rejected a certificate."""

NO_FETCH = "none"
"""The ``[fetch].strategy`` of a recipe that needs nothing from a registry."""


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

    strategy: str
    project_dir: str
    lock_root: str = ""
    files: tuple[tuple[str, bytes], ...] = ()
    requirements: tuple[str, ...] = ()
    pin_source: str = ""
    pins: tuple[Pin, ...] = ()
    cutoff: int | None = None
    notes: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    """Decisions of the ecosystem's planning that its fetch command and build environment
    share (cargo: where the workspace root is, which targets to build)."""

    @property
    def hashed(self) -> bool:
        """Whether every download is checked against a lock hash (vs resolved)."""
        return self.cutoff is None

    @property
    def lock_name(self) -> str:
        """The lock the pins come from, as error messages name it."""
        return self.pin_source.split(":", 1)[-1] or "the lock"


@dataclass(frozen=True, kw_only=True)
class FetchSettings:
    """What the recipe says about the fetch, and when "now" is (for resolution cutoffs)."""

    origin: str
    """The recipe file, for error messages."""
    lock: str | None = None
    """``[fetch].lock``: a lock file relative to the project directory, if any."""
    now: float | None = None
    """Wall-clock time for sources without a commit date (tests pin it)."""
    pins: tuple[str, ...] = ()
    """Exact versions the run insists on (``name==version``: inferred from a release, or
    ``--pin``); they take precedence over any lock."""
    cutoff: int | None = None
    """Resolve as of this time instead of the commit's (a release's upload time)."""


@dataclass(frozen=True)
class Verified:
    """What survived an ecosystem's check of the fetched files, and what it pinned."""

    files: tuple[ExtractedFile, ...]
    pins: tuple[tuple[str, str], ...]
    hashes: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    executables: frozenset[str] = frozenset()
    """Paths of ``files`` the builds must be able to run (every other file is 0644)."""


@dataclass(frozen=True)
class ReleaseRef:
    """One published release: ``pypi:NAME==VERSION``, ``npm:NAME@VERSION``."""

    registry: str
    name: str
    version: str
    spec: str
    """How the user (or the project's metadata) named it, for messages."""


@dataclass(frozen=True)
class PublishedFile:
    """One file of a release as its registry lists it."""

    name: str
    url: str
    digest: str
    """``sha256:<hex>`` or ``sha512:<hex>``: what the download is checked against."""
    uploaded: int | None = None
    """Unix time of the upload, when the registry says."""
    source: bool = False
    """Whether this file is the release's source (an sdist, a package tarball)."""


@dataclass(frozen=True)
class ReleaseConditions:
    """How a release was built, as far as its artifacts tell, and what a rebuild pins."""

    facts: tuple[str, ...] = ()
    """What was inferred and from where, one line each ("WHEEL Generator: ...")."""
    pins: tuple[str, ...] = ()
    """Exact build requirements for the fetch (``name==version``)."""
    env: tuple[tuple[str, str | None], ...] = ()
    """Build environment changes: a value, or None to leave the variable unset."""
    cutoff: int | None = None
    """Resolve the other build requirements as of this time (the upload), if known."""
    details: tuple[tuple[str, str], ...] = ()
    """The same facts as key/value pairs for the report (``backend``, ...)."""


class Releases(Protocol):
    """What an ecosystem knows about its registry's releases (``verify``)."""

    registry: str
    """The prefix of release specs (``pypi``)."""
    spec_form: str
    """How a release is named, for help texts (``pypi:NAME==VERSION``)."""

    def parse(self, spec: str) -> ReleaseRef | None:
        """The release a spec names, None if it is not this registry's (raise if malformed)."""
        ...

    def of_project(self, tree: SourceTree) -> ReleaseRef | None:
        """The release the project's own metadata names (static name and version)."""
        ...

    def metadata_url(self, ref: ReleaseRef) -> str:
        """Where the registry describes the release (JSON)."""
        ...

    def files(self, ref: ReleaseRef, metadata: bytes) -> tuple[PublishedFile, ...]:
        """The release's files and their digests, from the registry's description."""
        ...

    def conditions(self, files: Mapping[str, Path], tree: SourceTree) -> ReleaseConditions:
        """Infer how the release was built from its files (and the project's manifest)."""
        ...


class FetchJob(Protocol):
    """What the fetch container runs: a command, its tool's settings, its allow-list.

    Every ecosystem is one (its dependency fetch); downloading published release files is
    another (:mod:`reprobuild.fetch.release`).
    """

    allow_list: tuple[tuple[str, int], ...]
    """The only ``host:port`` pairs the fetch proxy lets this job reach."""

    def fetch_command(self, plan: FetchPlan) -> str:
        """Shell lines the fetch container runs in ``/work/src`` (relay already up)."""
        ...

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        """The tool's own settings in the fetch container (proxy, CA, quiet)."""
        ...


class Ecosystem(FetchJob, Protocol):
    """One ecosystem: its fetch strategy and everything that strategy needs to know.

    Attributes are class-level facts; methods are pure or read only what they are given.
    """

    name: str
    """Short name (``python``, ``node``), as documentation and messages use it."""
    strategy: str
    """The ``[fetch].strategy`` value of recipes that use this ecosystem."""
    summary: str
    """One line for the recipe format's documentation: what the fetch downloads."""
    image_families: tuple[str, ...]
    """Recipe ``image`` names this ecosystem refines for a project (``node``)."""
    releases: Releases | None
    """Its registry's releases, if ``verify`` can compare with them."""
    fix_hints: Mapping[str, str]
    """What its own tools do about a class of cause (``embedded-timestamp``, ...: the
    values of :class:`reprobuild.explain.causes.CauseClass`), added to the generic fix."""
    clock_via_libc: bool
    """Whether its tools read the time through libc, so libfaketime moves their clock.
    Go programs read it from the vDSO themselves: build B then also starts later."""

    def choose_image(self, tree: SourceTree, requested: str,
                     definitions: Mapping[str, ImageDefinition]) -> str:
        """The toolchain image the project builds in, given the recipe's ``image``."""
        ...

    def governs(self, tree: SourceTree) -> bool:
        """Whether this ecosystem builds the project when its recipe detects: False when
        another ecosystem's lockfile governs the same manifest (a package.json locked by
        pnpm is not npm's), so that recipe is left out before any tie rule."""
        ...

    def declares_package(self, tree: SourceTree) -> str | None:
        """What in the project directory declares a package this ecosystem builds (said in
        the report when several recipes detect), or None (release tooling, a private root)."""
        ...

    def reads_above(self, tree: SourceTree) -> tuple[tuple[str, str], ...]:
        """What this ecosystem's planning and builds of the project read outside its
        directory ``tree.subdir`` (workspace roots, their lockfiles, sibling members,
        local path dependencies), as ``(path, why)``: a file, or a directory and all below
        it, ``""`` for the whole repository when it cannot tell. ``()`` when the project is
        not this ecosystem's or needs nothing above. ``tree`` holds the project, every file
        of the directories above it and every manifest of the repository."""
        ...

    def plan_fetch(self, tree: SourceTree, settings: FetchSettings,
                   toolchain: ToolchainImage | None) -> FetchPlan:
        """Decide what to download from the tree's manifests and lockfiles alone.

        ``toolchain`` is the image the builds run in (its Python, CPU and libc decide
        which wheels fit), or None for the image's documented defaults.
        """
        ...

    def build_env(self, plan: FetchPlan) -> tuple[tuple[str, str], ...]:
        """Environment of the offline builds that points the tools at ``/deps``.

        A ``PATH`` entry is put before the image's own ``PATH`` (fetched tools, see
        :data:`DEPS_BIN`); every other variable is set as given.
        """
        ...

    def verify(self, plan: FetchPlan, files: Sequence[ExtractedFile], staging: Path) -> Verified:
        """Check every fetched file against the plan before it is cached (raise on tamper)."""
        ...

    def diagnose(self, plan: FetchPlan, log: str) -> ReprobuildError | None:
        """The error a failed fetch's log shows (an integrity mismatch), if it is one."""
        ...

    def failure_line(self, log: str) -> str | None:
        """The line of a failed fetch's log that says what went wrong, if the tool marks one."""
        ...

    def failure_hint(self, log: str) -> str | None:
        """A hint for a failed fetch the tool's log explains (untrusted certificates)."""
        ...


def load_yaml(data: bytes, path: str, hint: str) -> Any:
    """A YAML manifest from the tree (pnpm's lock, a goreleaser file), with PyYAML's safe
    loader (libyaml's when built); invalid YAML is a :class:`RecipeError` with ``hint``.
    PyYAML is imported only here, when a project has such a file."""
    import yaml  # noqa: PLC0415  (see the docstring)

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(data, Loader=loader)  # noqa: S506  (a safe loader)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}",
                          hint) from exc


def files_of(tree: SourceTree) -> dict[str, bytes]:
    """The tree's regular files by path (what planning reads)."""
    return {e.path: e.data for e in tree.entries if e.kind is EntryKind.FILE}


def levels_above(subdir: str) -> list[str]:
    """The directories above a project, nearest first, the repository root (``""``) last."""
    parts = subdir.split("/") if subdir else []
    return ["/".join(parts[:depth]) for depth in range(len(parts) - 1, -1, -1)]


def resolve(base: str, target: str) -> str | None:
    """``target``, relative to the directory ``base``, as a path from the repository root;
    None for an absolute path, a backslash, or one that climbs above the root."""
    if target.startswith("/") or "\\" in target:
        return None
    parts: list[str] = base.split("/") if base else []
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None  # above the repository: not in the tree
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def outside(subdir: str, target: str) -> str | None:
    """Where a path a project's manifest names (relative to the project) is in the tree,
    when that is outside the project and inside the repository; else None."""
    path = resolve(subdir, target)
    if path is None or not subdir:
        return None
    inside = path == subdir or path.startswith(f"{subdir}/")
    return None if inside else path


def join(*parts: str) -> str:
    """Join posix path parts, skipping empty ones (the repository root is ``""``)."""
    return "/".join(p for p in parts if p)
