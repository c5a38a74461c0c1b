"""``reprobuild verify``: is what users download the file this source builds?

The source is a git repository or directory (as for ``check``), a release (named as its
ecosystem names them; its source archive is the source), or a local source archive. The
published side is what ``--against`` names
(local files, https URLs, releases), else the release the project's own metadata names,
else the source release itself. Registry files are downloaded through the fetch phase
(allow-listed, logged) and checked against the digests the registry publishes.

How the release was built is inferred from its artifacts by the ecosystem (backend and
version, ``SOURCE_DATE_EPOCH``, upload time) and applied to one rebuild (two with
``--twice``, which also compares them as ``check`` does); ``--pin`` and ``--env`` override
per run. Each published file is compared with its rebuilt counterpart by name, content
apart from packaging (:mod:`reprobuild.forensics`), and every changed one is explained by
sandboxed diffoscope. Never prints, never exits.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from reprobuild import ecosystems
from reprobuild.archive import ExtractedFile
from reprobuild.compare import Mismatch
from reprobuild.ecosystems.interface import (
    NO_FETCH,
    PublishedFile,
    ReleaseConditions,
    ReleaseRef,
    Releases,
)
from reprobuild.errors import EnvironmentFailure, InputError, UnsafeArchiveError
from reprobuild.evidence import (
    EgressAttempt,
    FetchRequest,
    blocked_attempts,
    mark_one_sided,
    summarize,
)
from reprobuild.forensics import ArchiveLimits, Comparison, Equivalence, compare, read_files
from reprobuild.hashing import sha256_file
from reprobuild.pipeline import plan
from reprobuild.pipeline.check import attempts_by_build
from reprobuild.progress import Progress, SilentProgress
from reprobuild.recipes import SANDBOX_ENV, Recipe
from reprobuild.report import (
    ArtifactInfo,
    ConditionsInfo,
    DifferenceInfo,
    PublishedInfo,
    Report,
    Verdict,
    VerifyInfo,
)
from reprobuild.sandbox import agent
from reprobuild.sandbox.spec import SandboxResult
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256
from reprobuild.variations import plan_pair

if TYPE_CHECKING:
    import docker

    from reprobuild.fetch import FetchedDeps
    from reprobuild.images import ToolchainImage
    from reprobuild.pipeline.phases import Session

__all__ = ["DEFAULT_TIMEOUT_S", "VerifyOptions", "run_verify"]

DEFAULT_TIMEOUT_S = 1800.0
DOWNLOAD_IMAGE = "python"
"""The image the download job runs in (it needs only ``/usr/bin/python3``)."""
_SOURCE_LIMITS = ArchiveLimits(max_members=20_000, max_member_bytes=64 << 20,
                               max_total_bytes=512 << 20)


@dataclass(frozen=True, kw_only=True)
class VerifyOptions(plan.RunOptions):
    """What ``verify`` takes beyond every building command's options."""

    against: tuple[str, ...] = ()
    env: tuple[tuple[str, str | None], ...] = ()
    """``--env KEY=VALUE`` (``KEY=`` leaves the variable unset)."""
    pins: tuple[str, ...] = ()
    twice: bool = False


@dataclass(frozen=True)
class _Published:
    """One published file on disk, with where it came from."""

    path: Path
    url: str | None
    registry_digest: str | None
    uploaded: int | None
    ecosystem: str | None
    """The registry's ecosystem strategy (whose conditions apply), if from a registry."""
    sha256: str = ""
    source: bool = False
    """The registry lists it as the release's source archive."""


# --------------------------------------------------------------------------- pure parts


def release_of(spec: str) -> tuple[ReleaseRef, Releases, str] | None:
    """The release a spec names and the ecosystem (its releases, its strategy) it is in."""
    for ecosystem in ecosystems.ECOSYSTEMS:
        releases = ecosystem.releases
        if releases is not None:
            ref = releases.parse(spec)
            if ref is not None:
                return ref, releases, ecosystem.strategy
    return None


