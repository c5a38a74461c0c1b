"""The A/B plan: each variation changes exactly its own settings, nothing else."""

from __future__ import annotations

import posixpath
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import pytest

from reprobuild.archive import FileOrder
from reprobuild.errors import InputError
from reprobuild.variations import (
    CLOCK_OFFSET_S,
    DESCRIPTIONS,
    STAGGER_S,
    EnvOrder,
    Variation,
    build_script,
    command_argv,
    command_lines,
    environment,
    expand_variables,
    parse_variations,
    plan_pair,
    unavailable,
)

# The BuildEnv fields each variation is allowed to change.
OWNED = {
    Variation.BUILD_PATH: {"workdir"},
    Variation.HOSTNAME: {"hostname", "domainname"},
    Variation.USER: {"uid", "gid", "user"},
    Variation.UMASK: {"umask"},
    Variation.TIMEZONE: {"timezone"},
    Variation.LOCALE: {"locale"},
    Variation.HOME: {"home"},
    Variation.CLOCK: {"faketime"},
    Variation.CPUS: {"cpuset"},
    Variation.ENV_ORDER: {"env_order"},
    Variation.FILE_ORDER: {"file_order"},
}
# What differs between A and B whatever is selected: B's clock (offset or shifted).
ALWAYS = {"faketime"}


def _changed(selected: set[Variation], **kw: bool) -> set[str]:
    a, b = plan_pair(selected, host_cpus=2, **kw)
    da, db = asdict(a), asdict(b)
    return {k for k in da if da[k] != db[k]} - {"name"}


@pytest.mark.parametrize("variation", list(Variation))
def test_each_variation_changes_only_its_own_fields(variation: Variation) -> None:
    assert _changed({variation}) == OWNED[variation] | ALWAYS


def test_no_variation_means_identical_environments_at_another_second() -> None:
    a, b = plan_pair(set(), host_cpus=2)
    assert _changed(set()) == ALWAYS
    assert (a.faketime, b.faketime) == (None, f"+{CLOCK_OFFSET_S}")
    assert CLOCK_OFFSET_S >= 2, "a second-stamp must differ even when A stamps a second late"


@pytest.mark.parametrize("selected", [set(), {Variation.CLOCK}, set(Variation)])
def test_a_toolchain_past_libfaketime_starts_b_later(selected: set[Variation]) -> None:
    a, b = plan_pair(selected, host_cpus=2, clock_via_libc=False)
    assert (a.start_delay_s, b.start_delay_s) == (0.0, STAGGER_S) and STAGGER_S > 1
    script_b = build_script(b, project_dir="/build/src", commands=["make"], environ=())
    script_a = build_script(a, project_dir="/build/src", commands=["make"], environ=())
    assert f"sleep {STAGGER_S:g}" in script_b and "sleep" not in script_a
    assert script_b.index("sleep") < script_b.index("exec env -i")
    assert plan_pair(selected, host_cpus=2)[1].start_delay_s == 0.0


def test_all_variations_change_everything_owned() -> None:
    assert _changed(set(Variation)) == set().union(*OWNED.values())


def test_every_variation_is_documented() -> None:
    assert set(DESCRIPTIONS) == set(Variation)


def test_cpus_cannot_vary_on_one_cpu() -> None:
    a, b = plan_pair({Variation.CPUS}, host_cpus=1)
    assert a.cpuset == b.cpuset is None
    assert unavailable({Variation.CPUS, Variation.UMASK}, host_cpus=1) == (Variation.CPUS,)
    assert unavailable({Variation.CPUS}, host_cpus=2) == ()


def test_b_values_are_the_documented_ones() -> None:
    a, b = plan_pair(set(Variation), host_cpus=4)
    assert (a.uid, a.user, b.uid, b.user) == (1000, "builder", 2000, "rebuilder")
    assert (a.umask, b.umask) == ("0022", "0002")
    assert (a.timezone, b.timezone) == ("UTC", "Etc/GMT-14")
    assert (a.locale, b.locale) == ("C.UTF-8", "et_EE.UTF-8")
    assert (a.faketime, b.faketime) == (None, "+398d")
    assert (a.cpuset, b.cpuset) == (None, "0")
    assert (a.env_order, b.env_order) == (EnvOrder.SORTED, EnvOrder.REVERSED)
    assert (a.file_order, b.file_order) == (FileOrder.SORTED, FileOrder.REVERSED)
    assert a.workdir != b.workdir and a.home != b.home and a.hostname != b.hostname
    assert a.varied == b.varied == tuple(Variation)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", set(Variation)),
        ("none", set()),
        ("hostname,clock", {Variation.HOSTNAME, Variation.CLOCK}),
        ("all,-cpus", set(Variation) - {Variation.CPUS}),
        ("build-path", {Variation.BUILD_PATH}),
        (" umask , locale ", {Variation.UMASK, Variation.LOCALE}),
    ],
)
def test_parse_variations(text: str, expected: set[Variation]) -> None:
    assert parse_variations(text) == frozenset(expected)


