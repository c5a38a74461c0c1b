"""The command line: a thin Typer layer over the core.

This is the only module that prints or exits. Results go to stdout (a summary a person
can read, or nothing with ``--quiet``); progress and errors go to stderr. Every
:class:`~reprobuild.errors.ReprobuildError` becomes one line, a hint and its exit code;
a traceback only with ``--debug``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reprobuild import __version__, images, recipes
from reprobuild.check import CheckOptions, run_check
from reprobuild.engine import connect
from reprobuild.errors import ExitCode, InputError, ReprobuildError
from reprobuild.report import (
    Report,
    Verdict,
    error_dict,
    to_dict,
    to_junit,
    to_sarif,
    write_json_atomic,
    write_text_atomic,
)
from reprobuild.variations import DESCRIPTIONS, Variation, parse_variations, plan_pair

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Rebuild an MCP server twice in hardened, network-isolated containers "
                       "and explain every difference.")
recipes_app = typer.Typer(no_args_is_help=True, help="Build recipes per ecosystem.")
images_app = typer.Typer(no_args_is_help=True, help="Pinned toolchain images.")
app.add_typer(recipes_app, name="recipes")
app.add_typer(images_app, name="images")

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class _LazyConsole:
    """A rich Console made on first use: a quiet run (CI with --json) never imports rich,
    which is a sixth of the start-up."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415 - lazy, see class doc

            stream = sys.stderr if self._stderr else sys.stdout
            # Wide enough for artifact names and digests in a file or a CI log.
            self._console = Console(stderr=self._stderr, highlight=False,
                                    width=None if stream.isatty() else 140)
        return getattr(self._console, name)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


def escape(text: str) -> str:
    """Rich markup escaping, imported when something is printed."""
    from rich.markup import escape as rich_escape  # noqa: PLC0415 - lazy

    return rich_escape(text)


def _table() -> Table:
    from rich.table import Table  # noqa: PLC0415 - lazy

    return Table(show_edge=False, header_style="bold")

_VERDICT_STYLE = {
    Verdict.REPRODUCIBLE: "bold green",
    Verdict.UNREPRODUCIBLE: "bold red",
    Verdict.EGRESS: "bold magenta",
    Verdict.BUILD_FAILED: "bold yellow",
    Verdict.ERROR: "bold red",
}


class RichProgress:
    """Progress observer: a spinner for the current step, a line per detail (stderr)."""

    def __init__(self, console: _LazyConsole, enabled: bool) -> None:
        self._console = console
        self._enabled = enabled
        self._status: Any = None

    def __enter__(self) -> RichProgress:
        if self._enabled:
            self._status = self._console.status("starting")
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)

    def step(self, message: str) -> None:
        """Show the new phase on the spinner."""
        if self._status is not None:
            self._status.update(message)

    def detail(self, message: str) -> None:
        """Print one line of detail above the spinner."""
        if self._enabled:
            self._console.print(f"  [dim]{message}[/dim]")


