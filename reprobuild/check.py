"""``reprobuild check``: fetch, plan, build twice, compare, report.

This is the one place that wires the concerns together. It never prints and never
exits: progress goes to the observer, the result is a :class:`~reprobuild.report.Report`,
and fatal problems are :mod:`reprobuild.errors` exceptions. Every Docker object it
creates is labelled with the run id and removed in ``finally`` (also on Ctrl-C).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import docker
import docker.errors

from reprobuild import images
from reprobuild.archive import ExtractedFile, build_tar
from reprobuild.compare import DiffoscopeLimits, Mismatch, explain, mismatches
from reprobuild.engine import RunLabels, connect, engine_warnings, remove_run, sweep_stale
from reprobuild.errors import InputError, Interrupted
from reprobuild.fetch import DEPS_DIR, FetchedDeps, FetchStrategy
from reprobuild.fetch import fetch as fetch_deps
from reprobuild.node import node_images, select_node_image
from reprobuild.progress import Progress, SilentProgress
from reprobuild.recipes import Recipe, render_env, select_recipe
from reprobuild.report import (
    BuildInfo,
    DifferenceInfo,
    OutputInfo,
    RecipeInfo,
    Report,
    SourceInfo,
    ToolchainInfo,
    Verdict,
)
from reprobuild.sandbox import OUT_DIR, Sandbox, SandboxLimits, SandboxResult, SandboxSpec
from reprobuild.source import SourceTree, acquire
from reprobuild.trap import (
    HOST_PYTHON,
    agent_command,
    blocked_attempts,
    image_python,
    mark_one_sided,
    summarize,
)
from reprobuild.variations import (
    BuildEnv,
    Variation,
    build_script,
    environment,
    plan_pair,
    unavailable,
)

DIFFOSCOPE_IMAGE = "diffoscope"
REPO_RECIPE = ".reprobuild.toml"
_LOG_TAIL_LINES = 30
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True, kw_only=True)
class CheckOptions:
    """What the user asked for; the CLI builds this, tests build it directly."""

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


def prepare_out_dir(path: Path) -> Path:
    """Create ``--out``; refuse a non-empty directory so nothing the user has is overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(f"--out {path} already exists and is not an empty directory",
                         "pick a new directory; reprobuild never overwrites earlier results")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    mtime = tree.commit_time if tree.commit_time is not None else 315532800
    return SandboxSpec(
        role=f"build-{env.name}", image=toolchain.image_id, script=script, uid=env.uid,
        gid=env.gid, hostname=env.hostname, domainname=env.domainname,
        writable=(env.workdir, env.home, "/tmp", *((DEPS_DIR,) if deps else ())),
        stdin=build_tar(tree.entries, order=env.file_order, mtime=mtime) + (deps or b""),
        cpuset=env.cpuset, limits=limits, trap=trap,
        image_python=image_python(toolchain.versions))


def _settings(env: BuildEnv) -> dict[str, str]:
    """The concrete value of every variation in one build, for the report."""
    return {
        "build_path": env.workdir, "hostname": f"{env.hostname}.{env.domainname}",
        "user": f"{env.user} ({env.uid}:{env.gid})", "umask": env.umask,
        "timezone": env.timezone, "locale": env.locale, "home": env.home,
        "clock": env.faketime or "real", "cpus": env.cpuset or "all",
        "env_order": env.env_order.value, "file_order": env.file_order.value,
    }


