"""A person's view of a report: verdict, provenance, one row per artifact, what differs.

Every string that came from a build or a repository (names, logs, diffoscope excerpts,
egress details) is printed escaped or with markup off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprobuild.cli.console import err, escape, out, plain, table
from reprobuild.evidence import EgressAttempt, destinations
from reprobuild.report import Report, Verdict

__all__ = ["print_egress", "print_explanation", "print_summary", "recap"]

_VERDICT_STYLE = {
    Verdict.REPRODUCIBLE: "bold green",
    Verdict.UNREPRODUCIBLE: "bold red",
    Verdict.EGRESS: "bold magenta",
    Verdict.BUILD_FAILED: "bold yellow",
    Verdict.REPACKED: "bold cyan",
    Verdict.ERROR: "bold red",
}
_EQUIVALENCE_STYLE = {"identical": "green", "content-equal": "cyan",
                      "content-differs": "red", "not-rebuilt": "red"}


def _short(digest: str | None) -> str:
    """The first 16 characters of a digest, as markup (a report file may hold anything)."""
    return escape(digest[:16]) if digest else "—"


def _build_line(report: Report) -> str:
    parts = [f"{escape(b.name.upper())} {b.duration_s:.1f}s exit {b.exit_code}"
             f"{' (timed out)' if b.timed_out else ''}" for b in report.builds]
    return ",  ".join([*parts, f"total {report.timings.get('total_s', 0):.1f}s"])


def print_summary(report: Report, *, to_stderr: bool = False, verbose: bool = False) -> None:
    """The summary of one report on stdout (warnings on stderr); all of it on stderr when
    a report is written to stdout (``--json -``). It ends with a one-line recap, so the
    last screen of a run says the verdict, the causes and where the evidence is."""
    con = err if to_stderr else out
    style = _VERDICT_STYLE[report.verdict]
    con.print(f"[{style}]{report.verdict.value.upper()}[/{style}]  "
              f"(exit {int(report.exit_code)})" + (f" — {escape(report.message)}"
                                                   if report.message else ""))
    src = report.source
    where = escape(src.url + (f" [{src.subdir}]" if src.subdir else ""))
    commit = escape(src.commit[:12]) if src.commit else "working directory"
    con.print(f"source     {where} @ {commit}  tree {_short(src.tree_sha256)}")
    con.print(f"recipe     {escape(report.recipe.name)} ({escape(report.recipe.origin)})"
              + (f" — {escape(report.recipe.reason)}" if report.recipe.reason else ""))
    con.print(f"toolchain  {escape(report.toolchain.image)} "
              f"({escape(report.toolchain.image_id[:19])})")
    con.print(f"variations {escape(', '.join(report.variations) or 'none')}")
    if report.fetch is not None:
        fetch = report.fetch
        how = "cache hit" if fetch.cache_hit else f"{len(fetch.requests)} request(s)"
        con.print(f"fetch      {escape(fetch.strategy)}: {len(fetch.pins)} pinned, {how}, "
                  f"{fetch.seconds:.1f}s" + (f" — failed: {escape(fetch.failure)}"
                                              if fetch.failure else ""))
    if report.builds:
        con.print(f"builds     {_build_line(report)}")
        if report.verify is None or report.differences:
            _print_artifacts(report, con)
    if report.verify is not None:
        _print_verify(report, con)
    print_explanation(report, con, verbose=verbose)
    for build in report.builds:
        if build.timed_out or build.exit_code != 0:
            con.rule(f"[yellow]build {escape(build.name)} log (last lines)[/yellow]")
            con.print(plain(build.log_tail), markup=False, highlight=False)
    if report.egress:
        print_egress(report, con, verbose=verbose)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    con.print(recap(report), highlight=False, soft_wrap=True)  # one line, however wide


def _print_artifacts(report: Report, con: Any) -> None:
    """One row per artifact path, one digest column per build, and whether all agree."""
    grid = table()
    grid.add_column("artifact", overflow="fold")
    grid.add_column("size", justify="right")
    for build in report.builds:
        grid.add_column(f"sha256 {escape(build.name.upper())}")
    grid.add_column("")
    by_build = [{o.path: o for o in b.outputs} for b in report.builds]
    paths = sorted(set().union(*by_build))
    for path in paths:
        found = [outputs.get(path) for outputs in by_build]
        digests = {o.sha256 if o else None for o in found}
        same = len(digests) == 1 and None not in digests
        either = next((o for o in found if o is not None), None)
        grid.add_row(escape(path), str(either.size) if either else "",
                     *(_short(o.sha256 if o else None) for o in found),
                     "[green]same[/green]" if same else "[red]DIFFERS[/red]")
    if paths:
        con.print(grid)


def _print_verify(report: Report, con: Any) -> None:
    """What was published, how it was built, and each file against its rebuild."""
    info = report.verify
    assert info is not None
    con.print(f"published  {escape(info.release or 'files given with --against')} "
              f"(from {escape(info.found_from)})")
    conditions = info.conditions
    for fact in conditions.facts:
        con.print(f"inferred   {escape(fact)}")
    applied = [*conditions.pins, *(f"{k}={v}" if v is not None else f"{k} unset"
                                   for k, v in conditions.env.items())]
    if applied:
        con.print(f"applied    {escape(', '.join(applied))}"
                  + (f" (overrides: {escape(', '.join(conditions.overrides))})"
                     if conditions.overrides else ""))
    grid = table()
    for column in ("published file", "size", "sha256 published", "sha256 rebuilt", ""):
        grid.add_column(column, overflow="fold")
    sizes = {p.name: p.size for p in info.published}
    for item in info.artifacts:
        style = _EQUIVALENCE_STYLE.get(item.equivalence, "red")
        grid.add_row(escape(item.name), str(sizes.get(item.name, "")),
                     _short(item.published_sha256), _short(item.rebuilt_sha256),
                     f"[{style}]{escape(item.equivalence)}[/{style}]")
    con.print(grid)
    for item in info.artifacts:
        if item.equivalence == "identical":
            continue
        con.rule(f"[red]{escape(item.name)}[/red]")
        for name in item.only_published:
            con.print(f"[bold red]only in the published file:[/bold red] {escape(name)}")
        for name in item.only_rebuilt:
            con.print(f"[red]only in the rebuild:[/red] {escape(name)}")
        for name in item.changed:
            con.print(f"[red]changed:[/red] {escape(name)}")
        for line in item.packaging:
            con.print(f"[cyan]packaging:[/cyan] {escape(line)}")
        if item.diffoscope is not None and item.diffoscope.excerpt and item.changed:
            con.print(plain(item.diffoscope.excerpt.rstrip()), markup=False, highlight=False)
    if info.rebuilt_only:
        con.print(f"[dim]rebuilt, not published: {escape(', '.join(info.rebuilt_only))}[/dim]")


def _protocol(attempt: EgressAttempt) -> str:
    return attempt.kind + (" (forged)" if attempt.forged else "")


def _destination(attempt: EgressAttempt) -> str:
    """``host:port``, an IPv6 address in brackets."""
    dst = attempt.dst or ""
    if attempt.dport is not None:
        dst = f"[{dst}]:{attempt.dport}" if ":" in dst else f"{dst}:{attempt.dport}"
    return dst


def _asked(attempt: EgressAttempt) -> str:
    """The name asked for, with the DNS query type."""
    return (attempt.name or "") + (f" ({attempt.qtype})" if attempt.qtype else "")


def _grouped_egress(report: Report, con: Any) -> None:
    """One row per destination and kind, with a count: a name tried 8 times is one row."""
    grid = table()
    for column in ("builds", "protocol", "destination", "name", "attempts", "process"):
        grid.add_column(column, overflow="fold")
    rows: dict[tuple[str, str, str], list[Any]] = {}
    for attempt in report.egress:
        if attempt.kind == "dropped":
            continue
        key = (_protocol(attempt), _destination(attempt), _asked(attempt))
        rows.setdefault(key, []).append(attempt)
    dropped = sum(a.count or 0 for a in report.egress if a.kind == "dropped")
    for (proto, dst, name), attempts in rows.items():
        builds = ", ".join(dict.fromkeys(a.build.upper() for a in attempts))
        process = next((f"{a.cmdline or a.exe}" for a in attempts if a.cmdline or a.exe), "")
        grid.add_row(*(escape(v) for v in (builds, proto, dst, name, str(len(attempts)),
                                           process)))
    con.print(grid)
    if dropped:
        con.print(f"[dim]{dropped} more not logged (rate limit)[/dim]")
    con.print("[dim]every attempt is in the JSON report; --verbose lists them here[/dim]")


def print_egress(report: Report, con: Any = out, *, verbose: bool = False) -> None:
    """The network attempts as a table: evidence of an injected build step (grouped by
    destination; one row per attempt with ``verbose``)."""
    con.rule("[magenta]network attempts (none left the sandbox)[/magenta]")
    if not verbose:
        _grouped_egress(report, con)
        return
    grid = table()
    for column in ("build", "protocol", "destination", "name", "detail", "process"):
        grid.add_column(column, overflow="fold")
    for attempt in report.egress:
        build = attempt.build.upper()
        if attempt.only_in:
            build += " only"
        proto, dst, name = _protocol(attempt), _destination(attempt), _asked(attempt)
        process = ""
        if attempt.pid is not None:
            process = f"{attempt.pid} {attempt.cmdline or attempt.exe or ''}"
        elif attempt.uid is not None:
            process = f"uid {attempt.uid}"
        if attempt.kind == "dropped":
            name = f"{attempt.count} more not logged (rate limit)"
        grid.add_row(*(escape(str(v)) for v in (build, proto, dst, name,
                                                  attempt.detail or "", process)))
    con.print(grid)


def print_explanation(report: Report, con: Any = out, *, verbose: bool = False) -> None:
    """Each difference: its findings (cause, culprit, what differs, the fix), the changed
    lines diffoscope found, and where its full reports are."""
    root = Path(report.out_dir) if report.out_dir else None
    for diff in report.differences:
        con.rule(f"[red]{escape(diff.path)}[/red]")
        if diff.findings:
            grid = table()
            for column in ("cause", "culprit", "what differs", "example"):
                grid.add_column(column, overflow="fold")
            for finding in diff.findings:
                grid.add_row(f"[bold]{escape(finding.label)}[/bold]", escape(finding.blamed),
                             escape(finding.what), escape(finding.example))
            con.print(grid)
            shown: set[str] = set()
            for finding in diff.findings:
                # A tool's advice shared by two findings (modes and owners) is said once.
                parts = [p for p in finding.hint.split("; ") if p not in shown]
                shown.update(parts)
                if parts:
                    con.print(f"[green]fix ({escape(finding.label)}):[/green] "
                              f"{escape('; '.join(parts))}", highlight=False)
            if verbose:
                for finding in diff.findings:
                    con.print(f"[dim]{escape(finding.label)} ({escape(finding.aspect)}): "
                              f"{escape(', '.join(m or diff.path for m in finding.members))}"
                              "[/dim]", highlight=False)
        if diff.diffoscope is None:
            con.print("only in one build" if not (diff.sha256_a and diff.sha256_b)
                      else "differs (diffoscope not run)")
            continue
        con.print(plain(diff.diffoscope.excerpt.rstrip()), markup=False, highlight=False)
        if root is not None:
            reports = [str(root / p) for p in (diff.diffoscope.html, diff.diffoscope.text) if p]
            if reports:
                con.print(f"[dim]full report: {escape('  '.join(reports))}[/dim]",
                          highlight=False)
    explanation = report.explanation
    if explanation is not None:
        extra = len(explanation.builds)
        if explanation.status == "skipped":
            con.print(f"[yellow]explanation skipped:[/yellow] {escape(explanation.reason or '')}"
                      " (raise --explain-budget, or --no-explain)", highlight=False)
        else:
            con.print(f"[dim]explained with {extra} extra build{'s' if extra != 1 else ''} in "
                      f"{explanation.seconds:.1f}s (at most {explanation.bound}; budget "
                      f"{escape(explanation.budget)})"
                      + (f" — {escape(explanation.reason)}" if explanation.reason else "")
                      + "[/dim]", highlight=False)


def _causes(report: Report) -> str:
    """``embedded timestamp (clock), archive metadata (umask, user)``."""
    culprits: dict[str, dict[str, None]] = {}
    for finding in (f for d in report.differences for f in d.findings):
        names = culprits.setdefault(finding.label, {})
        for name in finding.culprits or ("nondeterministic",):
            names[name] = None
    return ", ".join(f"{label} ({', '.join(names)})" for label, names in culprits.items())


def recap(report: Report) -> str:
    """The last line of a summary: the verdict, the counts, the causes, where the evidence
    is (markup escaped; text from the build made plain)."""
    style = _VERDICT_STYLE[report.verdict]
    parts = [f"[{style}]{report.verdict.value.upper()}[/{style}]"]
    outputs = {o.path for b in report.builds for o in b.outputs}
    if report.differences:
        total = len(outputs | {d.path for d in report.differences})
        parts.append(f"{len(report.differences)} of {total} artifact(s) differ")
        causes = _causes(report)
        if causes:
            parts.append(f"causes: {escape(causes)}")
        elif report.explanation is None:
            parts.append("causes not explained (--explain)")
    elif report.verdict is Verdict.REPRODUCIBLE:
        parts.append(f"{len(outputs)} artifact(s) identical")
    elif report.message and not report.egress:
        text = plain(report.message)
        parts.append(escape(text if len(text) <= 120 else text[:119] + "…"))
    if report.egress:
        where = destinations(a for a in report.egress if a.kind != "dropped")
        parts.append(f"{len(report.egress)} network attempt(s) to {len(where)} "
                     "destination(s)")
    parts.append(f"{report.timings.get('total_s', 0):.1f}s")
    if report.out_dir and report.builds:
        parts.append(f"evidence: {escape(str(Path(report.out_dir) / 'summary.md'))}")
    return " · ".join(parts)

