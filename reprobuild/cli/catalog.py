"""The catalogue commands: what reprobuild varies, its recipes and its toolchain images.

The image commands import the Docker side (:mod:`reprobuild.images.build`) when they run,
so loading the CLI for any other command never pays for the Docker SDK.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reprobuild import images, recipes
from reprobuild.cli.console import RichProgress, err, out, table
from reprobuild.errors import InputError
from reprobuild.variations import DESCRIPTIONS, Variation

__all__ = ["images_app", "list_variations", "recipes_app"]

recipes_app = typer.Typer(no_args_is_help=True, help="Build recipes per ecosystem.")
images_app = typer.Typer(no_args_is_help=True, help="Pinned toolchain images.")


def list_variations() -> None:
    """Show what build B changes for each variation."""
    grid = table()
    grid.add_column("variation")
    grid.add_column("A vs B")
    for variation in Variation:
        grid.add_row(variation.value, DESCRIPTIONS[variation])
    out.print(grid)


@recipes_app.command("list")
def recipes_list() -> None:
    """List the built-in recipes."""
    grid = table()
    for column in ("name", "image", "detects", "description"):
        grid.add_column(column)
    for name, item in sorted(recipes.builtin_recipes().items()):
        grid.add_row(name, item.image, ", ".join(item.detect_files), item.description)
    out.print(grid)


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
    jobs: Annotated[int | None, typer.Option(
        min=1, help="images built at the same time (default: one per CPU, at most 3)")]
    = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="no progress on stderr, only the images on stdout")] = False,
) -> None:
    """Build (or find cached) toolchain images, independent ones at the same time."""
    from reprobuild.images import build  # noqa: PLC0415 - lazy, see the module docstring
    from reprobuild.sandbox.engine import connect  # noqa: PLC0415

    client = connect()
    wanted = names or sorted(images.toolchain_names())
    with RichProgress(err, enabled=not quiet) as progress:
        # A live status on a terminal; off one, a summary line every 10 s is enough.
        found = build.ensure_images(client, wanted, progress=progress, ca_cert=ca_cert,
                                    jobs=jobs, heartbeat_s=1.0 if err.is_terminal else 10.0)
    for name in dict.fromkeys(wanted):
        image = found.images[name]
        out.print(f"{name:12} {image.tag}  {image.image_id[:19]}")
    if found.built and not quiet:
        slowest = max(t.waited_s + t.build_s for t in found.built)
        err.print(f"built {len(found.built)} images in {slowest:.0f} s", highlight=False)


@images_app.command("list")
def images_list() -> None:
    """List reprobuild images and whether they match the current definitions."""
    from reprobuild.images import build  # noqa: PLC0415 - lazy, see the module docstring
    from reprobuild.sandbox.engine import connect  # noqa: PLC0415

    client = connect()
    grid = table()
    for column in ("name", "tag", "id", "size", "current"):
        grid.add_column(column)
    for info in build.list_images(client):
        grid.add_row(info.name, info.tag, info.image_id[:19], f"{info.size / 1e6:.0f} MB",
                     "yes" if info.current else "no")
    out.print(grid)


@images_app.command("prune")
def images_prune(
    all_images: Annotated[bool, typer.Option("--all", help="remove current images too")] = False,
) -> None:
    """Remove reprobuild images that no longer match a definition."""
    from reprobuild.images import build  # noqa: PLC0415 - lazy, see the module docstring
    from reprobuild.sandbox.engine import connect  # noqa: PLC0415

    client = connect()
    removed = build.prune_images(client, all=all_images)
    for tag in removed:
        out.print(f"removed {tag}")
    if not removed:
        out.print("nothing to remove")
