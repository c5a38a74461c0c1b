"""The fetch phase: download exactly what a lockfile or the recipe names, before the offline build.

Builds run offline in the egress trap, so whatever they need from a registry is fetched
first, here, and handed to both builds as one uncompressed tar (unpacked at ``/deps``).
Three rules hold throughout:

* **Nothing of the project runs.** Only manifests and lockfiles reach the fetch container
  (never the source); the ecosystem's command downloads without running package code.
* **Network only to an allow-list, and every request logged** (:mod:`.runner`): the fetch
  container has no network; a relay hands its requests to a proxy that allows the
  ecosystem's registries only and logs every request as a
  :class:`~reprobuild.evidence.FetchRequest`.
* **Every file is verified.** Hashes come from the lock; the package tool refuses
  mismatches and the ecosystem checks again before caching. A mismatch raises
  :class:`~reprobuild.errors.DependencyIntegrityError` naming the package, the expected
  and the actual hash.

What to fetch and how is the ecosystem's (:mod:`reprobuild.ecosystems`, looked up by the
recipe's ``[fetch].strategy``); this package runs it and caches the result
(:mod:`.cache`). ``key`` is the sha256 of every input (strategy and its version,
toolchain image id, allow-list, planned files, resolution cutoff): same key, same archive;
a hit starts no container and makes no request.

Private CAs: ``ca_cert`` (a PEM bundle, the CLI's ``--ca-cert``) is handed to the fetch
container only. It is taken only when given: there is no fallback to the host's bundle,
because the container's tools must trust exactly what the user chose. The proxy does not
terminate TLS, so it needs no CA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from reprobuild import ecosystems
from reprobuild.ecosystems.interface import NO_FETCH, Ecosystem, FetchPlan, FetchSettings
from reprobuild.errors import InputError
from reprobuild.evidence import FetchRequest
from reprobuild.fetch.cache import DepsCache
from reprobuild.fetch.runner import FetchLimits, Outcome, Runner
from reprobuild.images import ToolchainImage
from reprobuild.progress import Progress
from reprobuild.sandbox.engine import RunLabels
from reprobuild.source import SourceTree

__all__ = [
    "STRATEGY_VERSION",
    "FetchLimits",
    "FetchedDeps",
    "cache_key",
    "fetch",
    "plan_fetch",
    "read_ca_cert",
    "replay_lock",
]

STRATEGY_VERSION = "1"
"""Bump when what a strategy downloads or how the archive is laid out changes."""

_TAIL_LINES = 200
MiB = 1024 * 1024


@dataclass(frozen=True)
class FetchedDeps:
    """The result of :func:`fetch`; ``archive`` is what the builds unpack at ``/deps``."""

    strategy: str
    key: str
    archive: Path | None
    env: tuple[tuple[str, str], ...]
    pins: tuple[tuple[str, str], ...]
    requests: tuple[FetchRequest, ...]
    cache_hit: bool
    seconds: float
    failure: str | None
    notes: tuple[str, ...] = ()
    hashes: tuple[tuple[str, str], ...] = field(default=())
    """``name==version`` -> ``sha256:<hex>`` of the file fetched (Python; for replay)."""
    log: str = ""
    """The last lines the ecosystem's package tool printed; empty on a cache hit."""
    hint: str | None = None
    """What the ecosystem says a failed fetch's log means (untrusted certificates)."""


def plan_fetch(tree: SourceTree, *, strategy: str, origin: str, lock: str | None = None,
               toolchain: ToolchainImage | None = None, now: float | None = None,
               pins: tuple[str, ...] = (), cutoff: int | None = None) -> FetchPlan:
    """The ecosystem's plan for this tree (pure; ``none`` plans nothing)."""
    if strategy == NO_FETCH:
        return FetchPlan(strategy=NO_FETCH, project_dir=tree.subdir)
    ecosystem = ecosystems.get(strategy, origin=origin)
    settings = FetchSettings(origin=origin, lock=lock, now=now, pins=pins, cutoff=cutoff)
    return ecosystem.plan_fetch(tree, settings, toolchain)


