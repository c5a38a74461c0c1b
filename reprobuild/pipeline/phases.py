"""The phases of a run that use Docker: the session that owns its objects, the fetch,
the builds, the comparison.

``check`` runs them with two builds; ``verify`` (one rebuild against a published artifact)
and batch runs call the same functions. Each phase is a function of what the previous ones
returned (the pure ones are in :mod:`.plan`), raises :mod:`reprobuild.errors` exceptions,
reports progress to the observer and never prints. Docker objects belong to a
:class:`Session` (one run id, one cancel event), which removes all of them however the run
ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import docker.errors

from reprobuild import images
from reprobuild.archive import ExtractedFile
from reprobuild.compare import (
    DiffoscopeBudget,
    DiffoscopeLimits,
    Mismatch,
    explain,
    mismatches,
    output_name,
)
from reprobuild.ecosystems.interface import NO_FETCH
from reprobuild.errors import Interrupted, ReprobuildError
from reprobuild.evidence import EgressAttempt
from reprobuild.fetch import FetchedDeps, fetch, plan_fetch
from reprobuild.images import build as image_build
from reprobuild.pipeline.cache import tree_bytes
from reprobuild.pipeline.plan import RunOptions, Sides
from reprobuild.progress import Progress
from reprobuild.recipes import Recipe
from reprobuild.report import DifferenceInfo, Report, Verdict
from reprobuild.sandbox.container import Sandbox
from reprobuild.sandbox.engine import (
    RunLabels,
    connect,
    engine_warnings,
    remove_run,
    sweep_stale,
)
from reprobuild.sandbox.spec import SandboxResult, SandboxSpec
from reprobuild.source import SourceTree

__all__ = [
    "DIFFOSCOPE_IMAGE",
    "EvidenceGuard",
    "Session",
    "compare_pair",
    "connect",
    "explain_all",
    "fetch_phase",
    "housekeeping",
    "in_engine",
]

DIFFOSCOPE_IMAGE = "diffoscope"


# --------------------------------------------------------------------------- session


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_RUNS_END_S = 30.0
_INTERRUPTED = "interrupted; removed this run's containers and volumes"


class _StopSignals:
    """Ctrl-C, SIGTERM and SIGHUP while a session owns Docker objects.

    The first one stops the run (``KeyboardInterrupt``, as Ctrl-C does; SIGHUP would
    otherwise kill the process with everything left on the engine); once the cleanup has
    begun every further one is only noted, so the cleanup runs to its end (a second
    Ctrl-C used to cut it short and leave the output volume behind). Handlers can only be
    set on the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.noted: list[int] = []
        self.shielded = False
        self.raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                previous = signal.signal(signum, self._handle)
                self._previous[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.noted.append(signum)
        if not self.shielded:
            self.shielded = self.raised = True
            raise KeyboardInterrupt

    def shield(self) -> None:
        """From now on (the cleanup), signals are noted, never raised."""
        self.shielded = True

    def __exit__(self, *_exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


class Session:
    """One run's Docker objects: labels, cancellation, the sandbox; removes them all."""

    def __init__(self, client: docker.DockerClient, progress: Progress) -> None:
        self.client = client
        self.progress = progress
        self.labels = RunLabels.new()
        self.cancel = threading.Event()
        self.sandbox = Sandbox(client, self.labels, self.cancel)

    def attempts_seen(self) -> tuple[EgressAttempt, ...]:
        """Every network attempt the trap saw in this run's builds so far, however they
        ended: evidence that must reach the report whatever failed after it."""
        return self.sandbox.attempts_seen()

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Remove this run's containers and volumes however the block ends, also when
        the user sends Ctrl-C (or SIGTERM, SIGHUP) again while they are being removed.

        An interruption raises :class:`Interrupted` carrying the attempts seen by then.
        """
        signals = _StopSignals()
        with signals:
            try:
                yield
            except KeyboardInterrupt as exc:
                signals.shield()
                self.cancel.set()
                raise Interrupted(_INTERRUPTED, egress=self.attempts_seen()) from exc
            except Interrupted as exc:
                signals.shield()
                self.cancel.set()
                if not exc.egress:
                    exc.egress = self.attempts_seen()
                raise
            finally:
                signals.shield()
                self.cancel.set()
                remove_run(self.client, self.labels.run_id)
                # Cancelled runs end within a poll interval, removing what they created
                # (also anything created after the sweep above); none outlives the session.
                if not self.sandbox.wait_idle(_RUNS_END_S):
                    remove_run(self.client, self.labels.run_id)
            if signals.noted and not signals.raised:
                # A signal during the final cleanup of a run that was ending anyway.
                raise Interrupted(_INTERRUPTED, egress=self.attempts_seen())

    def run_builds(self, specs: Sequence[SandboxSpec], out: Path) -> list[SandboxResult]:
        """Run builds concurrently (``out/<name>/``); Ctrl-C cancels them all within a
        poll interval.

        A build that fails (refused outputs, an agent gone) does not cut the others short:
        each one's attempts reach the ledger (:meth:`attempts_seen`) before the first
        error, in the order of ``specs``, is raised.
        """
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
                    if fut.exception() is None:
                        result = fut.result()
                        self.progress.detail(f"{result.role} finished in "
                                             f"{result.duration_s:.1f}s (exit {result.exit_code})")
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


class EvidenceGuard:
    """Around a run's ``session.owned()`` block: a failure after the trap saw network
    attempts (refused outputs, a broken sandbox, diffoscope) is kept in ``failure`` instead
    of ending the run, so the report can still say egress. An interrupt passes through (it
    carries the attempts itself)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.failure: ReprobuildError | None = None

    def __enter__(self) -> EvidenceGuard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> bool:
        if isinstance(exc, ReprobuildError) and not isinstance(exc, Interrupted) \
                and self.session.attempts_seen():
            self.failure = exc
            return True
        return False


def in_engine(progress: Progress, out_dir: Path | None,
              work: Callable[[docker.DockerClient, Path], Report]) -> Report:
    """Connect, run ``work`` with a results directory, and tidy up after it.

    Housekeeping (leftovers of killed runs, engine warnings) runs beside the work: it
    touches only other runs' objects, and the report waits for its warnings. Without
    ``out_dir`` a temporary directory is used; a reproducible run leaves nothing behind,
    any other verdict keeps its evidence there and the report says where.
    """
    progress.step("connecting to Docker")
    client = connect()
    pool = concurrent.futures.ThreadPoolExecutor(1, "reprobuild-housekeeping")
    engine_notes = pool.submit(housekeeping, client)
    pool.shutdown(wait=False)
    out = out_dir or Path(tempfile.mkdtemp(prefix="reprobuild-"))
    try:
        report = work(client, out)
    except BaseException:
        if out_dir is None:
            with _StopSignals() as signals:  # a further Ctrl-C must not leave it half gone
                signals.shield()
                shutil.rmtree(out, ignore_errors=True)
        raise
    report = replace(report, warnings=(*engine_notes.result(), *report.warnings))
    if out_dir is None and report.verdict is Verdict.REPRODUCIBLE:
        shutil.rmtree(out, ignore_errors=True)
        report = replace(report, out_dir=None)
    return report


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
                timings: dict[str, float], out: Path, pins: tuple[str, ...] = (),
                cutoff: int | None = None) -> FetchedDeps | None:
    """Fetch the recipe's dependencies (None when it needs none); ``pins`` and ``cutoff``
    impose exact versions and a resolution time (a release's conditions). The fetch tool's
    output (its tail) is kept as ``out/fetch.log`` when the fetch ran."""
    if recipe.fetch_strategy == NO_FETCH:
        return None
    t = time.monotonic()
    session.progress.step(f"fetching dependencies ({recipe.fetch_strategy})")
    plan = plan_fetch(tree, strategy=recipe.fetch_strategy, origin=recipe.origin,
                      lock=recipe.fetch_lock, toolchain=toolchain, pins=pins, cutoff=cutoff)
    fetched = fetch(session.client, session.labels, plan=plan, toolchain=toolchain,
                    ca_cert=ca_cert, cache_dir=images.cache_root(),
                    progress=session.progress, cancel=session.cancel)
    timings["fetch_s"] = round(time.monotonic() - t, 3)
    if fetched.log:
        (out / "fetch.log").write_text(fetched.log, encoding="utf-8", errors="replace")
    return fetched


# --------------------------------------------------------------------------- compare


def compare_pair(session: Session, artifacts: Sequence[Sequence[ExtractedFile]], *,
                 out: Path, options: RunOptions) -> tuple[DifferenceInfo, ...]:
    """Builds A and B (``out/a``, ``out/b``) compared by hash, each difference explained."""
    found = mismatches(*artifacts)
    return tuple(explain_all(session, found, sides=Sides(out / "a" / "artifacts",
                                                         out / "b" / "artifacts"),
                             out=out, diffoscope=options.diffoscope,
                             limits=options.diffoscope_limits, ca_cert=options.ca_cert))


_BUDGETS: weakref.WeakKeyDictionary[Session, DiffoscopeBudget] = weakref.WeakKeyDictionary()
"""Each session's one diffoscope budget: verify compares its files one call at a time, and
they all draw from the same account."""


def explain_all(session: Session, found: Sequence[Mismatch], *, sides: Sides, out: Path,
                diffoscope: bool, limits: DiffoscopeLimits,
                ca_cert: Path | None, later: int = 0) -> Iterator[DifferenceInfo]:
    """Each mismatch, explained by sandboxed diffoscope when both sides have it, within the
    session's total budget (time and report bytes, shared fairly); what it could not pay
    for is named as not compared. ``later`` counts the comparisons a caller will still ask
    for after these (verify's one file at a time), so they get their share too."""
    image: images.ToolchainImage | None = None
    budget = _BUDGETS.setdefault(session, DiffoscopeBudget(limits))
    left = sum(1 for m in found if m.a is not None and m.b is not None) + max(0, later)
    for index, mismatch in enumerate(found):
        info = None
        if diffoscope and mismatch.a is not None and mismatch.b is not None:
            share = budget.share(left)
            left -= 1
            if share is None:
                session.progress.detail(f"diffoscope {mismatch.path}: budget spent")
                info = budget.not_compared()
            else:
                if image is None:
                    session.progress.step("explaining differences with diffoscope")
                    image = image_build.ensure_image(session.client, DIFFOSCOPE_IMAGE,
                                                     progress=session.progress,
                                                     ca_cert=ca_cert)
                session.progress.detail(f"diffoscope {mismatch.path}")
                dest = out / "diffoscope" / output_name(mismatch.path)
                started = time.monotonic()
                info = explain(session.sandbox, image=image.image_id, mismatch=mismatch,
                               a_dir=sides.a_dir, b_dir=sides.b_dir, dest=dest, root=out,
                               limits=share, role=f"diffoscope-{index}")
                budget.spend(time.monotonic() - started, tree_bytes(dest))
        yield DifferenceInfo(path=mismatch.path,
                             sha256_a=mismatch.a.sha256 if mismatch.a else None,
                             sha256_b=mismatch.b.sha256 if mismatch.b else None,
                             diffoscope=info)
