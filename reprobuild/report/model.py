"""The report: one frozen, typed data model of what a run found, and the pure verdict.

The JSON field names are a public interface (nightly CI jobs parse them), documented in
README.md under "Report format"; ``SCHEMA`` changes whenever a field changes meaning.
Each output format renders this model in its own module (:mod:`reprobuild.report.formats`);
human rendering lives in the CLI. Nothing here prints.

The model holds any number of builds (``check`` has two, ``A`` and ``B``); a difference
names the two sides it compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from reprobuild import __version__
from reprobuild.errors import ExitCode
from reprobuild.evidence import EgressAttempt, FetchRequest

SCHEMA = "reprobuild.report/v1"


class Verdict(str, Enum):
    """The one-word answer; each maps to exactly one exit code."""

    REPRODUCIBLE = "reproducible"
    UNREPRODUCIBLE = "unreproducible"
    EGRESS = "egress"
    BUILD_FAILED = "build-failed"
    REPACKED = "repacked"
    """verify only: the same files with the same bytes, packed differently."""
    ERROR = "error"


def exit_code_for(verdict: Verdict) -> ExitCode:
    """The process exit code that goes with a verdict."""
    match verdict:
        case Verdict.REPRODUCIBLE:
            return ExitCode.REPRODUCIBLE
        case Verdict.UNREPRODUCIBLE:
            return ExitCode.UNREPRODUCIBLE
        case Verdict.EGRESS:
            return ExitCode.EGRESS
        case Verdict.BUILD_FAILED:
            return ExitCode.BUILD_FAILED
        case Verdict.REPACKED:
            return ExitCode.REPACKED
        case Verdict.ERROR:
            return ExitCode.ENVIRONMENT


@dataclass(frozen=True)
class SourceInfo:
    """Where the source came from and exactly which tree was built."""

    url: str
    kind: str
    ref: str | None
    commit: str | None
    commit_time: int | None
    subdir: str
    tree_sha256: str
    files: int
    sent: dict[str, str] = field(default_factory=dict)
    """What the builds got beyond ``subdir`` (which they always get), and why: a file or a
    directory and all below it, ``"."`` for the whole repository. ``files`` counts all."""


@dataclass(frozen=True)
class RecipeInfo:
    """Which recipe built it, and from which file."""

    name: str
    origin: str
    commands: tuple[str, ...]
    outputs: tuple[str, ...]
    reason: str | None = None
    """Why this recipe, when more than one detected (null otherwise)."""
    manifest: str | None = None
    """The project's manifest the recipe detected (repository path), where code-scanning
    dashboards pin a finding."""


@dataclass(frozen=True)
class ToolchainInfo:
    """The pinned image the builds ran in, and every package version inside it."""

    image: str
    image_id: str
    definition_sha256: str
    versions: dict[str, str]


@dataclass(frozen=True)
class OutputInfo:
    """One artifact a build produced."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BuildInfo:
    """One build: its environment, result, outputs and log."""

    name: str
    variations: dict[str, str]
    exit_code: int | None
    timed_out: bool
    duration_s: float
    outputs: tuple[OutputInfo, ...]
    log: str
    log_tail: str


@dataclass(frozen=True)
class DiffoscopeInfo:
    """Where diffoscope's explanation of one difference is, and how the run went."""

    text: str | None
    html: str | None
    exit_code: int | None
    timed_out: bool
    excerpt: str
    """The changed lines of diffoscope's leaf differences, content before listings."""
    json: str | None = None
    """diffoscope's JSON report (the tree the excerpt and the classes are read from)."""


@dataclass(frozen=True)
class FindingInfo:
    """One way a differing artifact differs: what caused it, what kind of cause, the fix.

    Members that differ the same way for the same cause are one finding.
    """

    cause: str
    """The class (``embedded-timestamp``, ``archive-metadata``, ... README lists them)."""
    label: str
    aspect: str
    """What differs: ``content``, ``mtime``, ``mode``, ``owner``, ``order``, ``presence``,
    ``zip-entry``, ``header``, ``header-time`` or ``bytes``."""
    what: str
    """``mode of 3 members``, ``gzip header time``: what differs, for a person."""
    members: tuple[str, ...]
    culprits: tuple[str, ...]
    """The variations that cause it (``clock`` for the time of the build)."""
    attribution: str
    """``variation`` (each culprit alone causes it), ``together`` (only combined),
    ``build-time`` (two identical builds differ, in time values only),
    ``nondeterministic`` (two identical builds differ otherwise), ``undecided`` (one of the
    culprits; the budget ran out or a build failed)."""
    evidence: tuple[str, ...]
    """The builds that show it (``b``, the explanation builds ``x1``...)."""
    example: str
    hint: str

    @property
    def blamed(self) -> str:
        """The culprits as a person reads them (``one of clock, umask``), in every summary."""
        names = ", ".join(self.culprits) or "none"
        return {"together": f"{names} together", "undecided": f"one of {names}",
                "build-time": f"{names} (time of the build)",
                "nondeterministic": "none: identical builds differ"}.get(self.attribution,
                                                                         names)


