"""The pure phases of a run: source, recipe, the sandbox specs, and report pieces.

Nothing here talks to Docker (or imports its SDK), so a bad source, ref, subdir, recipe or
``--out`` is found and reported before the engine is touched, and the planning is
unit-tested without it. :mod:`.phases` holds the phases that run containers.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from reprobuild import ecosystems, images
from reprobuild.archive import ExtractedFile, build_tar
from reprobuild.compare import DiffoscopeLimits
from reprobuild.ecosystems.interface import DEPS_DIR, NO_FETCH
from reprobuild.errors import InputError, RecipeError, ReprobuildError
from reprobuild.recipes import (
    DEFAULT_COMMIT_TIME,
    Recipe,
    builtin_recipes,
    detected_recipes,
    render_env,
    select_recipe,
)
from reprobuild.report import (
    BuildInfo,
    FetchInfo,
    OutputInfo,
    RecipeInfo,
    SourceInfo,
    ToolchainInfo,
)
from reprobuild.sandbox.spec import (
    OUT_DIR,
    SandboxLimits,
    SandboxResult,
    SandboxSpec,
    host_cpus,
)
from reprobuild.source import SourceTree, acquire
from reprobuild.variations import (
    BuildEnv,
    Variation,
    build_script,
    environment,
    plan_pair,
    settings,
)

if TYPE_CHECKING:
    from reprobuild.fetch import FetchedDeps

__all__ = [
    "REPO_RECIPE",
    "RunOptions",
    "Sides",
    "acquire_source",
    "build_info",
    "build_spec",
    "build_warnings",
    "fetch_info",
    "host_cpus",
    "prepare_out_dir",
    "project_files",
    "recipe_info",
    "repo_recipe_bytes",
    "select",
    "select_with_reason",
    "source_info",
    "source_warnings",
    "toolchain_info",
    "wanted_outputs",
]

REPO_RECIPE = ".reprobuild.toml"
_LOG_TAIL_LINES = 30


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What every building command takes; the CLI builds it, tests build it directly."""

    source: str
    ref: str | None = None
    subdir: str | None = None
    recipe: str | None = None
    variations: frozenset[Variation] = frozenset(Variation)
    timeout_s: float | None = None
    out_dir: Path | None = None
    ca_cert: Path | None = None
    diffoscope: bool = True
    trap: bool = True
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    diffoscope_limits: DiffoscopeLimits = field(default_factory=DiffoscopeLimits)


# --------------------------------------------------------------------------- source, recipe


def acquire_source(source: str, *, ref: str | None, subdir: str | None) -> SourceTree:
    """The committed files of SOURCE at REF the builds need (validated before Docker is
    touched): with ``subdir``, the project and what its ecosystems read from above
    (:func:`_needs`). A URL's objects are kept across runs under the cache directory."""
    with tempfile.TemporaryDirectory(prefix="reprobuild-src-") as workdir:
        return acquire(source, ref=ref, subdir=subdir, workdir=Path(workdir),
                       cache=images.cache_root() / "git", needs=_needs,
                       manifest_names=frozenset(PurePosixPath(name).name for recipe in
                                                builtin_recipes().values()
                                                for name in recipe.detect_files))


def _needs(tree: SourceTree) -> list[tuple[str, str]]:
    """What a project in a subdirectory reads from above: each ecosystem says for its
    own (workspace roots, lockfiles, members); when none can tell, the whole repository."""
    if repo_recipe_bytes(tree) is not None:
        return [("", f"the project's own {REPO_RECIPE} may build from any file")]
    if not detected_recipes(project_files(tree)):
        return [("", "no recipe detects the project, so what it reads is not known")]
    found: list[tuple[str, str]] = []
    for ecosystem in ecosystems.ECOSYSTEMS:
        try:
            found.extend(ecosystem.reads_above(tree))
        except ReprobuildError as exc:
            found.append(("", f"{ecosystem.name} could not tell what it reads ({exc})"))
    return found


def project_files(tree: SourceTree) -> list[str]:
    """Paths of the selected project, relative to its directory (pure)."""
    prefix = f"{tree.subdir}/" if tree.subdir else ""
    return [e.path[len(prefix):] for e in tree.entries if e.path.startswith(prefix)]


