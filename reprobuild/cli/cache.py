"""``reprobuild cache info`` and ``reprobuild cache prune``: what reprobuild keeps on this
machine (dependency cache, image downloads, evidence of past runs) and removing the old."""

from __future__ import annotations

from typing import Annotated

import typer

from reprobuild import images
from reprobuild.cli.console import escape, out, table

__all__ = ["cache_app"]

cache_app = typer.Typer(no_args_is_help=True,
                        help="What reprobuild keeps on this machine, and pruning it.")


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


@cache_app.command("info")
def cache_info() -> None:
    """Show what the cache and the kept evidence directories hold."""
    from reprobuild.pipeline.cache import usage  # noqa: PLC0415 - only this command

    grid = table()
    for column in ("what", "items", "size", "where"):
        grid.add_column(column, overflow="fold")
    found = usage(images.cache_root())
    for item in found:
        grid.add_row(item.what, str(item.items), _size(item.bytes), escape(str(item.where)))
    out.print(grid)
    out.print(f"total {_size(sum(item.bytes for item in found))}")


@cache_app.command("prune")
def cache_prune(
    unused_for: Annotated[str, typer.Option(
        help="remove dependency archives and source repositories unused for this long "
             "('30d', '12h', '0': all)")]
    = "30d",
    max_size: Annotated[str | None, typer.Option(
        help="then remove the least recently used until the dependency cache fits ('2G')")]
    = None,
    evidence_older_than: Annotated[str, typer.Option(
        help="remove kept evidence of runs without --out older than this (never younger "
             "than an hour: a check may still be running)")] = "7d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would go")] = False,
) -> None:
    """Remove old dependency archives, the files only they used, and old evidence."""
    from reprobuild.pipeline.cache import parse_duration, parse_size, prune  # noqa: PLC0415

    result = prune(images.cache_root(),
                   unused_for_s=parse_duration(unused_for, option="--unused-for"),
                   max_bytes=parse_size(max_size, option="--max-size") if max_size else None,
                   evidence_older_than_s=parse_duration(evidence_older_than,
                                                        option="--evidence-older-than"),
                   dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {result.deps_keys} dependency archive(s), {result.blobs} file(s) only "
              f"they used, {result.evidence_dirs} evidence director(ies), "
              f"{result.scratch_dirs} scratch director(ies), {result.repositories} source "
              f"repositor(ies): {_size(result.freed_bytes)}")
    if result.busy_keys:
        out.print(f"left {result.busy_keys} archive(s) or repositor(ies) a running run holds")
