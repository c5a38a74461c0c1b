"""The phases every command is made of: source, recipe, toolchain, fetch, build, compare.

``check`` runs them once each with two builds; ``verify`` (one rebuild against a published
artifact) and batch runs call the same functions. Each phase is a function of what the
previous ones returned, raises :mod:`reprobuild.errors` exceptions, reports progress to
the observer and never prints. Docker objects belong to a :class:`Session` (one run id,
one cancel event), which removes all of them however the run ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

import docker
import docker.errors

from reprobuild import ecosystems, images
from reprobuild.archive import ExtractedFile, build_tar
from reprobuild.compare import DiffoscopeLimits, Mismatch, explain
from reprobuild.ecosystems.interface import DEPS_DIR, NO_FETCH
from reprobuild.errors import InputError, Interrupted
from reprobuild.fetch import FetchedDeps, fetch, plan_fetch
from reprobuild.progress import Progress
from reprobuild.recipes import DEFAULT_COMMIT_TIME, Recipe, render_env, select_recipe
from reprobuild.report import BuildInfo, DifferenceInfo, FetchInfo, OutputInfo
from reprobuild.sandbox.container import (
    OUT_DIR,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    SandboxSpec,
)
from reprobuild.sandbox.engine import RunLabels, engine_warnings, remove_run, sweep_stale
from reprobuild.source import SourceTree, acquire
from reprobuild.variations import BuildEnv, build_script, environment, settings

__all__ = [
    "DIFFOSCOPE_IMAGE",
    "REPO_RECIPE",
    "Session",
    "acquire_source",
    "build_info",
    "build_spec",
    "explain_all",
    "fetch_info",
    "fetch_phase",
    "housekeeping",
    "prepare_out_dir",
    "project_files",
    "repo_recipe_bytes",
    "select",
    "wanted_outputs",
]

DIFFOSCOPE_IMAGE = "diffoscope"
REPO_RECIPE = ".reprobuild.toml"
_LOG_TAIL_LINES = 30


# --------------------------------------------------------------------------- source, recipe


def acquire_source(source: str, *, ref: str | None, subdir: str | None) -> SourceTree:
    """The committed files of SOURCE at REF (validated before Docker is touched)."""
    with tempfile.TemporaryDirectory(prefix="reprobuild-src-") as workdir:
        return acquire(source, ref=ref, subdir=subdir, workdir=Path(workdir))


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
    """The recipe for the project, with the toolchain image its ecosystem picks (pure
    but for reading the image definitions shipped with reprobuild)."""
    recipe = select_recipe(project_files(tree), name=name, repo_recipe=repo_recipe_bytes(tree),
                           repo_recipe_path=REPO_RECIPE)
    ecosystem = (ecosystems.get(recipe.fetch_strategy, origin=recipe.origin)
                 if recipe.fetch_strategy != NO_FETCH else ecosystems.for_image(recipe.image))
    if ecosystem is None:
        return recipe
    image = ecosystem.choose_image(tree, recipe.image, images.load_definitions())
    return replace(recipe, image=image)


def prepare_out_dir(path: Path) -> Path:
    """Create ``--out``; refuse a non-empty directory so nothing the user has is overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(f"--out {path} already exists and is not an empty directory",
                         "pick a new directory; reprobuild never overwrites earlier results")
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- session


class Session:
    """One run's Docker objects: labels, cancellation, the sandbox; removes them all."""

    def __init__(self, client: docker.DockerClient, progress: Progress) -> None:
        self.client = client
        self.progress = progress
        self.labels = RunLabels.new()
        self.cancel = threading.Event()
        self.sandbox = Sandbox(client, self.labels, self.cancel)

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Remove this run's containers and volumes however the block ends."""
        try:
            yield
        except KeyboardInterrupt as exc:
            self.cancel.set()
            raise Interrupted("interrupted; removed this run's containers and volumes") from exc
        finally:
            self.cancel.set()
            remove_run(self.client, self.labels.run_id)

    def run_builds(self, specs: Sequence[SandboxSpec], out: Path) -> list[SandboxResult]:
        """Run builds concurrently (``out/<name>/``); Ctrl-C cancels them all within a
        poll interval."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(specs),
                                                     thread_name_prefix="reprobuild-build")
        try:
            futures = []
            for spec in specs:
                where = out / spec.role.removeprefix("build-")
                futures.append(pool.submit(self.sandbox.run, spec,
                                           output_dir=where / "artifacts",
                                           log_path=where / "build.log"))
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.5)
                for fut in done:
                    result = fut.result()
                    self.progress.detail(f"{result.role} finished in {result.duration_s:.1f}s "
                                         f"(exit {result.exit_code})")
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def housekeeping(client: docker.DockerClient) -> list[str]:
    """Sweep what killed runs left and say what is wrong with the engine (warnings)."""
    sweep_stale(client)
    try:
        return engine_warnings(client)
    except docker.errors.DockerException:
        return []


# --------------------------------------------------------------------------- fetch


def fetch_phase(session: Session, *, tree: SourceTree, recipe: Recipe,
                toolchain: images.ToolchainImage, ca_cert: Path | None,
                timings: dict[str, float]) -> FetchedDeps | None:
    """Fetch the recipe's dependencies (None when it needs none)."""
    if recipe.fetch_strategy == NO_FETCH:
        return None
    t = time.monotonic()
    session.progress.step(f"fetching dependencies ({recipe.fetch_strategy})")
    plan = plan_fetch(tree, strategy=recipe.fetch_strategy, origin=recipe.origin,
                      lock=recipe.fetch_lock, toolchain=toolchain)
    fetched = fetch(session.client, session.labels, plan=plan, toolchain=toolchain,
                    ca_cert=ca_cert, cache_dir=images.cache_root(),
                    progress=session.progress, cancel=session.cancel)
    timings["fetch_s"] = round(time.monotonic() - t, 3)
    return fetched