def _registry_of(strategy: str) -> str | None:
    """The registry whose releases an ecosystem reads (two ecosystems may share one)."""
    releases = ecosystems.get(strategy).releases
    return releases.registry if releases is not None else None


def tree_from_archive(path: Path, *, location: str) -> SourceTree:
    """A source archive's files as a tree, its one top directory stripped (``name-1.0/``,
    ``package/``), refusing links and oversize content (:mod:`reprobuild.forensics`)."""
    files = read_files(path, _SOURCE_LIMITS)
    tops = {PurePosixPath(name).parts[0] for name, _, _ in files}
    strip = len(tops) == 1 and all("/" in name for name, _, _ in files)
    entries = []
    for name, mode, data in files:
        relative = name.split("/", 1)[1] if strip else name
        entries.append(SourceEntry(path=relative, kind=EntryKind.FILE,
                                   mode=0o755 if (mode or 0) & 0o111 else 0o644, data=data))
    if not entries:
        raise InputError(f"{location} holds no files", "is it a source archive?")
    entries.sort(key=lambda e: e.path)
    return SourceTree(location=location, kind=SourceKind.ARCHIVE, ref=None, commit=None,
                      commit_time=None, subdir="", entries=tuple(entries),
                      tree_sha256=compute_tree_sha256(entries))


def apply_env(recipe: Recipe, changes: Sequence[tuple[str, str | None]]) -> Recipe:
    """The recipe with environment variables set (or, for None, removed)."""
    env = dict(recipe.env)
    for key, value in changes:
        if key in SANDBOX_ENV or key.startswith("REPROBUILD_"):
            raise InputError(f"--env {key}: the sandbox sets {key} itself",
                             "both builds see the same sandbox environment")
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return replace(recipe, env=tuple(env.items()))


def merge_conditions(inferred: ReleaseConditions, *, pins: Sequence[str],
                     env: Sequence[tuple[str, str | None]],
                     cutoff: int | None) -> tuple[ReleaseConditions, tuple[str, ...]]:
    """The user's ``--pin``/``--env`` over what was inferred; also says what they overrode."""
    overrides: list[str] = []

    def key(pin: str) -> str:
        return pin.split("==", 1)[0].strip().lower().replace("_", "-")

    user_pins = {key(p): p for p in pins}
    merged_pins = [p for p in inferred.pins if key(p) not in user_pins] + list(pins)
    overrides += [f"--pin {p}" for p in pins]
    merged_env = dict(inferred.env)
    for name, value in env:
        merged_env[name] = value
        overrides.append(f"--env {name}={value if value is not None else ''}")
    return replace(inferred, pins=tuple(merged_pins), env=tuple(merged_env.items()),
                   cutoff=inferred.cutoff if inferred.cutoff is not None else cutoff), \
        tuple(overrides)


def judge(comparisons: Sequence[Comparison], *, missing: int, egress: bool, built: bool,
          twice_differs: bool) -> Verdict:
    """The verdict of a verify run (pure): evidence first, then failures, then content."""
    if egress:
        return Verdict.EGRESS
    if not built:
        return Verdict.BUILD_FAILED
    if missing or twice_differs or any(c.equivalence is Equivalence.CONTENT_DIFFERS
                                       for c in comparisons):
        return Verdict.UNREPRODUCIBLE
    if any(c.equivalence is Equivalence.CONTENT_EQUAL for c in comparisons):
        return Verdict.REPACKED
    return Verdict.REPRODUCIBLE


