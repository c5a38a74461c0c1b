"""``reprobuild check``: fetch, plan, build twice, compare, report.

The phases (:mod:`reprobuild.pipeline.phases`) in the order a check runs them. This
never prints and never exits: progress goes to the observer, the result is a
:class:`~reprobuild.report.Report`, and fatal problems are :mod:`reprobuild.errors`
exceptions. Every Docker object it creates is labelled with the run id and removed in
``finally`` (also on Ctrl-C).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from reprobuild import ecosystems, images
from reprobuild.ecosystems.interface import NO_FETCH
from reprobuild.errors import Interrupted, ReprobuildError
from reprobuild.evidence import EgressAttempt, blocked_attempts, mark_one_sided, summarize
from reprobuild.explain.search import DEFAULT_BUDGET, Budget
from reprobuild.pipeline import plan
from reprobuild.progress import Progress, SilentProgress
from reprobuild.recipes import Recipe
from reprobuild.report import (
    BuildInfo,
    DifferenceInfo,
    Report,
    decide_verdict,
)
from reprobuild.sandbox import agent
from reprobuild.sandbox.spec import SandboxLimits, SandboxResult
from reprobuild.source import SourceTree
from reprobuild.variations import BuildEnv, unavailable

if TYPE_CHECKING:
    import docker

    from reprobuild.fetch import FetchedDeps
    from reprobuild.pipeline.explain import BuildInputs, Explained
    from reprobuild.pipeline.phases import Session

__all__ = ["DEFAULT_TIMEOUT_S", "CheckOptions", "run_check"]

DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True, kw_only=True)
class CheckOptions(plan.RunOptions):
    """What ``check`` takes: the options every building command has, and the explanation's."""

    explain: bool | None = None
    """Find the culprit variations of a difference with extra builds; None: when the pair
    is unreproducible and the budget allows one round."""
    explain_budget: Budget = DEFAULT_BUDGET


def run_check(options: CheckOptions, progress: Progress | None = None) -> Report:
    """Run one complete check and return its report (never prints, never exits).

    Input is validated (source, ref, subdir, recipe, --out) before Docker is touched, so
    a typo costs nothing and gets exit code 2 even on a machine without an engine.
    """
    progress = progress or SilentProgress()
    timings: dict[str, float] = {}
    started = time.monotonic()
    agent.prepare_in_background()
    progress.step(f"fetching {options.source}")
    tree = plan.acquire_source(options.source, ref=options.ref, subdir=options.subdir)
    timings["source_s"] = round(time.monotonic() - started, 3)
    recipe, reason = plan.select_with_reason(tree, options.recipe)
    if options.out_dir is not None:
        plan.prepare_out_dir(options.out_dir)

    # The Docker side is imported only now: bad input (above) is reported without loading
    # the Docker SDK, a third of the start-up.
    from reprobuild.pipeline import phases  # noqa: PLC0415

    return phases.in_engine(progress, options.out_dir, lambda client, out: _check(
        options, client, progress, tree, recipe, out, timings, started, reason))