def repo_recipe_bytes(tree: SourceTree) -> bytes | None:
    """The repository's own recipe file for the selected project, if it has one."""
    wanted = f"{tree.subdir}/{REPO_RECIPE}" if tree.subdir else REPO_RECIPE
    for entry in tree.entries:
        if entry.path == wanted:
            return entry.data
    return None


def select(tree: SourceTree, name: str | None) -> Recipe:
    """The recipe for the project (see :func:`select_with_reason`)."""
    return select_with_reason(tree, name)[0]


def select_with_reason(tree: SourceTree, name: str | None) -> tuple[Recipe, str | None]:
    """The recipe for the project, with the toolchain image its ecosystem picks, and why
    it was chosen when more than one recipe detects (pure but for reading the image
    definitions shipped with reprobuild).

    ``--recipe`` and the repository's own recipe decide first. Otherwise, when several
    recipes detect (a Python server with a package.json for its release tooling), the one
    whose manifest declares the package to be built wins; none or several declaring is an
    error listing the candidates, never a silent pick.
    """
    files = project_files(tree)
    reason = None
    repo_recipe = repo_recipe_bytes(tree)
    found = detected_recipes(files) if name is None and repo_recipe is None else []
    found = [r for r in found if _governs(r, tree)]
    if len(found) > 1:
        declared = {r.name: _declares(r, tree) for r in found}
        winners = [r for r in found if declared[r.name]]
        described = "; ".join(f"{r.name} ({', '.join(f for f in r.detect_files if f in files)}"
                              f": {declared[r.name] or 'declares no package'})" for r in found)
        if len(winners) != 1:
            raise RecipeError(f"more than one recipe fits and {len(winners) or 'none'} of them "
                              f"declare the package to build: {described}",
                              "pass --recipe NAME, or add " + REPO_RECIPE + " to the project "
                              "directory")
        recipe = winners[0]
        reason = f"chosen over {', '.join(r.name for r in found if r is not recipe)}: {described}"
    elif len(found) == 1:
        recipe = found[0]
    else:
        recipe = select_recipe(files, name=name, repo_recipe=repo_recipe,
                               repo_recipe_path=REPO_RECIPE)
    # Only an ecosystem that refines this image family is asked (by the toolchain version
    # the project declares); the image definitions are read only then.
    ecosystem = ecosystems.for_image(recipe.image)
    if ecosystem is None:
        return recipe, reason
    image = ecosystem.choose_image(tree, recipe.image, images.load_definitions())
    return replace(recipe, image=image), reason


def _governs(recipe: Recipe, tree: SourceTree) -> bool:
    """Whether the recipe's ecosystem builds this project (another's lockfile may rule)."""
    if recipe.fetch_strategy == NO_FETCH:
        return True
    return ecosystems.get(recipe.fetch_strategy, origin=recipe.origin).governs(tree)


def _declares(recipe: Recipe, tree: SourceTree) -> str | None:
    """What declares the package the recipe's ecosystem would build, if anything does."""
    if recipe.fetch_strategy == NO_FETCH:
        return f"{recipe.name} has no ecosystem to ask"
    return ecosystems.get(recipe.fetch_strategy, origin=recipe.origin).declares_package(tree)


def source_info(tree: SourceTree) -> SourceInfo:
    """The source as the report shows it (``sent``: what beyond the project went in)."""
    return SourceInfo(url=tree.location, kind=tree.kind.value, ref=tree.ref, commit=tree.commit,
                      commit_time=tree.commit_time, subdir=tree.subdir,
                      tree_sha256=tree.tree_sha256, files=len(tree.entries),
                      sent={path or ".": why for path, why in tree.sent})


def source_warnings(tree: SourceTree) -> list[str]:
    """What a reader of the report must know about the source: work-tree changes that
    the builds did not get (only committed content is built)."""
    if not tree.uncommitted:
        return []
    shown = ", ".join(tree.uncommitted[:5]) + (", ..." if len(tree.uncommitted) > 5 else "")
    return [f"{len(tree.uncommitted)} uncommitted change(s) in {tree.location} are not built "
            f"(only commit {(tree.commit or '')[:12]} is): {shown}"]