def headline(artifacts: Sequence[ArtifactInfo]) -> str | None:
    """The loudest finding first: a file only in the published artifact."""
    for item in artifacts:
        if item.only_published:
            names = ", ".join(item.only_published[:3])
            more = f" and {len(item.only_published) - 3} more" if len(item.only_published) > 3 \
                else ""
            return f"published {item.name} contains {names}{more}, which the source does not"
    for item in artifacts:
        if item.equivalence == "not-rebuilt":
            return f"published {item.name} has no rebuilt counterpart"
        if item.changed:
            return (f"published {item.name} differs from the rebuild in "
                    + ", ".join(item.changed[:3])
                    + (f" and {len(item.changed) - 3} more" if len(item.changed) > 3 else ""))
        if item.only_rebuilt:
            return (f"published {item.name} lacks {', '.join(item.only_rebuilt[:3])}, which "
                    "the rebuild has")
        if item.equivalence == Equivalence.CONTENT_DIFFERS.value:
            why = item.packaging[0] if item.packaging else "its bytes differ"
            return f"published {item.name} differs from the rebuild ({why})"
    repacked = [a for a in artifacts if a.equivalence == Equivalence.CONTENT_EQUAL.value]
    if repacked:
        first = repacked[0].packaging[0] if repacked[0].packaging else "see packaging"
        return (f"same content, packed differently: {', '.join(a.name for a in repacked)} "
                f"({first})")
    return None


# --------------------------------------------------------------------------- run


def run_verify(options: VerifyOptions, progress: Progress | None = None) -> Report:
    """Run one verification and return its report (never prints, never exits)."""
    progress = progress or SilentProgress()
    timings: dict[str, float] = {}
    started = time.monotonic()
    agent.prepare_in_background()
    source_release = release_of(options.source)
    local_archive = Path(options.source) if (source_release is None
                                            and Path(options.source).is_file()) else None
    tree: SourceTree | None = None
    if source_release is None and local_archive is None:
        progress.step(f"fetching {options.source}")
        tree = plan.acquire_source(options.source, ref=options.ref, subdir=options.subdir)
    elif options.ref is not None:
        raise InputError("--ref applies to a git source, not a release or archive",
                         "drop --ref, or verify the repository at that ref")
    against = [_parse_against(a) for a in options.against]
    if options.out_dir is not None:
        plan.prepare_out_dir(options.out_dir)
    timings["source_s"] = round(time.monotonic() - started, 3)

    from reprobuild.pipeline import phases  # noqa: PLC0415 - Docker side, once input is valid

    return phases.in_engine(progress, options.out_dir, lambda client, out: _verify(
        options, client, progress, out, timings, started, tree=tree,
        source_release=source_release, local_archive=local_archive, against=against))


_Against = tuple[str, str]
"""(kind, value): ``release`` spec, ``url``, or ``file`` path."""


def _parse_against(text: str) -> _Against:
    if release_of(text) is not None:
        return ("release", text)
    if text.startswith(("https://", "http://")):
        if not urlsplit(text).path.rsplit("/", 1)[-1]:
            raise InputError(f"--against {text}: the URL names no file", "give a file's URL")
        return ("url", text)
    path = Path(text)
    if not path.is_file():
        raise InputError(f"--against {text}: no such file, URL or release",
                         "give a local file, an https:// URL, or a release: "
                         + ecosystems.release_forms())
    return ("file", text)


def _download_release(session: Session, ref: ReleaseRef, releases: Releases,
                      toolchain: ToolchainImage, ca: bytes | None, dest: Path,
                      requests: list[FetchRequest]) -> tuple[tuple[PublishedFile, ...],
                                                       dict[str, Path], str | None]:
    """The release's files via the fetch phase: (listed files, paths, failure)."""
    from reprobuild.fetch.release import RemoteFile, download  # noqa: PLC0415
    from reprobuild.images import cache_root  # noqa: PLC0415

    meta_dir = dest / ".metadata"
    got = download(session.client, session.labels,
                   [RemoteFile(name="metadata.json", url=releases.metadata_url(ref))],
                   toolchain=toolchain, ca=ca, cache_dir=cache_root(), dest=meta_dir,
                   progress=session.progress, cancel=session.cancel)
    requests.extend(got.requests)
    if got.failure is not None and "HTTP 404" in got.failure:
        raise InputError(f"{ref.spec}: the registry has no such release (HTTP 404)",
                         "check the name and version; a version in the project's metadata is "
                         "not always the one published: name it with --against")
    if got.failure is not None:
        return (), {}, f"{ref.spec}: {got.failure}"
    listed = releases.files(ref, got.paths["metadata.json"].read_bytes())
    shutil.rmtree(meta_dir, ignore_errors=True)
    files = download(session.client, session.labels,
                     [RemoteFile(name=f.name, url=f.url, digest=f.digest) for f in listed],
                     toolchain=toolchain, ca=ca, cache_dir=cache_root(), dest=dest,
                     progress=session.progress, cancel=session.cancel)
    requests.extend(files.requests)
    return listed, files.paths, (f"{ref.spec}: {files.failure}" if files.failure else None)


