"""The pure parts of benchmarks/bench_reprotest.py: round order, figures, the table and the
tsconfig inlining (the timed runs themselves are the benchmark, not a test)."""

from __future__ import annotations

from benchmarks.bench_reprotest import (
    CONFIGS,
    Run,
    format_table,
    paired,
    rotation,
    spread,
    successful,
    summarize,
)


def test_rotation_puts_every_configuration_first_once_per_cycle() -> None:
    orders = [rotation(CONFIGS, r) for r in range(len(CONFIGS))]
    assert [o[0] for o in orders] == list(CONFIGS)
    assert all(sorted(o) == sorted(CONFIGS) for o in orders)
    assert rotation(CONFIGS, len(CONFIGS)) == rotation(CONFIGS, 0)
    assert rotation((), 3) == ()


def test_spread_is_median_and_range_and_none_when_empty() -> None:
    s = spread([3.0, 1.0, 2.0, 10.0])
    assert s is not None
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert spread([]) is None


def test_paired_uses_only_rounds_where_both_succeeded() -> None:
    a = {1: 2.0, 2: 3.0, 4: 1.0}
    b = {1: 4.0, 3: 1.0, 4: 2.0}
    assert paired(a, b, ratio=True) == [0.5, 0.5]
    assert paired(a, b, ratio=False) == [-2.0, -1.0]


def _runs() -> list[Run]:
    runs = []
    for r in range(4):  # round 0 is the warm-up
        runs += [Run("p", "check", r, 1.0 + r, 0, True),
                 Run("p", "reprotest", r, 4.0, 0, True),
                 Run("p", "bare-pair", r, 0.5, 0, True)]
        ok = r != 2
        runs.append(Run("p", "reprotest-pre", r, 2.0, 0 if ok else 1, ok,
                        "" if ok else "outputs differ\nlog"))
    runs.append(Run("other", "check", 1, 99.0, 0, True))
    return runs


def test_summarize_excludes_the_warm_up_and_failed_runs_from_the_figures() -> None:
    s = summarize("p", _runs())
    mine = [r for r in _runs() if r.project == "p"]
    assert successful(mine, "check") == {1: 2.0, 2: 3.0, 3: 4.0}
    check = s.configs["check"]
    assert check is not None and (check.median, check.n) == (3.0, 3)
    pre = s.configs["reprotest-pre"]
    assert pre is not None and pre.n == 2
    assert [r.round for r in s.failures["reprotest-pre"]] == [2]
    assert s.measured["reprotest-pre"] == 3
    assert s.ratio_same is not None and s.ratio_same.median == 0.75
    assert s.ratio_pre is not None and (s.ratio_pre.low, s.ratio_pre.high) == (1.0, 2.0)
    assert s.overhead_s is not None and s.overhead_s.median == 2.5
    assert s.overhead_x is not None and s.overhead_x.median == 6.0
    assert s.as_dict()["configs"]["reprotest-pre"]["failed"][0]["exit_code"] == 1


def test_summarize_without_successes_reports_nothing_to_pair() -> None:
    runs = [Run("p", c, r, 1.0, 2, False, "boom") for r in (0, 1) for c in CONFIGS]
    s = summarize("p", runs)
    assert all(v is None for v in s.configs.values())
    assert s.ratio_same is None and s.overhead_s is None


def test_table_names_each_failure_and_shows_n_a_for_missing_figures() -> None:
    text = format_table([summarize("p", _runs())])
    assert "reprotest, preinstalled" in text and "2/3" in text
    assert "round 2: exit 1 outputs differ" in text
    assert "0.75x" in text and "+2.50s" in text
    empty = format_table([summarize("p", [Run("p", "check", 1, 1.0, 4, False, "x")])])
    assert "n/a" in empty and "0/1" in empty
