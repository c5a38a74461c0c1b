"""Compare the two builds' outputs, and explain each difference with sandboxed diffoscope.

Hashes decide: equal sha256 needs nothing more. Only artifacts whose hashes differ go to
diffoscope, which parses hostile input with many tools and has no size caps of its own,
so it runs in the same hardened sandbox as a build (no network, read-only root, memory,
pids and wall-clock limits) with a report-size cap.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from reprobuild.archive import ExtractedFile
from reprobuild.explain.leaves import excerpt as leaf_excerpt
from reprobuild.explain.leaves import read_leaves
from reprobuild.report import DiffoscopeInfo
from reprobuild.sandbox.spec import OUT_DIR, SandboxLimits, SandboxSpec

if TYPE_CHECKING:
    from reprobuild.sandbox.container import Sandbox

_IN_DIR = "/in"
_EXCERPT_LINES = 40


@dataclass(frozen=True)
class Mismatch:
    """An artifact whose bytes differ, or that only one build produced."""

    path: str
    a: ExtractedFile | None
    b: ExtractedFile | None


@dataclass(frozen=True)
class DiffoscopeLimits:
    """Caps on diffoscope: per artifact, and for the whole comparison of one run."""

    timeout_s: float = 600.0
    """One artifact at most (its share of the total may be less)."""
    max_report_bytes: int = 20 * 1024 * 1024
    """One artifact's report at most (text and HTML each)."""
    max_diff_block_lines: int = 2000
    memory_mb: int = 2048
    total_timeout_s: float = 1200.0
    """Every artifact of one run together: crafted outputs cannot hold a check for hours."""
    total_report_bytes: int = 64 * 1024 * 1024
    """What every artifact's reports may take on disk together."""


MIN_SHARE_S = 15.0
"""Less than this is not worth starting diffoscope for; the artifact is named instead."""
MIN_SHARE_BYTES = 256 * 1024