def recipe_info(recipe: Recipe, reason: str | None, tree: SourceTree) -> RecipeInfo:
    """The recipe as the report shows it, with the manifest it detected in the project."""
    present = project_files(tree)
    manifest = next((f for f in recipe.detect_files if f in present), None)
    if manifest is not None and tree.subdir:
        manifest = f"{tree.subdir}/{manifest}"
    return RecipeInfo(name=recipe.name, origin=recipe.origin, commands=recipe.commands,
                      outputs=recipe.outputs, reason=reason, manifest=manifest)


def toolchain_info(toolchain: images.ToolchainImage | None) -> ToolchainInfo:
    """The toolchain image as the report shows it (empty when no build ran)."""
    if toolchain is None:
        return ToolchainInfo(image="", image_id="", definition_sha256="", versions={})
    return ToolchainInfo(image=toolchain.tag, image_id=toolchain.image_id,
                         definition_sha256=toolchain.definition_sha256,
                         versions=dict(toolchain.versions))


_CLAIMED: dict[str, int] = {}
"""``--out`` directories this process holds: real path -> an open descriptor of it with an
exclusive ``flock``. The lock goes with the process, however it ends."""


def prepare_out_dir(path: Path) -> Path:
    """Create and claim ``--out``; refuse a non-empty directory so nothing the user has is
    overwritten, and one another run holds (two runs writing one directory would tangle
    their evidence). The claim is an exclusive lock on the directory taken before it is
    looked into, so of two runs starting at once exactly one gets it."""
    taken = "pick a new directory; reprobuild never overwrites earlier results"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file, or a link to one
        raise InputError(f"--out {path} already exists and is not an empty directory",
                         taken) from exc
    except OSError as exc:
        raise InputError(f"--out {path}: cannot create it: {exc.strerror or exc}",
                         "name a directory you can write to") from exc
    key = os.path.realpath(path)
    claimed_now = key not in _CLAIMED
    if claimed_now:
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise InputError(f"--out {path} is in use by another reprobuild run",
                             taken) from exc
        _CLAIMED[key] = fd
    if any(path.iterdir()):
        if claimed_now:
            os.close(_CLAIMED.pop(key))
        raise InputError(f"--out {path} already exists and is not an empty directory", taken)
    return path


def fetch_info(fetched: FetchedDeps | None) -> FetchInfo | None:
    """The fetch phase as the report shows it: what was pinned and every request made."""
    if fetched is None:
        return None
    return FetchInfo(strategy=fetched.strategy, key=fetched.key, cache_hit=fetched.cache_hit,
                     seconds=round(fetched.seconds, 3), failure=fetched.failure,
                     pins=dict(fetched.pins), hashes=dict(fetched.hashes),
                     notes=fetched.notes, requests=fetched.requests)


def build_pair(selected: Iterable[Variation], recipe: Recipe | None, *,
               host_cpus: int) -> tuple[BuildEnv, BuildEnv]:
    """:func:`~reprobuild.variations.plan_pair` for this recipe's toolchain: whether
    libfaketime moves its clock is its ecosystem's to say."""
    libc = recipe is None or recipe.fetch_strategy == NO_FETCH or ecosystems.get(
        recipe.fetch_strategy, origin=recipe.origin).clock_via_libc
    return plan_pair(selected, host_cpus=host_cpus, clock_via_libc=libc)


