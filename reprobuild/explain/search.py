"""Which variation made a difference: adaptive group testing over build B's variations.

Build B changed every selected variation at once, so a difference between A and B says
*that* the environment leaks into the artifacts, not *which part*. Rebuilding with one
variation at a time (reprotest's ``--auto-build``) costs one build per variation; here a
difference is chased down a binary tree of variation groups instead: a group whose build
shows a difference is split in two and both halves are rebuilt, a group that shows none is
dropped. ``k`` culprits among ``n`` variations cost at most ``2·k·⌈log₂ n⌉`` builds, and
every round's builds are independent, so they run concurrently.

Two refinements make the common case cheaper and the answer more honest:

- **Suspects first.** What a difference looks like often names its cause (modes that
  follow the umask, build B's own user name or path in the bytes): each suspect is tested
  alone in the first round, beside one build with all the other variations, which must then
  show nothing. A right guess costs one build; a wrong one, one build more.
- **A control build.** The first round also rebuilds A's own environment. A difference that
  appears between two identical environments is not any variation's doing: it is the time
  of the build or nondeterminism, and it is left out of the search (every build would show
  it).

The search sees *symptoms* (hashable keys: which member of which artifact differs, and
how), so one round of builds answers for all of them at once. Nothing here runs a build:
:class:`GroupSearch` proposes rounds and is told what each build showed, which makes the
strategy unit-testable against a model of a build (``tests/unit/test_explain.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from reprobuild.errors import InputError
from reprobuild.variations import Variation, in_order

__all__ = ["DEFAULT_BUDGET", "Attribution", "AttributionKind", "Budget", "GroupSearch", "Test",
           "bound", "parse_budget"]

S = TypeVar("S", bound=Hashable)


class AttributionKind(str, Enum):
    """How a symptom's cause was decided."""

    VARIATION = "variation"
    """Each culprit alone makes the difference (a build with only it shows it)."""
    TOGETHER = "together"
    """Only the culprits combined make it (no smaller group's build showed it)."""
    UNSTABLE = "unstable"
    """It differs between two builds with identical environments (the control)."""
    UNDECIDED = "undecided"
    """The budget ran out, or a build failed, before the group was narrowed down."""


@dataclass(frozen=True)
class Attribution:
    """What caused one symptom, and the builds that show it."""

    kind: AttributionKind
    culprits: tuple[Variation, ...]
    """For ``undecided``: the culprit is one (or more) of these."""
    evidence: tuple[str, ...]
    """Names of the builds whose result decided it (build B is ``b``)."""


@dataclass(frozen=True)
class Test:
    """One build of the search: its name and the variations it changes."""

    name: str
    group: frozenset[Variation]
    round: int

    @property
    def is_control(self) -> bool:
        return not self.group


@dataclass(frozen=True)
class Budget:
    """How much the explanation may spend: a number of extra builds, or wall-clock seconds
    (a round that would not fit is cut to the builds that do)."""

    builds: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        if self.builds is not None:
            return f"{self.builds} build{'s' if self.builds != 1 else ''}"
        return f"{self.seconds:g}s"


DEFAULT_BUDGET = Budget(seconds=900.0)
"""Fifteen minutes: a Python or Node server's explanation takes well under one."""

_MAX_BUDGET_BUILDS = 1000
_MAX_BUDGET_S = 7 * 24 * 3600.0
"""Absurd budgets (and ``1e400``, which reads as infinity) are typos, not plans."""
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(builds?|s|sec|m|min)?\s*$")


def parse_budget(text: str) -> Budget:
    """``--explain-budget``: ``8`` or ``8 builds`` (extra builds), ``600s`` or ``10m``."""
    match = _BUDGET.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise InputError(f"--explain-budget {text!r} is not a number of builds or a time",
                         "use e.g. '8' (extra builds), '600s' or '10m'")
    number, unit = float(match.group(1)), match.group(2) or "builds"
    if unit.startswith("build"):
        if not number.is_integer():
            raise InputError(f"--explain-budget {text!r}: a number of builds is whole",
                             "use e.g. '8', '600s' or '10m'")
        if number > _MAX_BUDGET_BUILDS:
            raise InputError(f"--explain-budget {text!r} is more than {_MAX_BUDGET_BUILDS} "
                             "builds", "use e.g. '8', '600s' or '10m'")
        return Budget(builds=int(number))
    seconds = number * (60 if unit.startswith("m") else 1)
    if not math.isfinite(seconds) or seconds > _MAX_BUDGET_S:
        raise InputError(f"--explain-budget {text!r} is more than a week",
                         "use e.g. '8', '600s' or '10m'")
    return Budget(seconds=seconds)


def _halves(group: frozenset[Variation]) -> tuple[frozenset[Variation], frozenset[Variation]]:
    ordered = in_order(group)
    middle = math.ceil(len(ordered) / 2)
    return frozenset(ordered[:middle]), frozenset(ordered[middle:])