@dataclass(frozen=True)
class DifferenceInfo:
    """One artifact whose bytes differ between two builds (or that exists in only one).

    ``sha256_a``/``sha256_b`` are the report's field names for the two sides compared
    (builds ``a`` and ``b`` in a check).
    """

    path: str
    sha256_a: str | None
    sha256_b: str | None
    diffoscope: DiffoscopeInfo | None
    findings: tuple[FindingInfo, ...] = ()
    """Why it differs, when the explanation ran (``--explain``)."""


@dataclass(frozen=True)
class ExplainBuildInfo:
    """One extra build of the explanation: which of B's variations it applied."""

    name: str
    round: int
    variations: tuple[str, ...]
    """Empty for the control build (A's environment again)."""
    exit_code: int | None
    timed_out: bool
    duration_s: float
    log: str
    differs: tuple[str, ...]
    """The artifacts whose bytes differ from build A's."""


@dataclass(frozen=True)
class ExplanationInfo:
    """How the culprits were found: the extra builds, their cost, the classes found."""

    status: str
    """``complete``, ``partial`` (budget spent or a build failed), or ``skipped``."""
    reason: str | None
    budget: str
    bound: int
    """The most extra builds this search could take (README, "--explain")."""
    builds: tuple[ExplainBuildInfo, ...]
    seconds: float
    causes: tuple[str, ...]
    """The classes found, most members first."""


@dataclass(frozen=True)
class FetchInfo:
    """The fetch phase as the report shows it: what was pinned and every request made."""

    strategy: str
    key: str
    cache_hit: bool
    seconds: float
    failure: str | None
    pins: dict[str, str]
    hashes: dict[str, str]
    notes: tuple[str, ...]
    requests: tuple[FetchRequest, ...]


@dataclass(frozen=True)
class PublishedInfo:
    """One published file ``verify`` compared with: where from, and its digests."""

    name: str
    url: str | None
    sha256: str
    registry_digest: str | None
    """What the registry publishes for it (checked), None for a local file or bare URL."""
    uploaded: int | None
    size: int


@dataclass(frozen=True)
class ArtifactInfo:
    """One published file against its rebuild (``verify``)."""

    name: str
    equivalence: str
    """``identical``, ``content-equal``, ``content-differs`` or ``not-rebuilt``."""
    published_sha256: str
    rebuilt_sha256: str | None
    only_published: tuple[str, ...]
    only_rebuilt: tuple[str, ...]
    changed: tuple[str, ...]
    packaging: tuple[str, ...]
    diffoscope: DiffoscopeInfo | None


@dataclass(frozen=True)
class ConditionsInfo:
    """How the release was built, as inferred, and what the rebuild applied."""

    facts: tuple[str, ...]
    pins: tuple[str, ...]
    env: dict[str, str | None]
    cutoff: int | None
    details: dict[str, str]
    overrides: tuple[str, ...]
    """What the user set on the command line (``--pin``, ``--env``)."""


@dataclass(frozen=True)
class VerifyInfo:
    """What ``verify`` compared: the release, its files, the conditions, the findings."""

    release: str | None
    found_from: str
    """How the published side was chosen ("--against", the project's metadata, the source)."""
    source_sha256: str | None
    """The source archive's digest when the source is a release file."""
    published: tuple[PublishedInfo, ...]
    conditions: ConditionsInfo
    artifacts: tuple[ArtifactInfo, ...]
    rebuilt_only: tuple[str, ...]
    """Artifacts the rebuild made that nothing published matches (not a finding)."""


@dataclass(frozen=True)
class Report:
    """Everything a check found; ``verdict`` decides the exit code."""

    verdict: Verdict
    source: SourceInfo
    recipe: RecipeInfo
    toolchain: ToolchainInfo
    variations: tuple[str, ...]
    builds: tuple[BuildInfo, ...]
    differences: tuple[DifferenceInfo, ...]
    timings: dict[str, float]
    out_dir: str | None
    egress: tuple[EgressAttempt, ...] = ()
    fetch: FetchInfo | None = None
    warnings: tuple[str, ...] = ()
    message: str | None = None
    verify: VerifyInfo | None = None
    """Only for ``verify``; absent from a check's JSON."""
    explanation: ExplanationInfo | None = None
    """Only when a check explained its differences (absent otherwise)."""
    schema: str = SCHEMA
    tool: dict[str, str] = field(default_factory=lambda: {"name": "reprobuild",
                                                          "version": __version__})

    @property
    def exit_code(self) -> ExitCode:
        """The exit code this report's verdict maps to."""
        return exit_code_for(self.verdict)


def decide_verdict(*, egress: bool, built: bool, outputs: bool, differences: bool) -> Verdict:
    """The verdict from what a run found (pure).

    Evidence of an injected step outranks everything else, even a failed build (a
    blocked download is a common reason for one); then a build that failed, or produced
    nothing the recipe names as output; then any difference.
    """
    if egress:
        return Verdict.EGRESS
    if not built or not outputs:
        return Verdict.BUILD_FAILED
    if differences:
        return Verdict.UNREPRODUCIBLE
    return Verdict.REPRODUCIBLE
