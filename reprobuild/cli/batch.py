"""``reprobuild batch`` and ``reprobuild merge``: many targets, for nightly CI jobs.

A terminal gets a live table (one line per running target with its phase and elapsed
time); a CI log gets one plain line per phase change. Both end with the summary table.
The exit code is the most severe target's (:data:`reprobuild.pipeline.batch.SEVERITY`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from reprobuild.cli.check import check_report_files, emit, stdout_taken, step_summary
from reprobuild.cli.console import err, escape, out, table
from reprobuild.errors import InputError
from reprobuild.recipes import check_number

# The batch machinery (subprocess pool, history, report merging) is imported by the
# commands that use it, not on every start of the tool.

__all__ = ["batch", "history_app", "merge"]

history_app = typer.Typer(no_args_is_help=True, help="What batch runs recorded with --history.")

_MAX_JOBS = 256
"""Each target runs two builds at once; more than this is a typo, not a machine."""

_STYLE = {"reproducible": "green", "repacked": "cyan", "unreproducible": "red",
          "egress": "bold red", "build-failed": "yellow", "error": "magenta"}


class _Display:
    """What every target is doing, shown live (terminal) or line by line (a CI log)."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.lock = threading.Lock()
        self.state: dict[str, tuple[str, float]] = {}
        self.started = time.monotonic()
        self._live: Any = None

    def __enter__(self) -> _Display:
        if self.live:
            from rich.live import Live  # noqa: PLC0415 - only on a terminal

            # get_renderable: every refresh redraws the table, so elapsed times tick.
            self._live = Live(console=err.real(), refresh_per_second=2, transient=True,
                              get_renderable=self._table)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def _table(self) -> Any:
        grid = table()
        for column in ("target", "phase", "elapsed"):
            grid.add_column(column)
        now = time.monotonic()
        for name, (phase, since) in list(self.state.items()):  # the refresh thread reads
            if phase == "queued" or phase.startswith("done"):
                continue
            grid.add_row(escape(name), escape(phase), f"{now - since:.0f}s")
        return grid

    def update(self, name: str, phase: str) -> None:
        with self.lock:
            since = self.state.get(name, (phase, time.monotonic()))[1]
            if phase == "queued" or name not in self.state or self.state[name][0] == "queued":
                since = time.monotonic()
            self.state[name] = (phase, since)
            if self._live is None and phase != "queued":
                err.print(f"[{time.monotonic() - self.started:7.1f}s] {escape(name)}: "
                          f"{escape(phase)}", highlight=False, soft_wrap=True)


def _summary(data: dict[str, Any], to_stderr: bool) -> None:
    con = err if to_stderr else out
    grid = table()
    for column in ("target", "verdict", "exit", "time", "shard"):
        grid.add_column(column)
    for target in data["targets"]:
        verdict = str(target.get("verdict", "error"))
        style = _STYLE.get(verdict, "white")
        grid.add_row(escape(target["name"]), f"[{style}]{escape(verdict)}[/{style}]",
                     str(target["exit_code"]), f"{float(target.get('seconds', 0)):.0f}s",
                     str(target.get("shard", "")))
    con.print(grid)
    for entry in data.get("history", []):
        if entry["change"]:
            con.print(f"[bold]{escape(entry['name'])}[/bold]: {escape(entry['change'])}")
    con.print(f"{len(data['targets'])} target(s) in {float(data.get('seconds', 0)):.0f}s, "
              f"exit {data['exit_code']}")