def key_inputs(plan: FetchPlan, image_id: str) -> dict[str, Any]:
    """Everything the cache key covers, as a JSON-able dict."""
    allow = ecosystems.get(plan.strategy).allow_list if plan.strategy != NO_FETCH else ()
    return {
        "reprobuild-fetch": STRATEGY_VERSION,
        "strategy": plan.strategy,
        "image": image_id,
        "allow": [f"{h}:{p}" for h, p in allow],
        "files": [[path, hashlib.sha256(data).hexdigest()] for path, data in plan.files],
        "cutoff": plan.cutoff,
    }


def cache_key(plan: FetchPlan, image_id: str) -> str:
    """The sha256 over every input of a fetch: same key, same archive."""
    text = json.dumps(key_inputs(plan, image_id), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def replay_lock(deps: FetchedDeps) -> str:
    """A hashed requirements file pinning what a fetch got (``[fetch] lock`` input)."""
    lines = [f"{spec} --hash={digest}" for spec, digest in deps.hashes]
    return "".join(line + "\n" for line in lines)


def read_ca_cert(path: Path | None) -> bytes | None:
    """The PEM bundle handed to the fetch container, checked before anything starts."""
    if path is None:
        return None
    try:
        ca = path.read_bytes()
    except OSError as exc:
        raise InputError(f"--ca-cert {path}: {exc.strerror or exc}",
                         "pass a readable PEM bundle") from exc
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        raise InputError(f"--ca-cert {path} holds no PEM certificate",
                         "pass a PEM bundle (-----BEGIN CERTIFICATE-----)")
    return ca


def _blocked(requests_: Iterable[FetchRequest]) -> list[str]:
    return sorted({f"{r.host}:{r.port}" for r in requests_ if not r.allowed})


def fetch(client: docker.DockerClient, labels: RunLabels, *, plan: FetchPlan,
          toolchain: ToolchainImage, ca_cert: Path | None, cache_dir: Path,
          progress: Progress, cancel: threading.Event,
          limits: FetchLimits | None = None) -> FetchedDeps:
    """Fetch a plan's dependencies into the cache (or find them there).

    Returns with ``failure`` set when the tool failed or anything off the allow-list was
    requested (those requests are in ``requests`` with ``allowed=False``); raises
    :class:`~reprobuild.errors.DependencyIntegrityError` on a hash mismatch,
    :class:`~reprobuild.errors.EnvironmentFailure` for Docker problems and
    :class:`~reprobuild.errors.Interrupted` when ``cancel`` is set. Everything it creates
    is removed before it returns.
    """
    started = time.monotonic()
    if plan.strategy == NO_FETCH:
        return FetchedDeps(strategy=NO_FETCH, key="", archive=None, env=(), pins=(),
                           requests=(), cache_hit=False, seconds=0.0, failure=None)
    ecosystem = ecosystems.get(plan.strategy)
    key = cache_key(plan, toolchain.image_id)
    cache = DepsCache(cache_dir)
    ca = read_ca_cert(ca_cert)
    progress.detail(f"{plan.strategy}: pins from {plan.pin_source}")
    with cache.locked(key):
        meta = cache.load(key)
        if meta is not None:
            progress.detail(f"dependency cache hit {key[:16]}")
            return _result(plan, key, cache.tar_path(key), meta, (), True, started)
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
        try:
            runner = Runner(client, labels, cancel, progress, limits or FetchLimits())
            outcome = runner.run(ecosystem, plan, toolchain, ca, scratch / "deps")
            blocked = _blocked(outcome.requests)
            if outcome.exit_code != 0 or outcome.timed_out:
                error = ecosystem.diagnose(plan, outcome.log)
                if error is not None and not blocked:
                    raise error
            if blocked or outcome.exit_code != 0 or outcome.timed_out:
                return _failed(ecosystem, plan, key, outcome, blocked, started)
            return _store(ecosystem, plan, key, cache, outcome, started, progress)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _key_line(ecosystem: Ecosystem, log: str) -> str:
    """The line of a failed tool's output that says what went wrong (else its last)."""
    found = ecosystem.failure_line(log)
    if found is not None:
        return found
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _tail(log: str) -> str:
    return "\n".join(log.splitlines()[-_TAIL_LINES:])


def _failed(ecosystem: Ecosystem, plan: FetchPlan, key: str, outcome: Outcome,
            blocked: list[str], started: float) -> FetchedDeps:
    allow = ", ".join(f"{h}:{p}" for h, p in ecosystem.allow_list)
    if blocked:
        failure = (f"the fetch tried to reach {', '.join(blocked)}, not on the allow-list "
                   f"({allow}); refused without connecting")
    elif outcome.timed_out:
        failure = "the fetch timed out"
    else:
        key_line = _key_line(ecosystem, outcome.log)
        failure = f"the fetch failed (exit {outcome.exit_code}): {key_line}"
    return FetchedDeps(strategy=plan.strategy, key=key, archive=None,
                       env=ecosystem.build_env(plan),
                       pins=tuple((p.name, p.version) for p in plan.pins),
                       requests=outcome.requests, cache_hit=False,
                       seconds=round(time.monotonic() - started, 3), failure=failure,
                       notes=plan.notes, log=_tail(outcome.log),
                       hint=None if blocked else ecosystem.failure_hint(outcome.log))


def _store(ecosystem: Ecosystem, plan: FetchPlan, key: str, cache: DepsCache,
           outcome: Outcome, started: float, progress: Progress) -> FetchedDeps:
    verified = ecosystem.verify(plan, outcome.files, outcome.staging)
    notes = [*plan.notes, *verified.notes]
    total = sum(m.size for m in verified.files)
    progress.detail(f"fetched {len(verified.files)} files ({total / MiB:.1f} MiB); "
                    f"caching {key[:16]}")
    meta = cache.store(key, outcome.staging, verified.files, {
        "strategy": plan.strategy, "pin_source": plan.pin_source,
        "cutoff": plan.cutoff, "requirements": list(plan.requirements),
        "env": [list(e) for e in ecosystem.build_env(plan)],
        "pins": [list(p) for p in verified.pins], "hashes": [list(h) for h in verified.hashes],
        "notes": notes, "verify_notes": list(verified.notes), "created": round(time.time(), 3),
        "requests": [dataclasses.asdict(r) for r in outcome.requests]},
        executables=verified.executables)
    result = _result(plan, key, cache.tar_path(key), meta, outcome.requests, False, started)
    return dataclasses.replace(result, log=_tail(outcome.log))


def _result(plan: FetchPlan, key: str, archive: Path, meta: Mapping[str, Any],
            requests_: tuple[FetchRequest, ...], hit: bool, started: float) -> FetchedDeps:
    # The environment follows this plan, not the one that filled the cache: two members of
    # one workspace share the fetch but not their project directory.
    return FetchedDeps(
        strategy=plan.strategy, key=key, archive=archive,
        env=ecosystems.get(plan.strategy).build_env(plan),
        pins=tuple((str(n), str(v)) for n, v in meta.get("pins", [])),
        requests=requests_, cache_hit=hit, seconds=round(time.monotonic() - started, 3),
        # Planning notes follow this plan (a goreleaser file is not a fetch input); what the
        # check of the fetched files found is the cache's.
        failure=None, notes=tuple(dict.fromkeys([*plan.notes, *map(str, meta.get(
            "verify_notes", meta.get("notes", [])))])),
        hashes=tuple((str(n), str(h)) for n, h in meta.get("hashes", [])))
