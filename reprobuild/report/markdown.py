"""The Markdown summary (``--markdown``, and ``$GITHUB_STEP_SUMMARY`` in GitHub Actions).

A verdict line, the source, then a table of artifacts (or published files) and the
findings. Everything that came from the build (paths, destinations, messages) is escaped
for Markdown, with its control characters made visible (:func:`reprobuild.errors.visible`),
so a hostile file name cannot inject markup or links into a CI summary, nor reach a
reader's terminal live (``cat summary.md``).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from reprobuild.errors import visible
from reprobuild.evidence import destinations
from reprobuild.report.model import FindingInfo, Report, Verdict
from reprobuild.report.sarif import target_id

__all__ = ["ICON", "INDEX_NAME", "cell", "index_markdown", "render", "render_error",
           "to_markdown"]

INDEX_NAME = "summary.md"
"""The index of a results directory: every diffoscope report, log and the JSON, linked."""

ICON = {Verdict.REPRODUCIBLE: "✅", Verdict.UNREPRODUCIBLE: "❌", Verdict.EGRESS: "🚨",
        Verdict.BUILD_FAILED: "⚠️", Verdict.REPACKED: "📦", Verdict.ERROR: "⛔"}
"""The mark of each verdict in a summary (the batch table uses the same)."""
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def cell(text: str, limit: int = 200) -> str:
    """Text from a build as one Markdown table cell: controls made visible, no markup."""
    clean = visible(text)
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
    lines += [f"commit `{cell((src.commit or 'working directory')[:12])}` · recipe "
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
    findings = [(d.path, f) for d in report.differences for f in d.findings]
    if findings:
        lines += _causes_table(findings, link=False)
    tried = destinations(report.egress)
    if tried:
        lines += ["**Network attempts** (nothing left the sandbox):", ""]
        lines += [f"- {cell(d)}" for d in tried[:20]]
        if len(tried) > 20:
            lines.append(f"- … and {len(tried) - 20} more")
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


def _causes_table(findings: list[tuple[str, FindingInfo]], *, link: bool) -> list[str]:
    lines = ["| artifact | cause | culprit | what differs | fix |", "|---|---|---|---|---|"]
    for path, f in findings:
        name = f"[{cell(path)}](#{_anchor(path)})" if link else cell(path)
        lines.append(f"| {name} | {cell(f.label)} | {cell(f.blamed)} | "
                     f"{cell(f.what)}: {cell(f.example, 120)} | {cell(f.hint, 300)} |")
    return [*lines, ""]


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", text.lower().replace(" ", "-").replace(".", ""))


def _link(label: str, path: str | None) -> str:
    """A link to a file of the results directory (relative, so the directory can move)."""
    if not path:
        return ""
    return f"[{label}](<{quote(path)}>)"


def _fenced(text: str) -> list[str]:
    """Text from a build as a code block no backtick run in it can close."""
    clean = visible(text, lines=True)
    longest = max((len(run) for run in re.findall(r"`+", clean)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, clean.rstrip("\n"), fence]


def index_markdown(report: Report) -> str:
    """The index of a results directory (``summary.md``): the verdict and causes, then a
    link to every piece of evidence, relative to the directory."""
    lines = [f"# {ICON.get(report.verdict, '')} reprobuild: {report.verdict.value} — "
             f"{cell(target_id(report))}", ""]
    if report.message:
        lines += [cell(report.message, 500), ""]
    findings = [(d.path, f) for d in report.differences for f in d.findings]
    if findings:
        lines += ["## Causes", "", *_causes_table(findings, link=True)]
    explanation = report.explanation
    if explanation is not None:
        lines += [f"Explanation {cell(explanation.status)}: {len(explanation.builds)} extra "
                  f"build(s) in {explanation.seconds:.1f} s (budget {cell(explanation.budget)}, "
                  f"at most {explanation.bound})"
                  + (f"; {cell(explanation.reason)}" if explanation.reason else "") + ".", ""]
    lines += ["## Evidence", "", f"- {_link('report.json', 'report.json')}: the whole report"]
    for build in report.builds:
        role = "the control" if build.name == "a" else "varies " + (
            ", ".join(report.variations) or "nothing")
        lines.append(f"- build {cell(build.name.upper())} ({cell(role)}): "
                     f"{_link('log', build.log)}, artifacts in `{cell(build.name)}/artifacts/`")
    for extra in explanation.builds if explanation is not None else ():
        varied = ", ".join(extra.variations) or "none: A's environment again"
        differs = ", ".join(extra.differs) or "nothing"
        lines.append(f"- explanation build {cell(extra.name)} (varies {cell(varied)}): "
                     f"{_link('log', extra.log)}, differs from A in {cell(differs)}")
    if report.fetch is not None:
        lines.append(f"- {_link('fetch.log', 'fetch.log')}: the dependency fetch")
    lines.append("")
    for diff in report.differences:
        lines += [f"## {cell(diff.path)}", ""]
        info = diff.diffoscope
        if info is None:
            lines += ["Only one build made it." if not (diff.sha256_a and diff.sha256_b)
                      else "It differs (diffoscope did not run).", ""]
            continue
        links = [x for x in (_link("HTML", info.html), _link("text", info.text),
                             _link("JSON", info.json)) if x]
        lines += [f"diffoscope: {' · '.join(links) or 'no report (see its log)'}", ""]
        for f in diff.findings:
            lines.append(f"- **{cell(f.label)}** ({cell(f.blamed)}), {cell(f.what)}: "
                         f"{cell(', '.join(m or diff.path for m in f.members[:8]))}"
                         + (f" and {len(f.members) - 8} more" if len(f.members) > 8 else ""))
        if diff.findings:
            lines.append("")
        if info.excerpt:
            lines += [*_fenced(info.excerpt), ""]
    return "\n".join(lines) + "\n"