def _verify(options: VerifyOptions, client: docker.DockerClient, progress: Progress,
            out: Path, timings: dict[str, float], started: float, *, tree: SourceTree | None,
            source_release: tuple[ReleaseRef, Releases, str] | None,
            local_archive: Path | None, against: Sequence[_Against]) -> Report:
    from reprobuild.fetch import read_ca_cert  # noqa: PLC0415 - Docker side, see run_verify
    from reprobuild.fetch.release import RemoteFile, download  # noqa: PLC0415
    from reprobuild.images import build as image_build  # noqa: PLC0415
    from reprobuild.images import cache_root  # noqa: PLC0415
    from reprobuild.pipeline import phases  # noqa: PLC0415

    warnings: list[str] = plan.source_warnings(tree) if tree is not None else []
    ca = read_ca_cert(options.ca_cert)
    published_dir = out / "published"
    session = phases.Session(client, progress)
    requests: list[FetchRequest] = []
    published: dict[str, _Published] = {}
    failure: str | None = None
    found_from = "--against"
    release_spec: str | None = None
    source_sha256: str | None = None
    results: list[SandboxResult] = []
    fetched: FetchedDeps | None = None
    comparisons: list[tuple[str, Comparison | None]] = []
    differences: tuple[DifferenceInfo, ...] = ()
    artifacts_info: list[ArtifactInfo] = []
    rebuilt_only: tuple[str, ...] = ()
    conditions = ReleaseConditions()
    overrides: tuple[str, ...] = ()
    recipe: Recipe | None = None
    reason: str | None = None
    toolchain: ToolchainImage | None = None
    built = False
    guard = phases.EvidenceGuard(session)
    with guard, session.owned():
        t = time.monotonic()
        downloader = image_build.ensure_image(client, DOWNLOAD_IMAGE, progress=progress,
                                              ca_cert=options.ca_cert)

        def add_release(ref: ReleaseRef, releases: Releases, strategy: str) -> None:
            nonlocal failure
            progress.step(f"downloading {ref.spec}")
            listed, paths, problem = _download_release(
                session, ref, releases, downloader, ca, published_dir, requests)
            failure = failure or problem
            for item in listed:
                if item.name in paths:
                    published[item.name] = _Published(
                        paths[item.name], item.url, item.digest, item.uploaded, strategy,
                        sha256_file(paths[item.name]), item.source)

        # The source: a release's own source archive, a local archive, or a tree.
        if source_release is not None:
            ref, releases, strategy = source_release
            release_spec = ref.spec
            add_release(ref, releases, strategy)
            if failure is not None:
                raise EnvironmentFailure(failure, "the release could not be downloaded; see "
                                         "the fetch requests with --json")
            archive_name = next((name for name, p in published.items() if p.source), None)
            if archive_name is None:
                raise InputError(f"{ref.spec} publishes no source archive (no sdist or "
                                 "package tarball)", "verify its git repository instead, "
                                 "with --against " + ref.spec)
            archive = published[archive_name].path
            source_sha256 = published[archive_name].sha256
            tree = tree_from_archive(archive, location=ref.spec)
            found_from = "the source release"
        elif local_archive is not None:
            source_sha256 = sha256_file(local_archive)
            tree = tree_from_archive(local_archive, location=str(local_archive.resolve()))
        assert tree is not None
        recipe, reason = plan.select_with_reason(tree, options.recipe)

        # The published side.
        for kind, value in against:
            if kind == "release":
                named = release_of(value)
                assert named is not None
                release_spec = release_spec or named[0].spec
                add_release(*named)
            elif kind == "url":
                name = urlsplit(value).path.rsplit("/", 1)[-1]
                got = download(client, session.labels, [RemoteFile(name=name, url=value)],
                               toolchain=downloader, ca=ca, cache_dir=cache_root(),
                               dest=published_dir, progress=progress, cancel=session.cancel)
                requests.extend(got.requests)
                failure = failure or got.failure
                if name in got.paths:
                    published[name] = _Published(got.paths[name], value, None, None, None,
                                                 sha256_file(got.paths[name]))
            else:
                path = Path(value)
                published_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, published_dir / path.name)
                published[path.name] = _Published(published_dir / path.name, None, None,
                                                   None, None, sha256_file(path))
        if not against and source_release is None:
            owner = (ecosystems.get(recipe.fetch_strategy)
                     if recipe.fetch_strategy != NO_FETCH else None)
            registry = owner.releases if owner is not None else None
            own = registry.of_project(tree) if registry is not None else None
            if own is None or registry is None or owner is None:
                raise InputError("cannot tell which release this source is",
                                 "name it: --against " + ecosystems.release_forms()
                                 + ", a file or an https:// URL")
            found_from = f"the project's metadata ({own.spec})"
            release_spec = own.spec
            add_release(own, registry, owner.strategy)
        timings["download_s"] = round(time.monotonic() - t, 3)

        # How the release was built.
        strategy = recipe.fetch_strategy
        ecosystem = ecosystems.get(strategy) if strategy != NO_FETCH else None
        # The release's files from the registry this ecosystem reads (shared ones too).
        served_by = ecosystem.releases.registry if ecosystem and ecosystem.releases else None
        mine = {n: p.path for n, p in published.items()
                if p.ecosystem is not None and served_by is not None
                and _registry_of(p.ecosystem) == served_by}
        inferred = ReleaseConditions()
        if ecosystem is not None and ecosystem.releases is not None and mine:
            try:
                inferred = ecosystem.releases.conditions(mine, tree)
            except UnsafeArchiveError as exc:  # compared (and reported) below all the same
                inferred = ReleaseConditions(facts=(f"nothing inferred: {exc.message}",))
        uploads = [p.uploaded for p in published.values() if p.uploaded is not None]
        conditions, overrides = merge_conditions(inferred, pins=options.pins, env=options.env,
                                                 cutoff=min(uploads) if uploads else None)
        if not inferred.facts:
            warnings.append("nothing recorded how the release was built: the recipe's pins "
                            "and environment apply")
        recipe = apply_env(recipe, conditions.env)

        # Rebuild.
        if failure is None:
            t = time.monotonic()
            progress.step(f"toolchain image '{recipe.image}'")
            toolchain = image_build.ensure_image(client, recipe.image, progress=progress,
                                                 ca_cert=options.ca_cert)
            timings["image_s"] = round(time.monotonic() - t, 3)
            fetched = phases.fetch_phase(session, tree=tree, recipe=recipe, toolchain=toolchain,
                                         ca_cert=options.ca_cert, timings=timings, out=out,
                                         pins=conditions.pins, cutoff=conditions.cutoff)
            if fetched is None or fetched.failure is None:
                results = _rebuild(session, options, tree, recipe, toolchain, fetched, out,
                                   timings)
            built = bool(results) and all(not r.timed_out and r.exit_code == 0
                                          for r in results)
        # Compare.
        t = time.monotonic()
        if built:
            rebuilt = {f.path: f for f in plan.wanted_outputs(results[0].outputs,
                                                              recipe.outputs)}
            rebuilt_dir = results[0].output_dir
            for name, item in sorted(published.items()):
                if source_sha256 is not None and item.sha256 == source_sha256:
                    continue  # the source archive itself: what was built from, not a result
                match = rebuilt.get(name)
                comparisons.append((name, None if match is None else _compare_safely(
                    item.path, rebuilt_dir / match.path, name)))
            rebuilt_only = tuple(sorted(set(rebuilt) - set(published)))
            artifacts_info = list(_explain(session, options, comparisons, published, rebuilt,
                                           rebuilt_dir, out))
            for result in results:
                warnings.extend(plan.build_warnings(result))
            if options.twice and len(results) == 2:
                differences = phases.compare_pair(
                    session, [plan.wanted_outputs(r.outputs, recipe.outputs) for r in results],
                    out=out, options=options)
        timings["compare_s"] = round(time.monotonic() - t, 3)

    if tree is None or recipe is None:  # it failed before the rebuild: nothing was seen
        assert guard.failure is not None
        raise guard.failure
    if guard.failure is None:
        egress = tuple(mark_one_sided([r.egress for r in results]))
    else:  # evidence outranks what failed after it
        egress = attempts_by_build(session.attempts_seen())
        warnings.append(f"after its network attempts the run failed: {guard.failure.message}")
    egress = tuple(blocked_attempts(requests)) + egress
    if fetched is not None:
        egress = tuple(blocked_attempts(fetched.requests)) + egress
    missing = sum(1 for _, c in comparisons if c is None)
    verdict = judge([c for _, c in comparisons if c is not None], missing=missing,
                    egress=bool(egress), built=built, twice_differs=bool(differences))
    message = _message(verdict, egress=egress, failure=failure, fetched=fetched,
                       results=results, artifacts=artifacts_info)
    timings["total_s"] = round(time.monotonic() - started, 3)
    builds = tuple(plan.build_info(env, res, plan.wanted_outputs(res.outputs, recipe.outputs),
                                   out)
                   for env, res in zip(plan.build_pair(options.variations, recipe,
                                                      host_cpus=plan.host_cpus()),
                                       results, strict=False)) if recipe else ()
    return Report(
        verdict=verdict,
        source=plan.source_info(tree), recipe=plan.recipe_info(recipe, reason, tree),
        toolchain=plan.toolchain_info(toolchain),
        variations=tuple(v.value for v in plan_pair(options.variations,
                                                    host_cpus=plan.host_cpus())[0].varied)
        if options.twice else (),
        builds=builds, differences=differences, timings=timings, out_dir=str(out),
        egress=egress, fetch=plan.fetch_info(fetched), warnings=tuple(warnings),
        message=message,
        verify=VerifyInfo(
            release=release_spec, found_from=found_from, source_sha256=source_sha256,
            published=tuple(PublishedInfo(
                name=name, url=item.url, sha256=item.sha256,
                registry_digest=item.registry_digest, uploaded=item.uploaded,
                size=item.path.stat().st_size) for name, item in sorted(published.items())),
            conditions=ConditionsInfo(
                facts=conditions.facts, pins=conditions.pins, env=dict(conditions.env),
                cutoff=conditions.cutoff, details=dict(conditions.details),
                overrides=overrides),
            artifacts=tuple(artifacts_info), rebuilt_only=rebuilt_only))