def fetch_info(fetched: FetchedDeps | None) -> FetchInfo | None:
    """The fetch phase as the report shows it: what was pinned and every request made."""
    if fetched is None:
        return None
    return FetchInfo(strategy=fetched.strategy, key=fetched.key, cache_hit=fetched.cache_hit,
                     seconds=round(fetched.seconds, 3), failure=fetched.failure,
                     pins=dict(fetched.pins), hashes=dict(fetched.hashes),
                     notes=fetched.notes, requests=fetched.requests)


# --------------------------------------------------------------------------- build


def build_spec(env: BuildEnv, *, tree: SourceTree, recipe: Recipe,
               toolchain: images.ToolchainImage, limits: SandboxLimits,
               trap: bool = True, deps: bytes | None = None,
               deps_env: Sequence[tuple[str, str]] = ()) -> SandboxSpec:
    """Turn one planned environment into the sandbox spec that applies it (pure).

    ``deps`` is the fetched-dependencies tar; it follows the source tar on stdin and is
    unpacked into ``/deps``, and ``deps_env`` tells the build's tools to use it offline.
    """
    project_dir = f"{env.workdir}/{tree.subdir}" if tree.subdir else env.workdir
    recipe_env = render_env(recipe, commit=tree.commit, commit_time=tree.commit_time)
    environ = environment(env, path=toolchain.path_env, out_dir=OUT_DIR,
                          recipe_env=[*recipe_env, *deps_env])
    script = build_script(env, project_dir=project_dir, commands=recipe.commands,
                          environ=environ, deps_dir=DEPS_DIR if deps else None)
    mtime = tree.commit_time if tree.commit_time is not None else DEFAULT_COMMIT_TIME
    return SandboxSpec(
        role=f"build-{env.name}", image=toolchain.image_id, script=script, uid=env.uid,
        gid=env.gid, hostname=env.hostname, domainname=env.domainname,
        writable=(env.workdir, env.home, "/tmp", *((DEPS_DIR,) if deps else ())),
        stdin=build_tar(tree.entries, order=env.file_order, mtime=mtime) + (deps or b""),
        cpuset=env.cpuset, limits=limits, trap=trap, image_python=toolchain.python)


def wanted_outputs(files: Sequence[ExtractedFile], globs: Sequence[str]) -> list[ExtractedFile]:
    """Only what the recipe names as outputs is reported and compared."""
    return [f for f in files
            if any(fnmatchcase(f.path, g) or fnmatchcase(Path(f.path).name, g) for g in globs)]


def _log_tail(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])


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


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Sides:
    """Where the artifacts of the two compared sides are (builds A and B in a check)."""

    a_dir: Path
    b_dir: Path


def explain_all(session: Session, found: Sequence[Mismatch], *, sides: Sides, out: Path,
                diffoscope: bool, limits: DiffoscopeLimits,
                ca_cert: Path | None) -> Iterator[DifferenceInfo]:
    """Each mismatch, explained by sandboxed diffoscope when both sides have it."""
    image: images.ToolchainImage | None = None
    for index, mismatch in enumerate(found):
        info = None
        if diffoscope and mismatch.a is not None and mismatch.b is not None:
            if image is None:
                session.progress.step("explaining differences with diffoscope")
                image = images.ensure_image(session.client, DIFFOSCOPE_IMAGE,
                                            progress=session.progress, ca_cert=ca_cert)
            session.progress.detail(f"diffoscope {mismatch.path}")
            dest = out / "diffoscope" / mismatch.path.replace("/", "_")
            info = explain(session.sandbox, image=image.image_id, mismatch=mismatch,
                           a_dir=sides.a_dir, b_dir=sides.b_dir, dest=dest, root=out,
                           limits=limits, role=f"diffoscope-{index}")
        yield DifferenceInfo(path=mismatch.path,
                             sha256_a=mismatch.a.sha256 if mismatch.a else None,
                             sha256_b=mismatch.b.sha256 if mismatch.b else None,
                             diffoscope=info)