def _check(options: CheckOptions, client: docker.DockerClient, progress: Progress,
           tree: SourceTree, recipe: Recipe, out: Path, timings: dict[str, float],
           started: float, reason: str | None = None) -> Report:
    from reprobuild.images import build as image_build  # noqa: PLC0415 - see run_check
    from reprobuild.pipeline import phases  # noqa: PLC0415

    warnings: list[str] = plan.source_warnings(tree)
    t = time.monotonic()
    progress.step(f"toolchain image '{recipe.image}'")
    toolchain = image_build.ensure_image(client, recipe.image, progress=progress,
                                         ca_cert=options.ca_cert)
    timings["image_s"] = round(time.monotonic() - t, 3)

    host_cpus = plan.host_cpus()
    env_a, env_b = plan.build_pair(options.variations, recipe, host_cpus=host_cpus)
    warnings.extend(f"variation '{v.value}' cannot be applied on this machine "
                    f"({host_cpus} CPU)" for v in unavailable(options.variations,
                                                             host_cpus=host_cpus))
    timeout = options.timeout_s or recipe.timeout_s or DEFAULT_TIMEOUT_S
    limits = replace(options.limits, timeout_s=timeout)
    if not options.trap:
        warnings.append("--no-trap: network attempts were blocked but not recorded")

    session = phases.Session(client, progress)
    results: list[SandboxResult] = []
    differences: tuple[DifferenceInfo, ...] = ()
    fetched: FetchedDeps | None = None
    builds: tuple[BuildInfo, ...] = ()
    built = outputs = False
    explained: Explained | None = None
    failure: ReprobuildError | None = None
    try:
        with session.owned():
            fetched = phases.fetch_phase(session, tree=tree, recipe=recipe, toolchain=toolchain,
                                         ca_cert=options.ca_cert, timings=timings, out=out)
            if fetched is None or fetched.failure is None:
                deps = fetched.archive if fetched and fetched.archive else None
                specs = [plan.build_spec(env, tree=tree, recipe=recipe, toolchain=toolchain,
                                           limits=limits, trap=options.trap, deps=deps,
                                           deps_env=fetched.env if fetched else ())
                         for env in (env_a, env_b)]
                t = time.monotonic()
                progress.step("building A and B")
                results = session.run_builds(specs, out)
                timings["builds_s"] = round(time.monotonic() - t, 3)
            artifacts = [plan.wanted_outputs(r.outputs, recipe.outputs) for r in results]
            builds = tuple(plan.build_info(env, res, files, out) for env, res, files in
                           zip((env_a, env_b), results, artifacts, strict=False))
            for result in results:
                warnings.extend(plan.build_warnings(result))
            built = bool(results) and all(not r.timed_out and r.exit_code == 0 for r in results)
            outputs = all(b.outputs for b in builds)
            t = time.monotonic()
            if built and outputs:
                differences = phases.compare_pair(session, artifacts, out=out, options=options)
            timings["compare_s"] = round(time.monotonic() - t, 3)
            explained = None
            if differences and options.explain is not False:
                inputs = _inputs(tree, recipe, toolchain, limits, options.trap, deps,
                                 tuple(fetched.env) if fetched else ())
                explained = _explain(options, session, inputs, env_b=env_b,
                                     differences=differences, out=out, results=results,
                                     host_cpus=host_cpus)
                if explained is not None:
                    timings["explain_s"] = explained.info.seconds
                    warnings.extend(explained.warnings)
                    differences = tuple(replace(d, findings=explained.findings.get(d.path, ()))
                                        for d in differences)
    except Interrupted:
        raise  # carries what the trap saw (Session.owned)
    except ReprobuildError as exc:
        # Evidence outranks whatever failed after it: a build that tried the network and
        # then left refused outputs, or broke the sandbox or diffoscope, is still egress.
        if not session.attempts_seen():
            raise
        failure = exc

    if failure is None:
        egress = tuple(mark_one_sided([r.egress for r in results]))
        if explained is not None:
            egress += explained.egress
    else:
        egress = attempts_by_build(session.attempts_seen())
        warnings.append(f"after its network attempts the run failed: {failure.message}")
    if fetched is not None:
        egress = tuple(blocked_attempts(fetched.requests)) + egress
    verdict = decide_verdict(egress=bool(egress), built=built, outputs=outputs,
                             differences=bool(differences))
    message = None
    if egress:
        message = summarize(egress)
    elif fetched is not None and fetched.failure is not None:
        message = f"fetching dependencies failed: {fetched.failure}"
        if fetched.hint:
            message += f"; {fetched.hint}"
    elif built and not outputs:
        message = f"a build produced no output matching {', '.join(recipe.outputs)}"
    elif not built:
        message = "; ".join(
            f"build {b.name} " + (f"timed out after {timeout:.0f}s" if b.timed_out
                                  else f"exited with {b.exit_code}")
            for b in builds if b.timed_out or b.exit_code != 0)
    timings["total_s"] = round(time.monotonic() - started, 3)
    return Report(
        verdict=verdict,
        source=plan.source_info(tree), recipe=plan.recipe_info(recipe, reason, tree),
        toolchain=plan.toolchain_info(toolchain),
        variations=tuple(v.value for v in env_a.varied),
        builds=builds, differences=differences, timings=timings, out_dir=str(out),
        egress=egress, fetch=plan.fetch_info(fetched),
        warnings=tuple(warnings), message=message,
        explanation=explained.info if explained is not None else None)


def attempts_by_build(seen: Sequence[EgressAttempt]) -> tuple[EgressAttempt, ...]:
    """The attempts of a run that failed after them, as a report lists them: build A's and
    B's (each marked when the other did not make it), then any extra build's (pure)."""
    pair = [[a for a in seen if a.build == name] for name in ("a", "b")]
    return (*mark_one_sided(pair), *(a for a in seen if a.build not in ("a", "b")))


def _inputs(tree: SourceTree, recipe: Recipe, toolchain: images.ToolchainImage,
            limits: SandboxLimits, trap: bool, deps: Path | None,
            deps_env: tuple[tuple[str, str], ...]) -> BuildInputs:
    from reprobuild.pipeline.explain import BuildInputs  # noqa: PLC0415 - see run_check
    return BuildInputs(tree=tree, recipe=recipe, toolchain=toolchain, limits=limits,
                       trap=trap, deps=deps, deps_env=deps_env)


def _explain(options: CheckOptions, session: Session, inputs: BuildInputs, *,
             env_b: BuildEnv, differences: tuple[DifferenceInfo, ...], out: Path,
             results: list[SandboxResult], host_cpus: int) -> Explained | None:
    """The explanation of an unreproducible pair, unless the builds tried the network (that
    is the finding; rebuilding would only repeat the attempts)."""
    from reprobuild.pipeline.explain import explain_pair, skipped  # noqa: PLC0415

    if any(r.egress for r in results):
        reason = "the builds tried to reach the network: that is the finding to act on"
        return skipped(reason, options.explain_budget) if options.explain else None
    hints = {} if inputs.recipe.fetch_strategy == NO_FETCH else dict(
        ecosystems.get(inputs.recipe.fetch_strategy, origin=inputs.recipe.origin).fix_hints)
    return explain_pair(session, inputs, env_b=env_b, differences=differences, out=out,
                        budget=options.explain_budget,
                        build_seconds=max(r.duration_s for r in results),
                        host_cpus=host_cpus, ecosystem_hints=hints)