def _compare_safely(published: Path, rebuilt: Path, name: str) -> Comparison:
    """:func:`~reprobuild.forensics.compare`, where an archive it refuses to read (links,
    ``..`` names, a bomb) is a finding about that file, not the end of the run."""
    try:
        return compare(published, rebuilt, name=name)
    except UnsafeArchiveError as exc:
        return Comparison(name=name, equivalence=Equivalence.CONTENT_DIFFERS,
                          packaging=(f"not compared: {exc.message}",))


def _rebuild(session: Session, options: VerifyOptions, tree: SourceTree, recipe: Recipe,
             toolchain: ToolchainImage, fetched: FetchedDeps | None, out: Path,
             timings: dict[str, float]) -> list[SandboxResult]:
    """One build in the control environment (two, varied, with ``--twice``)."""
    env_a, env_b = plan.build_pair(options.variations if options.twice else frozenset(),
                                   recipe, host_cpus=plan.host_cpus())
    timeout = options.timeout_s or recipe.timeout_s or DEFAULT_TIMEOUT_S
    limits = replace(options.limits, timeout_s=timeout)
    deps = fetched.archive if fetched and fetched.archive else None
    envs = (env_a, env_b) if options.twice else (env_a,)
    specs = [plan.build_spec(env, tree=tree, recipe=recipe, toolchain=toolchain,
                             limits=limits, trap=options.trap, deps=deps,
                             deps_env=fetched.env if fetched else ()) for env in envs]
    t = time.monotonic()
    session.progress.step("rebuilding" + (" twice" if options.twice else ""))
    results = session.run_builds(specs, out)
    timings["builds_s"] = round(time.monotonic() - t, 3)
    return results


