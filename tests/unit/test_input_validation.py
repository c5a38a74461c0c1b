"""Careless input: every number a user or a file hands in, report paths, ``--out``.

The real CLI in a subprocess for exit codes and messages (on input that fails before any
Docker work), the pure checks directly.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobuild.errors import InputError, RecipeError
from reprobuild.explain.search import parse_budget
from reprobuild.pipeline.batch import load_batch
from reprobuild.recipes import MAX_TIMEOUT_S, check_number, load_recipe_file


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprobuild", *args], cwd=cwd, text=True,
                          capture_output=True, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, an ``error:`` line naming ``words``, no traceback, no usage box."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-5", "1e12"])
@pytest.mark.parametrize("command", ["check", "verify"])
def test_timeout_must_be_finite_positive_and_sane(tmp_path: Path, command: str,
                                                  value: str) -> None:
    # The source is missing too: the option is refused first, before any work.
    result = cli(command, str(tmp_path / "missing"), f"--timeout={value}", cwd=tmp_path)
    one_clear_line(result, "--timeout")
    assert "does not exist" not in result.stderr


@pytest.mark.parametrize("value", ["9" * 400, "9" * 400 + "s", "5000", "100000m"])
def test_explain_budget_refuses_absurd_values(tmp_path: Path, value: str) -> None:
    result = cli("check", str(tmp_path / "missing"), "--explain-budget", value, cwd=tmp_path)
    one_clear_line(result, "--explain-budget")


def test_budget_and_numbers_pure() -> None:
    assert parse_budget("10m").seconds == 600
    with pytest.raises(InputError):
        parse_budget("9" * 400 + "s")  # float() of it is inf
    assert check_number(1.5, name="--x", maximum=10) == 1.5
    for bad in (math.nan, math.inf, -math.inf, 0, -1, 11, True):
        with pytest.raises(InputError, match="--x"):
            check_number(bad, name="--x", maximum=10)
    with pytest.raises(InputError, match="whole"):
        check_number(2.5, name="--x", maximum=10, whole=True)


RECIPE = """schema = 1
[recipe]
extends = "python"
[build]
timeout_s = {value}
"""


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_TIMEOUT_S + 1), "9223372036854775807"])
def test_recipe_timeout_rejects_zero_negative_and_huge(tmp_path: Path, value: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(value=value))
    with pytest.raises(RecipeError, match=r"\[build\]\.timeout_s"):
        load_recipe_file(path)
    # Through the CLI: a repository's own recipe is refused before Docker (exit 2).
    project = tmp_path / "p"
    project.mkdir()
    (project / ".reprobuild.toml").write_text(RECIPE.format(value=value))
    (project / "setup.py").write_text("")
    one_clear_line(cli("check", str(project), cwd=tmp_path), "timeout_s")


BATCH = """[[target]]
name = "a"
source = "/nowhere"
{line}
"""


@pytest.mark.parametrize(("line", "key"), [
    ("timeout = nan", "timeout"), ("timeout = inf", "timeout"), ("timeout = 0", "timeout"),
    ("timeout = -3.5", "timeout"), ("timeout = 1e300", "timeout"),
    ('explain_budget = "1e3"', "explain_budget"), ("explain_budget = 0", "explain_budget"),
    ("explain_budget = 100000", "explain_budget"),
])
def test_batch_file_numbers_are_checked_when_loading(tmp_path: Path, line: str,
                                                     key: str) -> None:
    path = tmp_path / "b.toml"
    path.write_text(BATCH.format(line=line))
    with pytest.raises(InputError, match=key):
        load_batch(path)
    one_clear_line(cli("batch", str(path), cwd=tmp_path), key, "target 1")


@pytest.mark.parametrize("value", ["0", "-1", "100000"])
def test_batch_jobs_is_bounded(tmp_path: Path, value: str) -> None:
    path = tmp_path / "b.toml"
    path.write_text(BATCH.format(line=""))
    one_clear_line(cli("batch", str(path), f"--jobs={value}", cwd=tmp_path), "--jobs")