@app.command()
def check(
    source: Annotated[str, typer.Argument(help="git URL, local git repository, or directory")],
    ref: Annotated[str | None, typer.Option(help="branch, tag or commit (default: HEAD)")] = None,
    subdir: Annotated[str | None, typer.Option(help="project directory inside a monorepo")] = None,
    recipe: Annotated[str | None, typer.Option(help="recipe name (default: detect)")] = None,
    variations: Annotated[str, typer.Option(
        help="what build B varies: 'all', 'none', or a list like 'hostname,clock' or "
             "'all,-cpus' (see 'reprobuild variations')")] = "all",
    timeout: Annotated[float | None, typer.Option(
        help="wall-clock seconds per build [default: recipe's, else 1800]", min=1)] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="write the JSON report here",
                                                   dir_okay=False)] = None,
    junit_file: Annotated[Path | None, typer.Option(
        "--junit", help="write a JUnit XML summary here (for CI dashboards)",
        dir_okay=False)] = None,
    sarif_file: Annotated[Path | None, typer.Option(
        "--sarif", help="write a SARIF 2.1.0 log here (for code-scanning dashboards)",
        dir_okay=False)] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="keep reports, logs, diffoscope output and both builds' artifacts here "
                      "(must not exist or be empty)", file_okay=False)] = None,
    ca_cert: Annotated[Path | None, typer.Option(
        help="PEM CA bundle handed to the fetch phase (and registry image steps) only, for "
             "registries behind an intercepting proxy", envvar="REPROBUILD_CA_CERT",
        exists=True, dir_okay=False)] = None,
    no_diffoscope: Annotated[bool, typer.Option(
        "--no-diffoscope", help="report differing hashes without explaining them")] = False,
    no_trap: Annotated[bool, typer.Option(
        "--no-trap", help="block the network without recording attempts (for measuring "
                          "the trap's cost; never for real checks)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, no summary")] = False,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Build SOURCE twice in different environments and compare the outputs bit for bit."""
    options = CheckOptions(
        source=source, ref=ref, subdir=subdir, recipe=recipe,
        variations=parse_variations(variations), timeout_s=timeout, out_dir=out_dir,
        ca_cert=ca_cert, diffoscope=not no_diffoscope, trap=not no_trap)
    try:
        with RichProgress(err, enabled=not quiet and err.is_terminal) as progress:
            report = run_check(options, progress)
    except ReprobuildError as exc:
        if json_file is not None:
            write_json_atomic(error_dict(exc.message, int(exc.exit_code)), json_file)
        raise
    if json_file is not None:
        write_json_atomic(to_dict(report), json_file)
    if junit_file is not None:
        write_text_atomic(to_junit(report), junit_file)
    if sarif_file is not None:
        write_json_atomic(to_sarif(report), sarif_file)
    if report.out_dir and out_dir is not None:
        write_json_atomic(to_dict(report), Path(report.out_dir) / "report.json")
    if not quiet:
        _print_summary(report)
    raise typer.Exit(int(report.exit_code))


def _short(digest: str | None) -> str:
    return digest[:16] if digest else "—"


def _print_summary(report: Report) -> None:
    """A person's view: verdict, provenance, one row per artifact, and what differs."""
    style = _VERDICT_STYLE[report.verdict]
    out.print(f"[{style}]{report.verdict.value.upper()}[/{style}]  "
              f"(exit {int(report.exit_code)})" + (f" — {escape(report.message)}"
                                                   if report.message else ""))
    src = report.source
    where = escape(src.url + (f" [{src.subdir}]" if src.subdir else ""))
    commit = src.commit[:12] if src.commit else "working directory"
    out.print(f"source     {where} @ {commit}  tree {_short(src.tree_sha256)}")
    out.print(f"recipe     {escape(report.recipe.name)} ({escape(report.recipe.origin)})")
    out.print(f"toolchain  {report.toolchain.image} ({report.toolchain.image_id[:19]})")
    out.print(f"variations {', '.join(report.variations) or 'none'}")
    if report.fetch is not None:
        fetch = report.fetch
        how = "cache hit" if fetch["cache_hit"] else f"{len(fetch['requests'])} request(s)"
        out.print(f"fetch      {fetch['strategy']}: {len(fetch['pins'])} pinned, {how}, "
                  f"{fetch['seconds']:.1f}s" + (f" — failed: {escape(fetch['failure'])}"
                                                 if fetch["failure"] else ""))
    if len(report.builds) != 2:
        for warning in report.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        if report.egress:
            _print_egress(report)
        return
    a, b = report.builds
    out.print(f"builds     A {a.duration_s:.1f}s exit {a.exit_code}"
              f"{' (timed out)' if a.timed_out else ''},  B {b.duration_s:.1f}s exit "
              f"{b.exit_code}{' (timed out)' if b.timed_out else ''},  total "
              f"{report.timings.get('total_s', 0):.1f}s")
    table = _table()
    table.add_column("artifact", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("sha256 A")
    table.add_column("sha256 B")
    table.add_column("")
    by_b = {o.path: o for o in b.outputs}
    paths = sorted({o.path for o in a.outputs} | by_b.keys())
    by_a = {o.path: o for o in a.outputs}
    for path in paths:
        oa, ob = by_a.get(path), by_b.get(path)
        same = oa is not None and ob is not None and oa.sha256 == ob.sha256
        either = oa or ob
        table.add_row(path, str(either.size) if either else "",
                      _short(oa.sha256 if oa else None), _short(ob.sha256 if ob else None),
                      "[green]same[/green]" if same else "[red]DIFFERS[/red]")
    if paths:
        out.print(table)
    for diff in report.differences:
        out.rule(f"[red]{escape(diff.path)}[/red]")
        if diff.diffoscope is None:
            out.print("only in one build" if not (diff.sha256_a and diff.sha256_b)
                      else "differs (diffoscope not run)")
            continue
        out.print(diff.diffoscope.excerpt.rstrip(), markup=False, highlight=False)
        if diff.diffoscope.text and report.out_dir:
            full = escape(str(Path(report.out_dir) / diff.diffoscope.text))
            out.print(f"[dim]full report: {full}[/dim]")
    for build in report.builds:
        if build.timed_out or build.exit_code != 0:
            out.rule(f"[yellow]build {build.name} log (last lines)[/yellow]")
            out.print(build.log_tail, markup=False, highlight=False)
    if report.egress:
        _print_egress(report)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if report.out_dir:
        out.print(f"[dim]results kept in {escape(report.out_dir)}[/dim]")


def _print_egress(report: Report) -> None:
    """The network attempts as a table: evidence of an injected build step."""
    out.rule("[magenta]network attempts (none left the sandbox)[/magenta]")
    table = _table()
    for column in ("build", "protocol", "destination", "name", "detail", "process"):
        table.add_column(column, overflow="fold")
    for attempt in report.egress:
        build = str(attempt["build"]).upper()
        if attempt.get("only_in"):
            build += " only"
        proto = str(attempt["kind"])
        if attempt.get("forged"):
            proto += " (forged)"
        dst = attempt.get("dst") or ""
        if attempt.get("dport") is not None:
            dst = f"[{dst}]:{attempt['dport']}" if ":" in dst else f"{dst}:{attempt['dport']}"
        name = attempt.get("name") or ""
        if attempt.get("qtype"):
            name += f" ({attempt['qtype']})"
        process = ""
        if attempt.get("pid") is not None:
            process = f"{attempt['pid']} {attempt.get('cmdline') or attempt.get('exe') or ''}"
        elif attempt.get("uid") is not None:
            process = f"uid {attempt['uid']}"
        if attempt["kind"] == "dropped":
            name = f"{attempt.get('count')} more not logged (rate limit)"
        table.add_row(*(escape(str(v)) for v in (build, proto, dst, name,
                                                   attempt.get("detail") or "", process)))
    out.print(table)


@app.command("variations")
def list_variations() -> None:
    """Show what build B changes for each variation."""
    a, b = plan_pair(set(Variation), host_cpus=2)
    table = _table()
    table.add_column("variation")
    table.add_column("A vs B")
    for variation in Variation:
        table.add_row(variation.value, DESCRIPTIONS[variation])
    out.print(table)
    del a, b


@recipes_app.command("list")
def recipes_list() -> None:
    """List the built-in recipes."""
    table = _table()
    for column in ("name", "image", "detects", "description"):
        table.add_column(column)
    for name, item in sorted(recipes.builtin_recipes().items()):
        table.add_row(name, item.image, ", ".join(item.detect_files), item.description)
    out.print(table)


@recipes_app.command("show")
def recipes_show(name: Annotated[str, typer.Argument(help="recipe name")]) -> None:
    """Print one recipe as TOML."""
    known = recipes.builtin_recipes()
    if name not in known:
        raise InputError(f"unknown recipe '{name}'",
                         f"known recipes: {', '.join(sorted(known))}")
    out.print(recipes.recipe_to_toml(known[name]), markup=False, highlight=False)


@images_app.command("build")
def images_build(
    names: Annotated[list[str] | None, typer.Argument(help="images to build (default: all)")]
    = None,
    ca_cert: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, envvar="REPROBUILD_CA_CERT",
        help="PEM CA bundle for image steps that reach a registry")] = None,
) -> None:
    """Build (or find cached) toolchain images."""
    client = connect()
    wanted = names or sorted(images.toolchain_names())
    with RichProgress(err, enabled=err.is_terminal) as progress:
        for name in wanted:
            image = images.ensure_image(client, name, progress=progress, ca_cert=ca_cert)
            out.print(f"{name:12} {image.tag}  {image.image_id[:19]}")