def test_parse_variations_suggests() -> None:
    with pytest.raises(InputError) as info:
        parse_variations("hostnme")
    assert "unknown variation 'hostnme'" in info.value.message
    assert info.value.hint is not None and "did you mean 'hostname'" in info.value.hint


def test_parse_variations_empty() -> None:
    with pytest.raises(InputError):
        parse_variations(" , ")


def test_environment_order_and_faketime() -> None:
    a, b = plan_pair({Variation.ENV_ORDER, Variation.CLOCK}, host_cpus=2)
    env_a = environment(a, path="/usr/bin", out_dir="/out", recipe_env=[("SOURCE_DATE_EPOCH", "1")])
    env_b = environment(b, path="/usr/bin", out_dir="/out", recipe_env=[("SOURCE_DATE_EPOCH", "1")])
    keys_a = [k for k, _ in env_a]
    assert keys_a == sorted(keys_a)
    assert "LD_PRELOAD" not in dict(env_a)
    keys_b = [k for k, _ in env_b]
    assert keys_b == sorted(keys_b, reverse=True)
    assert dict(env_b)["FAKETIME"] == "+398d"
    assert dict(env_b)["LD_PRELOAD"] == "/opt/reprobuild/lib/libfaketime.so.1"
    assert dict(env_a)["SOURCE_DATE_EPOCH"] == "1"


def test_sandbox_values_win_over_recipe_env() -> None:
    a, _ = plan_pair(set(), host_cpus=2)
    env = dict(environment(a, path="/p", out_dir="/out", recipe_env=[("HOME", "/evil")]))
    assert env["HOME"] == a.home


def test_build_script_quotes_everything() -> None:
    a, _ = plan_pair(set(), host_cpus=2)
    env = (("A", "it's $(danger)"), ("B", "2"))
    script = build_script(a, project_dir="/build/src/sub dir", commands=["echo 1", "echo $A"],
                          environ=env)
    lines = script.split("\n")
    assert lines[:3] == ["set -eu", "umask 0022", "tar -x -f - -C /build/src"]
    assert lines[3] == "cd '/build/src/sub dir'"
    assert [shlex.split(line) for line in lines[4:8]] == [
        ["printf", "+ %s\\n", "echo 1", ">&2"],
        ["env", "-i", "--", "A=it's $(danger)", "B=2", "echo", "1"],
        ["printf", "+ %s\\n", "echo $A", ">&2"],
        ["exec", "env", "-i", "--", "A=it's $(danger)", "B=2", "echo", "it's $(danger)"]]
    assert lines[8:] == [""]


def _launch(tmp_path: Path, *commands: str,
            env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The build script's command lines, run by the shell the sandbox runs them with."""
    script = "\n".join(["set -eu", *command_lines(commands, tuple(env.items()))])
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, check=False)


def test_commands_keep_environment_order_for_simple_commands(tmp_path: Path) -> None:
    # Quoted -> goes through the shell, which re-orders; a plain command must not.
    script = tmp_path / "order.py"
    script.write_text("import os\nprint(','.join(k for k in os.environ if len(k) == 1))\n")
    forward = _launch(tmp_path, f"{sys.executable} order.py", env={"Z": "1", "A": "2", "M": "3"})
    backward = _launch(tmp_path, f"{sys.executable} order.py", env={"M": "3", "A": "2", "Z": "1"})
    assert forward.stdout.strip() == "Z,A,M"
    assert backward.stdout.strip() == "M,A,Z"
    # Exactly the planned environment: nothing of the shell's (PWD) or of ours.
    assert _launch(tmp_path, "env", env={"A": "1", "PATH": "/usr/bin:/bin"}).stdout == \
        "A=1\nPATH=/usr/bin:/bin\n"