def _record_history(root: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare every target with its last record, then append the new ones."""
    from reprobuild.pipeline import history  # noqa: PLC0415 - see the imports

    now = time.time()
    root.mkdir(parents=True, exist_ok=True)  # a CI cache saves the path even for no targets
    entries = []
    for target in data["targets"]:
        past = history.load(root, target["name"])
        record = history.record_of(target, now)
        said = history.changes(past[-1] if past else None, record)
        entries.append({"name": target["name"], "change": "; ".join(said),
                        "previous": past[-1].verdict if past else None,
                        "previous_time": past[-1].time if past else None})
        history.append(root, record)
    return entries


def _write_reports(data: dict[str, Any], files: dict[str, Path | None]) -> None:
    from reprobuild.report import batch as batch_report  # noqa: PLC0415 - see the imports

    for name, path in files.items():
        if path is not None:
            emit(batch_report.FORMATS[name](data), path)
    step_summary(batch_report.render_markdown(data))


def batch(
    file: Annotated[Path, typer.Argument(help="batch file: [[target]] tables (see README)",
                                         exists=True, dir_okay=False)],
    jobs: Annotated[int | None, typer.Option(
        help="targets at once [default: one per 2 CPUs, at most one per 4 GiB of memory]")]
    = None,
    shard: Annotated[str | None, typer.Option(
        help="run only shard I of N (I/N), for a CI matrix; merge the shards' --json with "
             "'reprobuild merge'")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="batch JSON here")] = None,
    junit: Annotated[Path | None, typer.Option(help="JUnit XML, one suite per target")] = None,
    sarif: Annotated[Path | None, typer.Option(help="SARIF 2.1.0, one run per target")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Markdown summary")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="keep each target's reports and evidence in DIR/<name>",
        file_okay=False)] = None,
    history_dir: Annotated[Path | None, typer.Option(
        "--history", help="append one record per target to this directory (keep it in a CI "
                          "cache) and report regressions, fixes, new egress, changed "
                          "toolchains and pins", file_okay=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, no summary")] = False,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Check every target of a batch file, a bounded number at a time."""
    del debug
    from reprobuild.pipeline.batch import (  # noqa: PLC0415 - see the imports
        default_jobs,
        load_batch,
        parse_shard,
        run_batch,
        select_shard,
    )

    files = {"json": json_file, "junit": junit, "sarif": sarif, "markdown": markdown}
    check_report_files(files)
    targets = load_batch(file)
    chosen = parse_shard(shard) if shard else None
    selected = select_shard(targets, chosen)
    workers = default_jobs() if jobs is None else int(check_number(
        jobs, name="--jobs", maximum=_MAX_JOBS, unit="targets at once", whole=True))
    label = f"{chosen[0]}/{chosen[1]}" if chosen else "all"
    with _Display(live=not quiet and err.is_terminal) as display:
        result = run_batch(
            selected, batch=str(file), jobs=workers, shard=label, out=out_dir,
            on_progress=display.update if not quiet else (lambda _n, _p: None),
            host={"hostname": socket.gethostname()})
    data = result.to_dict()
    if history_dir is not None:
        data["history"] = _record_history(history_dir, data)
    _write_reports(data, files)
    if not quiet:
        _summary(data, to_stderr=stdout_taken(files))
    raise typer.Exit(data["exit_code"])


def merge(
    reports: Annotated[list[Path], typer.Argument(help="batch JSON reports of the shards",
                                                  exists=True, dir_okay=False)],
    json_file: Annotated[Path | None, typer.Option("--json", help="merged JSON here")] = None,
    junit: Annotated[Path | None, typer.Option(help="merged JUnit XML")] = None,
    sarif: Annotated[Path | None, typer.Option(help="merged SARIF 2.1.0")] = None,
    markdown: Annotated[Path | None, typer.Option(help="merged Markdown summary")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no summary")] = False,
) -> None:
    """Combine the batch reports of several shards into one (JSON, JUnit, SARIF, Markdown)."""
    from reprobuild.pipeline.batch import combined_exit  # noqa: PLC0415 - see the imports
    from reprobuild.report import batch as batch_report  # noqa: PLC0415

    files = {"json": json_file, "junit": junit, "sarif": sarif, "markdown": markdown}
    check_report_files(files)
    loaded = []
    for path in reports:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{path}: not a readable batch report: {exc}",
                             "pass the --json files that 'reprobuild batch' wrote") from exc
        if not isinstance(data, dict) or data.get("schema") != "reprobuild.batch/v1":
            raise InputError(f"{path} is not a batch report (schema reprobuild.batch/v1)",
                             "pass the --json files that 'reprobuild batch' wrote")
        loaded.append(data)
    try:
        merged = batch_report.merge(loaded, combined_exit=combined_exit)
    except ValueError as exc:
        raise InputError(str(exc), "merge each shard's report once") from exc
    _write_reports(merged, files)
    if not quiet:
        _summary(merged, to_stderr=stdout_taken(files))
    raise typer.Exit(merged["exit_code"])



@history_app.command("show")
def history_show(
    directory: Annotated[Path, typer.Argument(help="the --history directory", file_okay=False)],
    targets: Annotated[list[str] | None, typer.Argument(help="targets (default: all)")] = None,
) -> None:
    """Each target's timeline: one row per run, what changed from the run before."""
    from reprobuild.pipeline import history  # noqa: PLC0415 - see the imports

    found = history.timeline(directory, targets)
    for name, records in found.items():
        grid = table()
        for column in ("when (UTC)", "verdict", "exit", "commit", "change"):
            grid.add_column(column, overflow="fold")
        previous = None
        for record in records:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(record.time))
            change = "; ".join(history.changes(previous, record))
            style = _STYLE.get(record.verdict, "white")
            grid.add_row(when, f"[{style}]{escape(record.verdict)}[/{style}]",
                         str(record.exit_code), escape((record.commit or "")[:12]),
                         escape(change))
            previous = record
        out.print(f"[bold]{escape(name)}[/bold] ({len(records)} run(s))")
        out.print(grid)