def bound(varied: int, suspects: int, culprits: int) -> int:
    """The most builds a search of ``varied`` variations can take, with ``suspects`` tested
    alone first, when ``culprits`` of them cause differences (each alone): the control, the
    first round, then two builds per level of the tree for each culprit."""
    if varied <= 1:
        return 1
    k = max(culprits, 1)
    if suspects:
        rest = varied - suspects
        below = 2 * k * math.ceil(math.log2(rest)) if rest > 1 else 0
        return 1 + suspects + (1 if rest else 0) + below
    return 3 + 2 * k * (math.ceil(math.log2(varied)) - 1)


class GroupSearch(Generic[S]):
    """The search over one pair's symptoms; call :meth:`next_round`, run its tests, report
    each with :meth:`record`, repeat until it returns nothing, then read :meth:`outcome`."""

    def __init__(self, varied: Sequence[Variation], symptoms: Iterable[S],
                 suspects: Iterable[Variation] = ()) -> None:
        self.varied = frozenset(varied)
        self.symptoms = frozenset(symptoms)
        self.suspects = frozenset(suspects) & self.varied
        self.tests: list[Test] = []
        self._results: dict[frozenset[Variation], frozenset[S] | None] = {}
        self._children: dict[frozenset[Variation], tuple[frozenset[Variation], ...]] = {}
        self._tested: dict[frozenset[Variation], Test] = {}
        self._round = 0
        self._started = False

    # ------------------------------------------------------------------ the rounds

    def _first_round(self) -> list[frozenset[Variation]]:
        root = self.varied
        if len(root) <= 1:
            kids: tuple[frozenset[Variation], ...] = ()
        elif self.suspects:
            rest = root - self.suspects
            kids = (*(frozenset({v}) for v in in_order(self.suspects)),
                    *((rest,) if rest else ()))
        else:
            kids = _halves(root)
        self._children[root] = kids
        return [frozenset(), *kids]

    def _live(self, group: frozenset[Variation]) -> frozenset[S]:
        """Symptoms a tested group shows that the control does not explain."""
        found = self._results.get(group)
        if not found:
            return frozenset()
        return (found & self.symptoms) - self.unstable

    @property
    def unstable(self) -> frozenset[S]:
        """Symptoms the control build (A's environment again) shows too."""
        control = self._results.get(frozenset())
        return (control or frozenset()) & self.symptoms

    def next_round(self) -> list[Test]:
        """The builds to run next (concurrently); empty when the search is over."""
        if not self._started:
            self._started = True
            groups = self._first_round()
        else:
            groups = []
            for group, test in self._tested.items():
                if (test.round == self._round and len(group) > 1 and self._live(group)
                        and group not in self._children):
                    self._children[group] = _halves(group)
                    groups.extend(self._children[group])
        self._round += 1
        fresh = []
        for group in groups:
            if group in self._tested:
                continue
            test = Test(name=f"x{len(self.tests) + 1}", group=group, round=self._round)
            self.tests.append(test)
            self._tested[group] = test
            fresh.append(test)
        return fresh

    def record(self, test: Test, found: Iterable[S] | None) -> None:
        """What one build showed (``None``: it failed, or was not run for the budget)."""
        self._results[test.group] = None if found is None else frozenset(found)

    # ------------------------------------------------------------------ the answer

    def _attribute(self, group: frozenset[Variation], symptom: S
                   ) -> list[tuple[AttributionKind, frozenset[Variation], tuple[str, ...]]]:
        kids = self._children.get(group, ())
        test = self._tested.get(group)
        name = test.name if test else "b"
        if not kids:
            if len(group) == 1:
                return [(AttributionKind.VARIATION, group, (name,))]
            return [(AttributionKind.UNDECIDED, group, (name,))]
        positive = [k for k in kids if symptom in self._live(k)]
        if positive:
            return [found for k in positive for found in self._attribute(k, symptom)]
        if any(k not in self._results or self._results[k] is None for k in kids):
            return [(AttributionKind.UNDECIDED, group, (name,))]
        return [(AttributionKind.TOGETHER, group, (name,))]

    def outcome(self) -> dict[S, Attribution]:
        """Every symptom's cause, as far as the builds run decided it."""
        control = self._tested.get(frozenset())
        result: dict[S, Attribution] = {}
        for symptom in self.symptoms:
            if symptom in self.unstable:
                assert control is not None
                result[symptom] = Attribution(AttributionKind.UNSTABLE, (), (control.name,))
                continue
            if len(self.varied) == 1 and control is not None \
                    and self._results.get(frozenset()) is not None:
                # One variation, and A's environment again does not show it: that one.
                result[symptom] = Attribution(AttributionKind.VARIATION,
                                              in_order(self.varied), ("b", control.name))
                continue
            found = self._attribute(self.varied, symptom)
            kinds = {kind for kind, _, _ in found}
            kind = (AttributionKind.UNDECIDED if AttributionKind.UNDECIDED in kinds else
                    AttributionKind.TOGETHER if AttributionKind.TOGETHER in kinds else
                    AttributionKind.VARIATION)
            culprits = in_order(v for _, group, _ in found for v in group)
            evidence = tuple(dict.fromkeys(n for _, _, names in found for n in names))
            result[symptom] = Attribution(kind, culprits, evidence)
        return result