def build_spec(env: BuildEnv, *, tree: SourceTree, recipe: Recipe,
               toolchain: images.ToolchainImage, limits: SandboxLimits,
               trap: bool = True, deps: Path | None = None,
               deps_env: Sequence[tuple[str, str]] = ()) -> SandboxSpec:
    """Turn one planned environment into the sandbox spec that applies it (pure).

    ``deps`` is the fetched-dependencies tar; it follows the source tar on stdin and is
    unpacked into ``/deps``, and ``deps_env`` tells the build's tools to use it offline.
    """
    project_dir = f"{env.workdir}/{tree.subdir}" if tree.subdir else env.workdir
    recipe_env = render_env(recipe, commit=tree.commit, commit_time=tree.commit_time)
    tools = [value for key, value in deps_env if key == "PATH"]  # fetched tools go first
    environ = environment(env, path=":".join([*tools, toolchain.path_env]), out_dir=OUT_DIR,
                          recipe_env=[*recipe_env, *((k, v) for k, v in deps_env
                                                     if k != "PATH")])
    script = build_script(env, project_dir=project_dir, commands=recipe.commands,
                          environ=environ, deps_dir=DEPS_DIR if deps else None)
    mtime = tree.commit_time if tree.commit_time is not None else DEFAULT_COMMIT_TIME
    return SandboxSpec(
        role=f"build-{env.name}", image=toolchain.image_id, script=script, uid=env.uid,
        gid=env.gid, hostname=env.hostname, domainname=env.domainname,
        writable=(env.workdir, env.home, "/tmp", *((DEPS_DIR,) if deps else ())),
        stdin=build_tar(tree.entries, order=env.file_order, mtime=mtime),
        stdin_files=(deps,) if deps else (),
        cpuset=env.cpuset, limits=limits, trap=trap, image_python=toolchain.python)


def wanted_outputs(files: Sequence[ExtractedFile], globs: Sequence[str]) -> list[ExtractedFile]:
    """Only what the recipe names as outputs is reported and compared."""
    return [f for f in files
            if any(fnmatchcase(f.path, g) or fnmatchcase(Path(f.path).name, g) for g in globs)]


LOG_TAIL_BYTES = 16 * 1024
"""At most this much of a build's log goes into the report (``log_tail``) and the summary."""
LOG_LINE_CHARS = 500
"""A longer line of the log tail is cut: one 10 MB line must not become a 10 MB report."""
_LOG_READ_BYTES = 64 * 1024  # only the end of build.log is read, however big it is


def _log_tail(path: Path) -> str:
    """The last lines of a build's log, capped by bytes and by line length (the whole log
    stays in build.log). Only its last 64 KiB are read, so a huge log costs nothing."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - _LOG_READ_BYTES))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if size > len(data):  # the window starts inside a line: say so
        lines[0] = "…" + lines[0]
    if lines and lines[-1] == "":
        lines.pop()
    kept: list[str] = []
    budget = LOG_TAIL_BYTES
    for raw in reversed(lines[-_LOG_TAIL_LINES:]):
        line = raw.rstrip("\r")
        if len(line) > LOG_LINE_CHARS:
            line = f"{line[:LOG_LINE_CHARS]}… [line cut at {LOG_LINE_CHARS} characters]"
        budget -= len(line.encode("utf-8")) + 1
        if budget < 0:
            break
        kept.append(line)
    return "\n".join(reversed(kept))


def build_info(env: BuildEnv, result: SandboxResult, artifacts: Sequence[ExtractedFile],
               out: Path) -> BuildInfo:
    """One build as the report shows it."""
    outputs = tuple(OutputInfo(path=f.path, sha256=f.sha256, size=f.size) for f in artifacts)
    return BuildInfo(name=env.name, variations=settings(env), exit_code=result.exit_code,
                     timed_out=result.timed_out, duration_s=round(result.duration_s, 3),
                     outputs=outputs, log=str(result.log_path.relative_to(out)),
                     log_tail=_log_tail(result.log_path))


def build_warnings(result: SandboxResult) -> list[str]:
    """What the sandbox's agent saw at the end of a build that a reader should know."""
    name = result.role.removeprefix("build-")
    found = []
    if result.leftovers:
        found.append(f"build {name} left {result.leftovers} process(es) running when it "
                     "exited; the sandbox killed them before copying the outputs")
    if result.output_dropped:
        found.append(f"build {name} printed {result.output_dropped} bytes more than its log "
                     "keeps (the middle of build.log was left out)")
    return found


@dataclass(frozen=True)
class Sides:
    """Where the artifacts of the two compared sides are (builds A and B in a check)."""

    a_dir: Path
    b_dir: Path