def _log_tail(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _wanted(path: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(path, g) or fnmatchcase(Path(path).name, g) for g in globs)


class _Run:
    """State of one check run, so cleanup knows exactly what to remove."""

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

    def build_both(self, specs: list[SandboxSpec], out: Path) -> list[SandboxResult]:
        """Run both builds concurrently; Ctrl-C cancels both within a poll interval."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(specs),
                                                     thread_name_prefix="reprobuild-build")
        try:
            futures = [pool.submit(self.sandbox.run, spec,
                                   output_dir=out / spec.role.removeprefix("build-") / "artifacts",
                                   log_path=out / spec.role.removeprefix("build-") / "build.log")
                       for spec in specs]
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


def run_check(options: CheckOptions, progress: Progress | None = None) -> Report:
    """Run one complete check and return its report (never prints, never exits).

    Input is validated (source, ref, subdir, recipe, --out) before Docker is touched, so
    a typo costs nothing and gets exit code 2 even on a machine without an engine.
    """
    progress = progress or SilentProgress()
    timings: dict[str, float] = {}
    started = time.monotonic()
    # Every sandbox runs the agent; packing it (bytecode, compressed: ~15 ms) happens while
    # git exports the source. The guess (the images' Python is ours) holds for the pinned
    # bookworm images on a 3.11 host; otherwise the work is wasted, not waited for.
    threading.Thread(target=agent_command, args=(HOST_PYTHON,), name="reprobuild-agent-pack",
                     daemon=True).start()
    progress.step(f"fetching {options.source}")
    with tempfile.TemporaryDirectory(prefix="reprobuild-src-") as workdir:
        tree = acquire(options.source, ref=options.ref, subdir=options.subdir,
                       workdir=Path(workdir))
    timings["source_s"] = round(time.monotonic() - started, 3)
    recipe = select_recipe(project_files(tree), name=options.recipe,
                           repo_recipe=repo_recipe_bytes(tree), repo_recipe_path=REPO_RECIPE)
    recipe = replace(recipe, image=choose_image(tree, recipe))
    keep = options.out_dir is not None
    if options.out_dir is not None:
        prepare_out_dir(options.out_dir)

    progress.step("connecting to Docker")
    client = connect()
    # Housekeeping (leftovers of killed runs, engine warnings) runs beside the check: it
    # touches only other runs' objects, and the report waits for its warnings.
    housekeeping = concurrent.futures.ThreadPoolExecutor(1, "reprobuild-housekeeping")
    engine_notes = housekeeping.submit(_housekeeping, client)
    housekeeping.shutdown(wait=False)
    out = options.out_dir or Path(tempfile.mkdtemp(prefix="reprobuild-"))
    try:
        report = _check(options, client, progress, tree, recipe, out, timings, [], started)
    except BaseException:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
        raise
    report = replace(report, warnings=(*engine_notes.result(), *report.warnings))
    # Without --out, a reproducible run leaves nothing behind; evidence of a problem is
    # kept, and the report says where.
    if not keep and report.verdict is Verdict.REPRODUCIBLE:
        shutil.rmtree(out, ignore_errors=True)
        report = replace(report, out_dir=None)
    return report


def _housekeeping(client: docker.DockerClient) -> list[str]:
    sweep_stale(client)
    try:
        return engine_warnings(client)
    except docker.errors.DockerException:
        return []


def choose_image(tree: SourceTree, recipe: Recipe) -> str:
    """The toolchain image a project gets (pure): Node projects by engines.node/.nvmrc.

    ``.nvmrc`` is looked up in the project directory, then its ancestors (monorepos keep
    it at the root); the recipe's own image is used for every other ecosystem.
    """
    if recipe.image != "node":
        return recipe.image
    files = {e.path: e.data for e in tree.entries}
    prefix = f"{tree.subdir}/" if tree.subdir else ""
    package_json = files.get(f"{prefix}package.json", b"{}")
    nvmrc = None
    parts = tree.subdir.split("/") if tree.subdir else []
    for depth in range(len(parts), -1, -1):
        candidate = "/".join([*parts[:depth], ".nvmrc"])
        if candidate in files:
            nvmrc = files[candidate]
            break
    return select_node_image(package_json, nvmrc, node_images(images.load_definitions()))


def _check(options: CheckOptions, client: docker.DockerClient, progress: Progress,
           tree: SourceTree, recipe: Recipe, out: Path, timings: dict[str, float],
           warnings: list[str], started: float) -> Report:
    t = time.monotonic()
    progress.step(f"toolchain image '{recipe.image}'")
    toolchain = images.ensure_image(client, recipe.image, progress=progress,
                                    ca_cert=options.ca_cert)
    timings["image_s"] = round(time.monotonic() - t, 3)

    host_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    env_a, env_b = plan_pair(options.variations, host_cpus=host_cpus)
    warnings.extend(f"variation '{v.value}' cannot be applied on this machine "
                    f"({host_cpus} CPU)" for v in unavailable(options.variations,
                                                             host_cpus=host_cpus))
    timeout = options.timeout_s or recipe.timeout_s or DEFAULT_TIMEOUT_S
    limits = replace(options.limits, timeout_s=timeout)
    if not options.trap:
        warnings.append("--no-trap: network attempts were blocked but not recorded")

    run = _Run(client, progress)
    results: list[SandboxResult] = []
    differences: tuple[DifferenceInfo, ...] = ()
    fetched: FetchedDeps | None = None
    with run.owned():
        if FetchStrategy(recipe.fetch_strategy) is not FetchStrategy.NONE:
            t = time.monotonic()
            progress.step(f"fetching dependencies ({recipe.fetch_strategy})")
            fetched = fetch_deps(client, run.labels, tree=tree, recipe=recipe,
                                 toolchain=toolchain, ca_cert=options.ca_cert,
                                 cache_dir=images.cache_root(), progress=progress,
                                 cancel=run.cancel)
            timings["fetch_s"] = round(time.monotonic() - t, 3)
        if fetched is None or fetched.failure is None:
            deps = fetched.archive.read_bytes() if fetched and fetched.archive else None
            specs = [build_spec(env, tree=tree, recipe=recipe, toolchain=toolchain,
                                limits=limits, trap=options.trap, deps=deps,
                                deps_env=fetched.env if fetched else ())
                     for env in (env_a, env_b)]
            t = time.monotonic()
            progress.step("building A and B")
            results = run.build_both(specs, out)
            timings["builds_s"] = round(time.monotonic() - t, 3)
        # Only what the recipe names as outputs is reported and compared.
        artifacts = [[f for f in r.outputs if _wanted(f.path, recipe.outputs)]
                     for r in results]
        builds = tuple(_build_info(env, res, files, out) for env, res, files in
                       zip((env_a, env_b), results, artifacts, strict=False))
        failed = not results or any(r.timed_out or r.exit_code != 0 for r in results)
        no_output = not failed and any(not b.outputs for b in builds)
        t = time.monotonic()
        if not failed and not no_output:
            found = mismatches(*artifacts)
            differences = tuple(_explain_all(run, options, found, out, progress))
        timings["compare_s"] = round(time.monotonic() - t, 3)

    egress = tuple(mark_one_sided([r.egress for r in results]))
    if fetched is not None:
        egress = tuple(blocked_attempts(fetched.requests)) + egress
    if egress:
        # Evidence of an injected step outranks everything else, even a failed build
        # (a blocked download is a common reason for one).
        verdict = Verdict.EGRESS
    elif failed or no_output:
        verdict = Verdict.BUILD_FAILED
    elif differences:
        verdict = Verdict.UNREPRODUCIBLE
    else:
        verdict = Verdict.REPRODUCIBLE
    message = None
    if egress:
        message = summarize(egress)
    elif fetched is not None and fetched.failure is not None:
        message = f"fetching dependencies failed: {fetched.failure}"
        if _looks_like_tls_interception(fetched.log):
            message += ("; the registry's certificate was not trusted: behind a TLS-"
                        "intercepting proxy pass --ca-cert (or set REPROBUILD_CA_CERT)")
    elif no_output:
        message = f"a build produced no output matching {', '.join(recipe.outputs)}"
    elif failed:
        message = "; ".join(
            f"build {b.name} " + (f"timed out after {timeout:.0f}s" if b.timed_out
                                  else f"exited with {b.exit_code}")
            for b in builds if b.timed_out or b.exit_code != 0)
    timings["total_s"] = round(time.monotonic() - started, 3)
    return Report(
        verdict=verdict,
        source=SourceInfo(url=tree.location, kind=tree.kind.value, ref=tree.ref,
                          commit=tree.commit, commit_time=tree.commit_time,
                          subdir=tree.subdir, tree_sha256=tree.tree_sha256,
                          files=len(tree.entries)),
        recipe=RecipeInfo(name=recipe.name, origin=recipe.origin, commands=recipe.commands,
                          outputs=recipe.outputs),
        toolchain=ToolchainInfo(image=toolchain.tag, image_id=toolchain.image_id,
                                definition_sha256=toolchain.definition_sha256,
                                versions=dict(toolchain.versions)),
        variations=tuple(v.value for v in env_a.varied),
        builds=builds, differences=differences, timings=timings, out_dir=str(out),
        egress=tuple(asdict(a) for a in egress), fetch=_fetch_info(fetched),
        warnings=tuple(warnings), message=message)


def _looks_like_tls_interception(log: str) -> bool:
    """pip and npm failing certificate checks (an intercepting proxy without --ca-cert)."""
    return any(marker in log for marker in (
        "CERTIFICATE_VERIFY_FAILED", "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER_CERT",
        "unable to get local issuer certificate", "self-signed certificate"))


def _fetch_info(fetched: FetchedDeps | None) -> dict[str, Any] | None:
    """The fetch phase as the report shows it: what was pinned and every request made."""
    if fetched is None:
        return None
    return {
        "strategy": fetched.strategy.value, "key": fetched.key,
        "cache_hit": fetched.cache_hit, "seconds": round(fetched.seconds, 3),
        "failure": fetched.failure, "pins": dict(fetched.pins),
        "hashes": dict(fetched.hashes), "notes": list(fetched.notes),
        "requests": [asdict(r) for r in fetched.requests],
    }


def _build_info(env: BuildEnv, result: SandboxResult, artifacts: Sequence[ExtractedFile],
                out: Path) -> BuildInfo:
    outputs = tuple(OutputInfo(path=f.path, sha256=f.sha256, size=f.size) for f in artifacts)
    return BuildInfo(name=env.name, variations=_settings(env), exit_code=result.exit_code,
                     timed_out=result.timed_out, duration_s=round(result.duration_s, 3),
                     outputs=outputs, log=str(result.log_path.relative_to(out)),
                     log_tail=_log_tail(result.log_path))


def _explain_all(run: _Run, options: CheckOptions, found: list[Mismatch], out: Path,
                 progress: Progress) -> Iterator[DifferenceInfo]:
    image: images.ToolchainImage | None = None
    for index, mismatch in enumerate(found):
        info = None
        if options.diffoscope and mismatch.a is not None and mismatch.b is not None:
            if image is None:
                progress.step("explaining differences with diffoscope")
                image = images.ensure_image(run.client, DIFFOSCOPE_IMAGE, progress=progress,
                                            ca_cert=options.ca_cert)
            progress.detail(f"diffoscope {mismatch.path}")
            dest = out / "diffoscope" / mismatch.path.replace("/", "_")
            info = explain(run.sandbox, image=image.image_id, mismatch=mismatch,
                           a_dir=out / "a" / "artifacts", b_dir=out / "b" / "artifacts",
                           dest=dest, root=out, limits=options.diffoscope_limits,
                           role=f"diffoscope-{index}")
        yield DifferenceInfo(path=mismatch.path,
                             sha256_a=mismatch.a.sha256 if mismatch.a else None,
                             sha256_b=mismatch.b.sha256 if mismatch.b else None,
                             diffoscope=info)