class DiffoscopeBudget:
    """What is left of one run's diffoscope budget (time and report bytes).

    Each artifact gets an equal share of what is left (capped by the per-artifact limits),
    so one that finishes early leaves more for the rest; when even the smallest useful
    share is gone, the rest are not compared and say so. Mutable on purpose: it is the
    account one run's comparisons draw from.
    """

    def __init__(self, limits: DiffoscopeLimits) -> None:
        self.limits = limits
        self.seconds = float(limits.total_timeout_s)
        self.bytes = int(limits.total_report_bytes)

    def share(self, left: int) -> DiffoscopeLimits | None:
        """The limits of the next artifact of ``left`` still to compare, or None when the
        budget cannot pay for one more."""
        if self.seconds < MIN_SHARE_S or self.bytes < MIN_SHARE_BYTES:
            return None
        count = max(1, left)
        seconds = min(self.limits.timeout_s, self.seconds,
                      max(MIN_SHARE_S, self.seconds / count))
        size = min(self.limits.max_report_bytes, self.bytes,
                   max(MIN_SHARE_BYTES, self.bytes // count))
        return replace(self.limits, timeout_s=seconds, max_report_bytes=size)

    def spend(self, seconds: float, size: int) -> None:
        """Charge one artifact's run: the time it took, the bytes its reports take."""
        self.seconds = max(0.0, self.seconds - seconds)
        self.bytes = max(0, self.bytes - size)

    def not_compared(self) -> DiffoscopeInfo:
        """What the report says of an artifact the budget could not pay for."""
        total = self.limits
        return DiffoscopeInfo(
            text=None, html=None, exit_code=None, timed_out=False, json=None,
            excerpt=f"not compared: this run's diffoscope budget "
                    f"({total.total_timeout_s:g}s, {total.total_report_bytes >> 20} MiB of "
                    "reports) was spent on the other differences")


def output_name(path: str) -> str:
    """The directory name of one artifact's diffoscope reports: injective (``sub/x.whl``
    and ``sub_x.whl`` never share one), one path component, at most 200 bytes.

    ``%`` and ``/`` are percent-encoded; a longer name is cut and ends in ``%h`` and a
    hash of the whole path (``%h`` never occurs in an encoded name, so a cut name cannot
    equal another artifact's whole one).
    """
    encoded = path.replace("%", "%25").replace("/", "%2F")
    if encoded in {".", ".."}:
        encoded = encoded.replace(".", "%2E")
    if len(encoded.encode("utf-8")) <= 200:
        return encoded
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    head = encoded.encode("utf-8")[:150].decode("utf-8", "ignore")
    return f"{head}%h{digest}"


def mismatches(a: Sequence[ExtractedFile], b: Sequence[ExtractedFile]) -> list[Mismatch]:
    """Pair outputs by path and keep those that are not bit-for-bit identical."""
    by_a = {f.path: f for f in a}
    by_b = {f.path: f for f in b}
    result = []
    for path in sorted(by_a.keys() | by_b.keys()):
        fa, fb = by_a.get(path), by_b.get(path)
        if fa is None or fb is None or fa.sha256 != fb.sha256:
            result.append(Mismatch(path=path, a=fa, b=fb))
    return result


def diffoscope_script(name: str, limits: DiffoscopeLimits) -> str:
    """The command line diffoscope runs with inside its sandbox (pure, for tests)."""
    quoted = shlex.quote(name)
    return "\n".join([
        "set -u",
        "export HOME=/tmp TMPDIR=/tmp LC_ALL=C.UTF-8",
        f"tar -x -f - -C {_IN_DIR}",
        "exec diffoscope --no-progress --exclude-directory-metadata=yes"
        f" --max-report-size {limits.max_report_bytes}"
        f" --max-text-report-size {limits.max_report_bytes}"
        f" --max-diff-block-lines {limits.max_diff_block_lines}"
        f" --text {OUT_DIR}/diffoscope.txt --html {OUT_DIR}/diffoscope.html"
        f" --json {OUT_DIR}/diffoscope.json"
        f" {_IN_DIR}/a/{quoted} {_IN_DIR}/b/{quoted}",
        "",
    ])


def explain(sandbox: Sandbox, *, image: str, mismatch: Mismatch, a_dir: Path, b_dir: Path,
            dest: Path, root: Path, limits: DiffoscopeLimits, role: str) -> DiffoscopeInfo:
    """Run diffoscope on one mismatched artifact; reports land in ``dest``.

    Report paths are returned relative to ``root`` (the check's output directory).
    """
    assert mismatch.a is not None and mismatch.b is not None
    name = Path(mismatch.path).name
    spec = SandboxSpec(
        role=role, image=image, script=diffoscope_script(name, limits), uid=1000, gid=1000,
        hostname="diffoscope", domainname="reprobuild.invalid",
        writable=(_IN_DIR, "/tmp"),
        # Both artifacts are streamed from disk (however large, a chunk at a time).
        stdin=b"", stdin_tar=((f"a/{name}", a_dir / mismatch.path),
                              (f"b/{name}", b_dir / mismatch.path)),
        limits=SandboxLimits(timeout_s=limits.timeout_s, memory_mb=limits.memory_mb,
                             pids=256, output_mb=max(64, 4 * limits.max_report_bytes >> 20)),
    )
    result = sandbox.run(spec, output_dir=dest, log_path=dest / "diffoscope.log")
    text = dest / "diffoscope.txt"
    html = dest / "diffoscope.html"
    tree = dest / "diffoscope.json"
    found = read_leaves(tree)
    excerpt = ""
    if found:
        excerpt = leaf_excerpt(found, max_lines=_EXCERPT_LINES)
    elif text.is_file():
        with text.open(encoding="utf-8", errors="replace") as handle:
            excerpt = "".join(line for _, line in zip(range(_EXCERPT_LINES), handle,
                                                      strict=False))
    elif result.log_path.is_file():
        excerpt = result.log_path.read_text(errors="replace")[-2000:]
    return DiffoscopeInfo(
        text=str(text.relative_to(root)) if text.is_file() else None,
        html=str(html.relative_to(root)) if html.is_file() else None,
        exit_code=result.exit_code, timed_out=result.timed_out, excerpt=excerpt,
        json=str(tree.relative_to(root)) if tree.is_file() else None)