@images_app.command("list")
def images_list() -> None:
    """List reprobuild images and whether they match the current definitions."""
    client = connect()
    table = _table()
    for column in ("name", "tag", "id", "size", "current"):
        table.add_column(column)
    for info in images.list_images(client):
        table.add_row(info.name, info.tag, info.image_id[:19], f"{info.size / 1e6:.0f} MB",
                      "yes" if info.current else "no")
    out.print(table)


@images_app.command("prune")
def images_prune(
    all_images: Annotated[bool, typer.Option("--all", help="remove current images too")] = False,
) -> None:
    """Remove reprobuild images that no longer match a definition."""
    client = connect()
    removed = images.prune_images(client, all=all_images)
    for tag in removed:
        out.print(f"removed {tag}")
    if not removed:
        out.print("nothing to remove")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
) -> None:
    """Rebuild an MCP server twice and explain every difference."""
    del debug  # read by main() before Typer runs, so errors in any command honour it


@app.command("version")
def version() -> None:
    """Print the version."""
    out.print(__version__)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, map errors to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        # Standalone mode: Typer handles --help and usage errors itself (exit 2) and
        # always ends with SystemExit carrying the command's code.
        app(args=args, prog_name="reprobuild")
    except ReprobuildError as exc:
        if debug:
            err.print_exception()
        err.print(f"[bold red]error:[/bold red] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err.print(f"[dim]hint: {escape(exc.hint)}[/dim]", highlight=False)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:
        if debug:
            raise
        err.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: "
                  f"{escape(str(exc))}", highlight=False)
        err.print("[dim]hint: rerun with --debug and report the traceback[/dim]")
        sys.exit(int(ExitCode.ENVIRONMENT))
