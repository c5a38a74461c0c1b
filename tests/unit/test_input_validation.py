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


# --------------------------------------------------------------------------- report paths

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/reprobuild-test.sock"}
"""Should a check get past its input checks, it fails to connect instead of building."""


def cli_env(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprobuild", *args], cwd=cwd, text=True,
                          capture_output=True, check=False,
                          env={**os.environ, "COLUMNS": "200", **env})


@pytest.mark.parametrize("option", ["--json", "--junit", "--sarif", "--markdown"])
@pytest.mark.parametrize("where", ["/proc/x/r.out", "/proc/r.out", "missing-dir/r.out"])
def test_a_report_that_cannot_be_written_is_refused_before_any_work(
        tmp_path: Path, option: str, where: str) -> None:
    result = cli_env("check", str(tmp_path / "missing"), option, where, cwd=tmp_path,
                     env=NO_ENGINE)
    one_clear_line(result, option, where)
    assert not (tmp_path / "missing-dir").exists()


def test_batch_and_merge_refuse_unwritable_report_paths_before_running(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(BATCH.format(line=""))
    result = cli_env("batch", str(path), "--json", "/proc/x/b.json", cwd=tmp_path,
                     env=NO_ENGINE)
    one_clear_line(result, "--json", "/proc/x")
    report = tmp_path / "r.json"
    report.write_text("{}")
    one_clear_line(cli_env("merge", str(report), "--sarif", "/proc/x/m.sarif", cwd=tmp_path,
                           env=NO_ENGINE), "--sarif")


def test_verify_refuses_an_attestation_path_it_could_not_write(tmp_path: Path) -> None:
    result = cli_env("verify", str(tmp_path / "missing"), "--attest", "/proc/x/a.json",
                     "--json", "r.json", cwd=tmp_path, env=NO_ENGINE)
    one_clear_line(result, "--attest")
    assert "--attest" in (tmp_path / "r.json").read_text()  # the error report is left


@pytest.mark.skipif(os.geteuid() != 0, reason="making a character device needs root")
def test_devices_and_links_to_them_are_written_through_never_replaced(tmp_path: Path) -> None:
    import stat  # noqa: PLC0415

    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    link = tmp_path / "link"
    link.symlink_to(null)
    result = cli_env("check", str(tmp_path / "missing"), "--json", str(null), "--sarif",
                     str(link), cwd=tmp_path, env=NO_ENGINE)
    assert result.returncode == 2, result.stderr
    assert stat.S_ISCHR(null.lstat().st_mode) and link.is_symlink()
    # /dev/stdout (a link to /proc/self/fd/1, a pipe here) is written through.
    before = os.readlink("/dev/stdout")
    result = cli_env("check", str(tmp_path / "missing"), "--json", "/dev/stdout",
                     cwd=tmp_path, env=NO_ENGINE)
    assert result.returncode == 2 and '"exit_code": 2' in result.stdout
    assert os.readlink("/dev/stdout") == before


# --------------------------------------------------------------------------- --out


def project(tmp_path: Path) -> Path:
    """A project whose recipe is valid (a check of it gets as far as ``--out``)."""
    where = tmp_path / "p"
    where.mkdir()
    (where / ".reprobuild.toml").write_text('schema = 1\n[recipe]\nextends = "python"\n')
    return where


def test_out_that_cannot_be_created_is_exit_2(tmp_path: Path) -> None:
    result = cli_env("check", str(project(tmp_path)), "--out", "/proc/x/out", cwd=tmp_path,
                     env=NO_ENGINE)
    one_clear_line(result, "--out", "/proc/x/out")


def test_out_held_by_another_run_is_refused_at_once(tmp_path: Path) -> None:
    from reprobuild.pipeline.plan import prepare_out_dir  # noqa: PLC0415

    out = tmp_path / "out"
    prepare_out_dir(out)  # this process holds it now, as a running check does
    result = cli_env("check", str(project(tmp_path)), "--out", str(out), cwd=tmp_path,
                     env=NO_ENGINE)
    one_clear_line(result, "--out", "in use by another reprobuild run")
    assert prepare_out_dir(out) == out, "the holder itself may go on"
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- diffoscope


def test_diffoscope_output_names_are_injective_single_components() -> None:
    from reprobuild.compare import output_name  # noqa: PLC0415

    paths = ["sub/x.whl", "sub_x.whl", "sub%2Fx.whl", "sub%x.whl", "a/b/c", "a_b/c", ".",
             "..", "%2E", "x" * 300, "x" * 299 + "y", "x" * 150 + "%h" + "0" * 32,
             "é" * 120 + "/z"]
    names = [output_name(p) for p in paths]
    assert len(set(names)) == len(paths)
    for name in names:
        assert "/" not in name and name not in {".", ".."}
        assert 0 < len(name.encode("utf-8")) <= 200


def test_diffoscope_budget_is_one_account_shared_fairly() -> None:
    from reprobuild.compare import (  # noqa: PLC0415
        MIN_SHARE_BYTES,
        MIN_SHARE_S,
        DiffoscopeBudget,
        DiffoscopeLimits,
    )

    limits = DiffoscopeLimits(timeout_s=600, total_timeout_s=1200,
                              max_report_bytes=20 << 20, total_report_bytes=30 << 20)
    budget = DiffoscopeBudget(limits)
    first = budget.share(3)
    assert first is not None and first.timeout_s == 400 and first.max_report_bytes == 10 << 20
    budget.spend(10, 1 << 20)  # finished early: the rest get more
    second = budget.share(2)
    assert second is not None and second.timeout_s == 595
    budget.spend(595, 0)
    third = budget.share(1)
    assert third is not None and third.timeout_s == 595
    budget.spend(595, 0)
    assert budget.share(1) is None  # spent: named, not compared
    assert budget.not_compared().excerpt.startswith("not compared:")
    # Many artifacts: the first get the smallest useful share, the rest are named.
    many = DiffoscopeBudget(limits)
    compared = 0
    while (share := many.share(10_000 - compared)) is not None:
        assert share.timeout_s >= MIN_SHARE_S and share.max_report_bytes >= MIN_SHARE_BYTES
        many.spend(share.timeout_s, 0)  # every one runs into its deadline
        compared += 1
    assert compared == 1200 // MIN_SHARE_S
    # The report bytes are an account too.
    small = DiffoscopeBudget(DiffoscopeLimits(total_report_bytes=MIN_SHARE_BYTES))
    assert small.share(2) is not None
    small.spend(1, 1)
    assert small.share(1) is None
