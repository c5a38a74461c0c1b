"""The explanation phase: extra builds that find which of B's variations made a difference.

:class:`~reprobuild.explain.search.GroupSearch` proposes each round; this runs the round's
builds concurrently in the same sandbox as A and B (same image, same fetched dependencies
streamed in, same limits and trap), tells the search which of A-versus-B's symptoms each
build shows, and keeps within the budget. Every build's artifacts and log stay under
``out/<name>/`` as evidence; Docker objects belong to the check's :class:`Session`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from reprobuild import images
from reprobuild.evidence import EgressAttempt
from reprobuild.explain import findings as assemble
from reprobuild.explain.leaves import Leaf, read_leaves
from reprobuild.explain.search import (
    Attribution,
    AttributionKind,
    Budget,
    GroupSearch,
    Test,
    bound,
)
from reprobuild.explain.symptoms import (
    Aspect,
    Observation,
    Symptom,
    contents,
    observe,
    same_bytes,
)
from reprobuild.pipeline import plan
from reprobuild.pipeline.phases import Session
from reprobuild.recipes import Recipe
from reprobuild.report import DifferenceInfo, ExplainBuildInfo, ExplanationInfo, FindingInfo
from reprobuild.sandbox.spec import SandboxLimits, SandboxResult
from reprobuild.source import SourceTree
from reprobuild.variations import BuildEnv, in_order, markers

__all__ = ["BuildInputs", "Explained", "explain_pair", "skipped"]


@dataclass(frozen=True)
class BuildInputs:
    """What every build of the check is made of (the explanation's builds reuse it all)."""

    tree: SourceTree
    recipe: Recipe
    toolchain: images.ToolchainImage
    limits: SandboxLimits
    trap: bool
    deps: Path | None
    """The fetched dependencies' archive, streamed into each build after the source."""
    deps_env: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Explained:
    """The explanation: the section of the report, each difference's findings, and what
    the extra builds left (network attempts, warnings)."""

    info: ExplanationInfo
    findings: Mapping[str, tuple[FindingInfo, ...]]
    egress: tuple[EgressAttempt, ...] = ()
    warnings: tuple[str, ...] = ()


def _observe_all(paths: Sequence[str], a_dir: Path, x_dir: Path, *,
                 same: Mapping[str, bool] | None = None) -> dict[Symptom, Observation]:
    """How each artifact of ``x_dir`` differs from A's; ``same`` (by the digests the copy
    computed) skips reading the ones whose bytes are A's."""
    found: dict[Symptom, Observation] = {}
    for path in paths:
        if same is not None and same.get(path):
            continue
        a_path = a_dir / path
        if not a_path.is_file():  # only the other build made it
            if (x_dir / path).is_file():
                found[Symptom(path, "", Aspect.PRESENCE)] = Observation("absent", "present")
            continue
        found.update(observe(path, a_path, x_dir / path if (x_dir / path).is_file() else None))
    return found


def _bytes(symptoms: Sequence[Symptom], where: Path) -> dict[Symptom, bytes]:
    """The changed members' bytes in one build's artifacts."""
    wanted: dict[str, set[str]] = {}
    for symptom in symptoms:
        if symptom.aspect in (Aspect.CONTENT, Aspect.BYTES):
            wanted.setdefault(symptom.artifact, set()).add(symptom.member)
    found: dict[Symptom, bytes] = {}
    for artifact, members in wanted.items():
        data = contents(where / artifact, members)
        for symptom in symptoms:
            if symptom.artifact == artifact and symptom.member in data:
                found[symptom] = data[symptom.member]
    return found


def skipped(reason: str, budget: Budget, limit: int = 0) -> Explained:
    """An explanation that did not run, and why."""
    return Explained(ExplanationInfo(status="skipped", reason=reason, budget=str(budget),
                                     bound=limit, builds=(), seconds=0.0, causes=()), {})


def explain_pair(session: Session, inputs: BuildInputs, *, env_b: BuildEnv,
                 differences: Sequence[DifferenceInfo], out: Path, budget: Budget,
                 build_seconds: float, host_cpus: int,
                 ecosystem_hints: Mapping[str, str] | None = None) -> Explained:
    """Find the culprits of A-versus-B's differences with extra builds and classify them."""
    started = time.monotonic()
    paths = [d.path for d in differences]
    a_digests = {d.path: d.sha256_a for d in differences}
    a_dir, b_dir = out / "a" / "artifacts", out / "b" / "artifacts"
    observed = _observe_all(paths, a_dir, b_dir)
    leaves: dict[str, list[Leaf]] = {
        d.path: read_leaves(out / d.diffoscope.json)
        for d in differences if d.diffoscope is not None and d.diffoscope.json}
    changed = sorted(observed)
    sides = assemble.Sides(a=_bytes(changed, a_dir), b=_bytes(changed, b_dir), control={})
    varied = env_b.varied
    if not varied:
        # A and B had identical environments: every difference is the time of the build
        # or nondeterminism, and B is already the control build.
        outcome = {s: Attribution(AttributionKind.UNSTABLE, (), ("b",)) for s in observed}
        found = assemble.findings(outcome, observed, replace(sides, control=sides.b),
                                  leaves=leaves, ecosystem_hints=ecosystem_hints)
        return Explained(ExplanationInfo(
            status="complete", reason="no variations: build B was A's environment again",
            budget=str(budget), bound=0, builds=(),
            seconds=round(time.monotonic() - started, 3),
            causes=assemble.causes_of(f for per in found.values() for f in per)), found)
    suspected = assemble.suspects(observed, sides, markers(env_b),
                                  [x for found in leaves.values() for x in found])
    search: GroupSearch[Symptom] = GroupSearch(varied, observed, suspected)
    limit = bound(len(varied), len(suspected), len(suspected) or 1)
    concurrency = max(1, min(host_cpus, 4))
    results: dict[str, tuple[Test, SandboxResult]] = {}
    egress: list[EgressAttempt] = []
    warnings: list[str] = []
    partial: str | None = None
    spent = 0
    progress = session.progress
    progress.step(f"explaining: which of {len(varied)} variation(s) made the difference")
    while tests := search.next_round():
        runnable = _affordable(tests, budget, spent=spent, elapsed=time.monotonic() - started,
                               build_seconds=build_seconds, concurrency=concurrency)
        if len(runnable) < len(tests):
            partial = f"the budget ({budget}) ran out before the search ended"
            if not runnable and not results:
                return skipped(f"one round of {len(tests)} build(s) of ~{build_seconds:.0f}s "
                                f"would not fit the budget ({budget})", budget, limit)
        for test in tests[len(runnable):]:
            search.record(test, None)
        for start in range(0, len(runnable), concurrency):
            wave = runnable[start:start + concurrency]
            for test in wave:
                shown = ", ".join(v.value for v in in_order(test.group)) or "none (control)"
                progress.detail(f"{test.name}: varies {shown}")
            envs = [replace(plan.build_pair(t.group, inputs.recipe, host_cpus=host_cpus)[1],
                            name=t.name)
                    for t in wave]
            specs = [plan.build_spec(env, tree=inputs.tree, recipe=inputs.recipe,
                                     toolchain=inputs.toolchain, limits=inputs.limits,
                                     trap=inputs.trap, deps=inputs.deps,
                                     deps_env=inputs.deps_env) for env in envs]
            for test, result in zip(wave, session.run_builds(specs, out), strict=True):
                spent += 1
                egress.extend(result.egress)
                warnings.extend(plan.build_warnings(result))
                ok = not result.timed_out and result.exit_code == 0
                results[test.name] = (test, result)
                if not ok:
                    partial = partial or f"explanation build {test.name} failed"
                    search.record(test, None)
                    continue
                digests = {f.path: f.sha256 for f in result.outputs}
                seen = _observe_all(paths, a_dir, result.output_dir,
                                    same={p: digests.get(p) == a_digests.get(p) for p in paths})
                search.record(test, (s for s in seen if s in observed))
    outcome = search.outcome()
    culprits = {v for a in outcome.values() for v in a.culprits
                if a.kind in (AttributionKind.VARIATION, AttributionKind.TOGETHER)}
    limit = bound(len(varied), len(suspected), len(culprits))
    control = next((t for t in search.tests if t.is_control and t.name in results), None)
    if control is not None:
        unstable = [s for s, a in outcome.items() if a.kind is AttributionKind.UNSTABLE]
        sides = replace(sides, control=_bytes(unstable, results[control.name][1].output_dir))
    found = assemble.findings(outcome, observed, sides, leaves=leaves,
                              ecosystem_hints=ecosystem_hints)
    builds = tuple(_build_info(test, result, a_dir, paths, out)
                   for test, result in results.values())
    info = ExplanationInfo(
        status="partial" if partial else "complete", reason=partial, budget=str(budget),
        bound=limit, builds=builds, seconds=round(time.monotonic() - started, 3),
        causes=assemble.causes_of(f for per in found.values() for f in per))
    return Explained(info, found, tuple(egress), tuple(warnings))


def _affordable(tests: Sequence[Test], budget: Budget, *, spent: int, elapsed: float,
                build_seconds: float, concurrency: int) -> list[Test]:
    """The leading tests of a round that fit what is left of the budget."""
    if budget.builds is not None:
        return list(tests[:max(0, budget.builds - spent)])
    assert budget.seconds is not None
    left = budget.seconds - elapsed
    waves = max(0, math.floor(left / max(build_seconds, 1.0)))
    return list(tests[:waves * concurrency])


def _build_info(test: Test, result: SandboxResult, a_dir: Path, paths: Sequence[str],
                out: Path) -> ExplainBuildInfo:
    differs = tuple(p for p in paths if _differs(a_dir / p, result.output_dir / p))
    return ExplainBuildInfo(
        name=test.name, round=test.round,
        variations=tuple(v.value for v in in_order(test.group)),
        exit_code=result.exit_code, timed_out=result.timed_out,
        duration_s=round(result.duration_s, 3), log=str(result.log_path.relative_to(out)),
        differs=differs)


def _differs(a: Path, x: Path) -> bool:
    if a.is_file() != x.is_file():
        return True
    return a.is_file() and not same_bytes(a, x)
