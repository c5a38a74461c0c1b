"""The ecosystems reprobuild can fetch and build, behind one interface and one registry.

:data:`ECOSYSTEMS` is the only list of ecosystems: recipes validate ``[fetch].strategy``
against it, the fetch phase and the pipeline dispatch through :func:`get`, and the recipe
format's documentation is generated from it. An unknown strategy is an error naming the
known ones, never a fall-through to a default. Adding an ecosystem is a new subpackage
implementing :class:`~reprobuild.ecosystems.interface.Ecosystem` plus one line here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager

from reprobuild.ecosystems import golang, node, python, rust
from reprobuild.ecosystems.interface import NO_FETCH, Ecosystem
from reprobuild.errors import RecipeError

__all__ = ["ECOSYSTEMS", "NO_FETCH", "Ecosystem", "for_image", "get", "registered",
           "release_forms", "strategy_names"]

ECOSYSTEMS: list[Ecosystem] = [python.ECOSYSTEM, node.ECOSYSTEM, node.PNPM, golang.ECOSYSTEM,
                               rust.ECOSYSTEM]
"""Every ecosystem, in the order documentation lists them."""


def strategy_names() -> tuple[str, ...]:
    """Legal ``[fetch].strategy`` values: ``none`` and each ecosystem's."""
    return (NO_FETCH, *(e.strategy for e in ECOSYSTEMS))


def get(strategy: str, *, origin: str = "the recipe") -> Ecosystem:
    """The ecosystem of a fetch strategy; an unknown one is a :class:`RecipeError`."""
    for ecosystem in ECOSYSTEMS:
        if ecosystem.strategy == strategy:
            return ecosystem
    known = [e.strategy for e in ECOSYSTEMS]
    close = difflib.get_close_matches(strategy, known, n=1)
    raise RecipeError(
        f"{origin}: unknown [fetch].strategy {strategy!r}"
        + (f"; did you mean '{close[0]}'?" if close else ""),
        f"known strategies: {', '.join(strategy_names())}")


def release_forms() -> str:
    """How releases are named, every registry's form ("pypi:NAME==VERSION or ...")."""
    forms = (e.releases.spec_form for e in ECOSYSTEMS if e.releases is not None)
    return " or ".join(dict.fromkeys(forms))  # two ecosystems may share one registry


def for_image(image: str) -> Ecosystem | None:
    """The ecosystem that refines a recipe's ``image`` for a project, if any (``node``)."""
    return next((e for e in ECOSYSTEMS if image in e.image_families), None)


@contextmanager
def registered(ecosystem: Ecosystem) -> Iterator[Ecosystem]:
    """Register an extra ecosystem for the duration of a block (plug-ins, tests)."""
    if any(e.strategy == ecosystem.strategy for e in ECOSYSTEMS):
        raise ValueError(f"strategy {ecosystem.strategy!r} is already registered")
    ECOSYSTEMS.append(ecosystem)
    try:
        yield ecosystem
    finally:
        ECOSYSTEMS.remove(ecosystem)