def test_commands_expand_variables_and_stop_on_failure(tmp_path: Path) -> None:
    env = {"OUT": str(tmp_path / "o u t"), "PATH": "/usr/bin:/bin"}
    result = _launch(tmp_path, 'mkdir "$OUT"', "false", "touch never", env=env)
    assert (tmp_path / "o u t").is_dir()
    assert result.returncode == 1
    assert not (tmp_path / "never").exists()
    assert result.stderr.splitlines() == ['+ mkdir "$OUT"', "+ false"]


def test_the_last_command_is_the_build_and_its_status_is_the_builds(tmp_path: Path) -> None:
    """No process of ours stays between the shell and the build tool; a signal's death is
    128 + the signal, as the agent reports any exit."""
    env = {"PATH": "/usr/bin:/bin"}
    (tmp_path / "kill.py").write_text("import os\nos.kill(os.getpid(), 9)\n")
    killed = _launch(tmp_path, "true", f"{sys.executable} kill.py", env=env)
    assert killed.returncode == -9  # the build itself was the shell's process: exec'd
    assert killed.stderr.splitlines() == ["+ true", f"+ {sys.executable} kill.py"]
    inner = _launch(tmp_path, f"{sys.executable} kill.py", "true", env=env)
    assert inner.returncode == 128 + 9


def test_a_command_word_that_looks_like_an_option_is_the_command_not_envs(
        tmp_path: Path) -> None:
    (tmp_path / "-probe").write_text("#!/bin/sh\necho ran\n")
    (tmp_path / "-probe").chmod(0o755)
    result = _launch(tmp_path, "./-probe", env={})
    assert (result.returncode, result.stdout) == (0, "ran\n"), result.stderr
    assert _launch(tmp_path, "-i", env={}).returncode == 127  # not taken as env's option


def test_an_empty_variable_is_no_word_but_an_empty_quoted_word_stays(tmp_path: Path) -> None:
    script = tmp_path / "argv.py"
    script.write_text("import sys\nprint(len(sys.argv) - 1)\n")
    env = {"EMPTY": "", "PATH": "/usr/bin:/bin"}
    assert _launch(tmp_path, f"{sys.executable} argv.py $EMPTY x",
                   env=env).stdout.endswith("1\n")
    assert _launch(tmp_path, f"{sys.executable} argv.py \"\" x",
                   env=env).stdout.endswith("2\n")
    nothing = _launch(tmp_path, "$EMPTY", "   ", env=env)
    assert (nothing.returncode, nothing.stdout) == (0, "")


def test_commands_use_the_shell_for_shell_syntax(tmp_path: Path) -> None:
    result = _launch(tmp_path, "echo a | tr a b > piped; X=1 sh -c 'echo $X' > assigned",
                     env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0
    assert (tmp_path / "piped").read_text() == "b\n"
    assert (tmp_path / "assigned").read_text() == "1\n"
    assert command_argv("X=1 make", ()) == ["/bin/sh", "-e", "-c", "X=1 make"]


@pytest.mark.parametrize("word", [
    "$A", "${A}", "$A$B", "${A}x$B", "$", "$$", "${", "${}", "$UNSET", "${UNSET}x", "a$A-b",
    "$Ab", "${A:-default}", "$1", "$_A", "\u00e9$A", "$\u00e9", "$A${B}$A",
])
def test_variables_expand_as_os_path_expandvars_does(word: str) -> None:
    environ = {"A": "1", "B": "$A", "_A": "u", "Ab": "ab", "1": "one"}
    with mock.patch.dict("os.environ", environ, clear=True):
        assert expand_variables(word, environ) == posixpath.expandvars(word)


def test_only_go_builds_start_b_later() -> None:
    """Which toolchains libfaketime cannot reach is each ecosystem's to say (pure plan)."""
    from reprobuild.pipeline.plan import build_pair  # noqa: PLC0415 - one test's need
    from reprobuild.recipes import builtin_recipes  # noqa: PLC0415

    recipes = builtin_recipes()
    delays = {name: build_pair(set(Variation), recipe, host_cpus=2)[1].start_delay_s
              for name, recipe in recipes.items()}
    assert delays.pop("go") == STAGGER_S
    assert set(delays.values()) == {0.0}, delays
    assert build_pair(set(), None, host_cpus=2)[1].start_delay_s == 0.0
