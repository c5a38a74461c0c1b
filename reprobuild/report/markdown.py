"""The Markdown summary (``--markdown``, and ``$GITHUB_STEP_SUMMARY`` in GitHub Actions).

A verdict line, the source, then a table of artifacts (or published files) and the
findings. Everything that came from the build (paths, destinations, messages) is escaped
for Markdown and stripped of control characters, so a hostile file name cannot inject
markup or links into a CI summary.
"""

from __future__ import annotations

import re

from reprobuild.report.model import Report, Verdict
from reprobuild.report.sarif import target_id

__all__ = ["ICON", "cell", "render", "render_error", "to_markdown"]

ICON = {Verdict.REPRODUCIBLE: "✅", Verdict.UNREPRODUCIBLE: "❌", Verdict.EGRESS: "🚨",
        Verdict.BUILD_FAILED: "⚠️", Verdict.REPACKED: "📦", Verdict.ERROR: "⛔"}
"""The mark of each verdict in a summary (the batch table uses the same)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def cell(text: str, limit: int = 200) -> str:
    """Text from a build as one Markdown table cell: no control characters, no markup."""
    clean = _CONTROL.sub(" ", text)
    if len(clean) > limit:
        clean = clean[:limit - 1] + "…"
    return _SPECIAL.sub(r"\\\1", clean)


def to_markdown(report: Report) -> str:
    """The summary of one report."""
    target = target_id(report)
    icon = ICON.get(report.verdict, "")
    lines = [f"### {icon} reprobuild: {report.verdict.value} — {cell(target)}", ""]
    if report.message:
        lines += [cell(report.message, 500), ""]
    src = report.source
    lines += [f"commit `{(src.commit or 'working directory')[:12]}` · recipe "
              f"`{cell(report.recipe.name)}` · variations "
              f"{cell(', '.join(report.variations) or 'none')} · "
              f"{report.timings.get('total_s', 0):.1f} s", ""]
    if report.verify is not None:
        lines += ["| published file | verdict |", "|---|---|"]
        lines += [f"| {cell(a.name)} | {cell(a.equivalence)} |" for a in report.verify.artifacts]
        lines.append("")
    elif report.builds:
        different = {d.path for d in report.differences}
        paths = sorted({o.path for b in report.builds for o in b.outputs} | different)
        if paths:
            lines += ["| artifact | result |", "|---|---|"]
            lines += [f"| {cell(p)} | {'differs' if p in different else 'same'} |"
                      for p in paths]
            lines.append("")
    destinations = list(dict.fromkeys(f"{a.name or a.dst}:{a.dport}" for a in report.egress))
    if destinations:
        lines += ["**Network attempts** (nothing left the sandbox):", ""]
        lines += [f"- {cell(d)}" for d in destinations[:20]]
        if len(destinations) > 20:
            lines.append(f"- … and {len(destinations) - 20} more")
        lines.append("")
    for build in report.builds:
        if build.timed_out or build.exit_code != 0:
            how = "timed out" if build.timed_out else f"exited with {build.exit_code}"
            lines += [f"Build {cell(build.name)} {how}.", ""]
    return "\n".join(lines) + "\n"


def render(report: Report) -> bytes:
    """The Markdown summary as UTF-8."""
    return to_markdown(report).encode("utf-8")


def render_error(message: str, exit_code: int) -> bytes:
    """A run that ended before a verdict."""
    return (f"### {ICON[Verdict.ERROR]} reprobuild: error (exit {exit_code})\n\n"
            f"{cell(message, 500)}\n").encode()