def _explain(session: Session, options: VerifyOptions,
             comparisons: Sequence[tuple[str, Comparison | None]],
             published: Mapping[str, _Published], rebuilt: Mapping[str, ExtractedFile],
             rebuilt_dir: Path, out: Path) -> list[ArtifactInfo]:
    """Each comparison as the report shows it, diffoscope run on every changed file."""
    from reprobuild.pipeline import phases  # noqa: PLC0415 - Docker side

    found: list[ArtifactInfo] = []
    # Every changed file draws from the run's one diffoscope budget: each its fair share.
    still = sum(1 for _, c in comparisons
                if c is not None and c.equivalence is not Equivalence.IDENTICAL)
    for name, comparison in comparisons:
        item = published[name]
        published_sha = item.sha256
        if comparison is None:
            found.append(ArtifactInfo(name=name, equivalence="not-rebuilt",
                                      published_sha256=published_sha, rebuilt_sha256=None,
                                      only_published=(), only_rebuilt=(), changed=(),
                                      packaging=(), diffoscope=None))
            continue
        match = rebuilt[name]
        diffoscope = None
        if comparison.equivalence is not Equivalence.IDENTICAL:
            mismatch = Mismatch(path=name,
                                a=ExtractedFile(path=name, size=item.path.stat().st_size,
                                                sha256=published_sha),
                                b=match)
            still -= 1
            explained = list(phases.explain_all(
                session, [mismatch], sides=plan.Sides(item.path.parent, rebuilt_dir),
                out=out, diffoscope=options.diffoscope, limits=options.diffoscope_limits,
                ca_cert=options.ca_cert, later=still))
            diffoscope = explained[0].diffoscope if explained else None
        found.append(ArtifactInfo(
            name=name, equivalence=comparison.equivalence.value,
            published_sha256=published_sha, rebuilt_sha256=match.sha256,
            only_published=comparison.only_published, only_rebuilt=comparison.only_rebuilt,
            changed=comparison.changed, packaging=comparison.packaging,
            diffoscope=diffoscope))
    return found


def _message(verdict: Verdict, *, egress: Sequence[EgressAttempt], failure: str | None,
             fetched: FetchedDeps | None, results: Sequence[SandboxResult],
             artifacts: Sequence[ArtifactInfo]) -> str | None:
    if egress:
        return summarize(egress)
    if failure is not None:
        return failure
    if fetched is not None and fetched.failure is not None:
        return f"fetching dependencies failed: {fetched.failure}" + (
            f"; {fetched.hint}" if fetched.hint else "")
    if verdict is Verdict.BUILD_FAILED:
        return "; ".join(f"the rebuild {'timed out' if r.timed_out else 'exited with '}"
                         f"{'' if r.timed_out else r.exit_code}" for r in results
                         if r.timed_out or r.exit_code != 0) or "the rebuild failed"
    return headline(artifacts)

