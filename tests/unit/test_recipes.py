"""Recipes are untrusted input from repositories: every rejection must say where and why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from reprobuild.ecosystems import ECOSYSTEMS
from reprobuild.errors import ExitCode, RecipeError
from reprobuild.recipes import (
    ANY_KEY,
    DEFAULT_COMMIT_TIME,
    FETCH_STRATEGIES,
    SANDBOX_ENV,
    SCHEMA,
    Recipe,
    builtin_recipes,
    load_recipe_file,
    recipe_to_toml,
    recipes_dir,
    render_env,
    select_recipe,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

FULL = """\
schema = 1
[recipe]
name = "custom"
description = "a test recipe"
image = "python"
[detect]
files_any = ["marker.txt"]
[build]
commands = ["make dist"]
outputs = ["*.whl"]
timeout_s = 600
[env]
FOO = "bar"
"""

EXTENDING = """\
schema = 1
[recipe]
extends = "python"
"""


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    """Write a recipe file and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> RecipeError:
    """Load ``text`` as a recipe file and return the error it must raise."""
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe_file(path, base=builtin_recipes())
    assert str(path) in info.value.message, "every error names the file"
    assert info.value.hint, "every error carries a hint"
    return info.value


# --------------------------------------------------------------------------- built-ins


def test_builtin_python_recipe_loads() -> None:
    recipes = builtin_recipes()
    python = recipes["python"]
    assert python.image == "python"
    assert set(python.detect_files) == {"pyproject.toml", "setup.py", "setup.cfg"}
    # Isolated: the backend runs in the prepared env of the fetched, pinned wheels.
    assert python.commands == (
        'python /deps/frontend/reprobuild-pep517.py --outdir "$REPROBUILD_OUT" .',)
    assert python.fetch_strategy == "python-build"
    assert python.outputs == ("*.tar.gz", "*.whl")
    env = dict(python.env)
    assert env["SOURCE_DATE_EPOCH"] == "{commit_time}"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert python.timeout_s is None
    assert python.origin.endswith("python.toml")
    assert Path(python.origin).parent == recipes_dir()


def test_recipes_dir_is_the_source_checkout_in_dev() -> None:
    assert recipes_dir() == Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize(
    "files",
    [
        ["pyproject.toml", "src/x/__init__.py"],
        ["setup.py"],
        ["setup.cfg", "README.md"],
        ["./pyproject.toml"],
    ],
)
def test_python_projects_are_detected(files: list[str]) -> None:
    recipe = select_recipe(files, name=None, repo_recipe=None)
    assert recipe.name == "python"


def test_detection_only_looks_at_the_project_root() -> None:
    with pytest.raises(RecipeError) as info:
        select_recipe(["sub/pyproject.toml"], name=None, repo_recipe=None)
    assert info.value.message.startswith("no recipe fits: looked for ")


def test_builtin_name_must_match_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, FULL, name="other.toml")
    monkeypatch.setattr("reprobuild.recipes.recipes_dir", lambda: tmp_path)
    with pytest.raises(RecipeError) as info:
        builtin_recipes()
    assert "'custom'" in info.value.message and "other.toml" in info.value.message


def test_missing_builtin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reprobuild.recipes.recipes_dir", lambda: tmp_path / "nope")
    with pytest.raises(RecipeError, match="built-in recipes directory not found"):
        builtin_recipes()


# --------------------------------------------------------------------------- full files


def test_full_recipe_loads(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    recipe = load_recipe_file(path)
    assert recipe == Recipe(
        name="custom",
        description="a test recipe",
        image="python",
        detect_files=("marker.txt",),
        commands=("make dist",),
        outputs=("*.whl",),
        env=(("FOO", "bar"),),
        timeout_s=600,
        origin=str(path),
    )


def test_minimal_full_recipe_defaults(tmp_path: Path) -> None:
    text = (
        'schema = 1\n[recipe]\nname = "m"\nimage = "python"\n'
        '[build]\ncommands = ["true"]\noutputs = ["*"]\n'
    )
    recipe = load_recipe_file(write(tmp_path, text))
    assert recipe.description == ""
    assert recipe.detect_files == ()
    assert recipe.env == ()
    assert recipe.timeout_s is None


def test_recipe_error_is_bad_input() -> None:
    assert RecipeError("x").exit_code is ExitCode.BAD_INPUT


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe_file(tmp_path / "missing.toml")
    assert "cannot read recipe" in info.value.message
    assert "missing.toml" in info.value.message


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    err = load_error(tmp_path, "schema = 1\n[recipe\n")
    assert "invalid TOML" in err.message
    assert "line 2" in err.message and "column" in err.message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "recipe.toml"
    path.write_bytes(b"schema = 1\n# \xff\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe_file(path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "recipe.toml"
    path.write_bytes(b"\xef\xbb\xbf" + FULL.encode())
    assert load_recipe_file(path).name == "custom"


def test_deep_nesting_is_a_recipe_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "schema = 1\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "invalid TOML" in err.message


def test_oversized_repo_recipe() -> None:
    with pytest.raises(RecipeError, match="bytes, more than"):
        select_recipe([], name=None, repo_recipe=b"#" * (2 << 20), recipes=builtin_recipes())


# --------------------------------------------------------------------------- schema key


def test_missing_schema(tmp_path: Path) -> None:
    err = load_error(tmp_path, FULL.replace("schema = 1\n", ""))
    assert "missing schema" in err.message
    assert err.hint is not None and "schema = 1" in err.hint


def test_future_schema(tmp_path: Path) -> None:
    err = load_error(tmp_path, FULL.replace("schema = 1", "schema = 2") + "[new]\nx = 1\n")
    assert "schema 2 is not supported" in err.message
    assert err.hint is not None and "upgrade" in err.hint


@pytest.mark.parametrize(("value", "got"), [('"1"', "got str"), ("true", "got bool")])
def test_schema_type(tmp_path: Path, value: str, got: str) -> None:
    err = load_error(tmp_path, FULL.replace("schema = 1", f"schema = {value}"))
    assert f"schema must be an integer, {got}" in err.message


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("text", "what", "suggestion"),
    [
        (FULL + "[bulid]\nx = 1\n", "unknown table [bulid]", "'[build]'"),
        (FULL.replace("[env]", "[enviroment]"), "unknown table [enviroment]", "'[env]'"),
        (FULL.replace("commands =", "comands ="), "unknown key [build].comands", "commands"),
        (FULL.replace("outputs =", "output ="), "unknown key [build].output", "outputs"),
        (FULL.replace("image =", "images ="), "unknown key [recipe].images", "image"),
        (
            FULL.replace("files_any =", "files =", 1),
            "unknown key [detect].files",
            "'[detect].files_any'",
        ),
        (FULL.replace("schema = 1", "schema = 1\nscheme = 1"), "unknown key scheme", "'schema'"),
        (
            FULL.replace("schema = 1", 'schema = 1\nname = "x"'),
            "unknown key name",
            "'[recipe].name'",
        ),
        (
            FULL.replace("timeout_s = 600\n", "").replace(
                'image = "python"', 'image = "python"\ntimeout_s = 5'
            ),
            "unknown key [recipe].timeout_s",
            "'[build].timeout_s'",
        ),
        (FULL.replace("[env]", "[build.extra]"), "unknown table [build.extra]", None),
        (FULL + "[network]\nenabled = false\n", "unknown table [network]", None),
        (
            FULL.replace("description =", "desc ="),
            "unknown key [recipe].desc",
            "'[recipe].description'",
        ),
    ],
)
def test_unknown_keys_are_rejected_with_suggestion(
    tmp_path: Path, text: str, what: str, suggestion: str | None
) -> None:
    err = load_error(tmp_path, text)
    assert what in err.message
    if suggestion is None:
        assert "did you mean" not in err.message
    else:
        assert "did you mean" in err.message and suggestion in err.message


def test_unknown_key_hint_lists_legal_keys(tmp_path: Path) -> None:
    err = load_error(tmp_path, FULL.replace("commands =", "comands ="))
    assert err.hint == "[build] accepts: commands, outputs, timeout_s"


def test_unknown_top_level_hint_lists_tables(tmp_path: Path) -> None:
    err = load_error(tmp_path, FULL + "[zzz]\n")
    assert err.hint is not None and "[recipe]" in err.hint and "[env]" in err.hint


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'commands = ["make dist"]',
            "commands = 3",
            "[build].commands must be a list of strings, got int",
        ),
        (
            'commands = ["make dist"]',
            'commands = "make dist"',
            "[build].commands must be a list of strings, got str",
        ),
        (
            'outputs = ["*.whl"]',
            'outputs = ["*.whl", 1]',
            "[build].outputs must be a list of strings, got int at index 1",
        ),
        (
            'files_any = ["marker.txt"]',
            "files_any = [[]]",
            "[detect].files_any must be a list of strings, got list at index 0",
        ),
        ('name = "custom"', "name = 1", "[recipe].name must be a string, got int"),
        ('image = "python"', "image = {a = 1}", "[recipe].image must be a string, got table"),
        ("timeout_s = 600", 'timeout_s = "600"', "[build].timeout_s must be an integer, got str"),
        ("timeout_s = 600", "timeout_s = 1.5", "[build].timeout_s must be an integer, got float"),
        ("timeout_s = 600", "timeout_s = true", "[build].timeout_s must be an integer, got bool"),
        ('FOO = "bar"', "FOO = 1", "[env].FOO must be a string, got int (quote it)"),
        ('FOO = "bar"', "FOO = true", "[env].FOO must be a string, got bool"),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in FULL
    err = load_error(tmp_path, FULL.replace(old, new))
    assert expected in err.message


def test_table_given_as_value(tmp_path: Path) -> None:
    err = load_error(tmp_path, 'schema = 1\nbuild = "make"\n')
    assert "[build] must be a table, got str" in err.message


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('commands = ["make dist"]', "commands = []", "[build].commands must not be empty"),
        ('outputs = ["*.whl"]', "outputs = []", "[build].outputs must not be empty"),
        ('files_any = ["marker.txt"]', "files_any = []", "[detect].files_any must not be empty"),
        (
            'commands = ["make dist"]',
            'commands = ["make", "  "]',
            "[build].commands has an empty or NUL-containing entry at index 1",
        ),
        (
            'commands = ["make dist"]',
            'commands = ["make\\u0000"]',
            "[build].commands has an empty or NUL-containing entry at index 0",
        ),
        (
            'outputs = ["*.whl"]',
            'outputs = ["/tmp/*.whl"]',
            "entry '/tmp/*.whl' must be a relative path",
        ),
        (
            'outputs = ["*.whl"]',
            'outputs = ["../*.whl"]',
            "entry '../*.whl' must be a relative path",
        ),
        (
            'outputs = ["*.whl"]',
            'outputs = ["a/../../x"]',
            "entry 'a/../../x' must be a relative path",
        ),
        ('outputs = ["*.whl"]', 'outputs = ["."]', "entry '.' must be a relative path"),
        ('outputs = ["*.whl"]', 'outputs = ["..\\\\x"]', "must be a relative path"),
        (
            'files_any = ["marker.txt"]',
            'files_any = ["../setup.py"]',
            "[detect].files_any entry '../setup.py'",
        ),
        ("timeout_s = 600", "timeout_s = 0", "[build].timeout_s must be positive, got 0"),
        ("timeout_s = 600", "timeout_s = -5", "[build].timeout_s must be positive, got -5"),
        ('name = "custom"', 'name = ""', "[recipe].name is not a valid name: ''"),
        ('name = "custom"', 'name = "a b"', "[recipe].name is not a valid name: 'a b'"),
        ('image = "python"', 'image = "../etc"', "[recipe].image is not a valid name: '../etc'"),
        ('image = "python"', 'image = "a/b"', "[recipe].image is not a valid name"),
    ],
)
def test_bad_values(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in FULL
    err = load_error(tmp_path, FULL.replace(old, new))
    assert expected in err.message


@pytest.mark.parametrize(
    "missing",
    [
        ('name = "custom"\n', "missing [recipe].name"),
        ('image = "python"\n', "missing [recipe].image"),
        ('commands = ["make dist"]\n', "missing [build].commands"),
        ('outputs = ["*.whl"]\n', "missing [build].outputs"),
    ],
)
def test_required_keys(tmp_path: Path, missing: tuple[str, str]) -> None:
    line, expected = missing
    err = load_error(tmp_path, FULL.replace(line, ""))
    assert expected in err.message
    assert err.hint is not None and "extends" in err.hint


# --------------------------------------------------------------------------- env


@pytest.mark.parametrize("name", [*sorted(SANDBOX_ENV), "REPROBUILD_ANYTHING"])
def test_sandbox_env_cannot_be_set(tmp_path: Path, name: str) -> None:
    err = load_error(tmp_path, FULL + f'{name} = "x"\n')
    assert f"[env].{name} is set by the sandbox" in err.message
    assert err.hint is not None and f"remove {name}" in err.hint


@pytest.mark.parametrize("name", ['"1ABC"', '"A-B"', '"A B"', '""', '"A=B"'])
def test_invalid_env_names(tmp_path: Path, name: str) -> None:
    err = load_error(tmp_path, FULL + f'{name} = "x"\n')
    assert "is not a valid environment variable name" in err.message


def test_env_value_with_nul(tmp_path: Path) -> None:
    err = load_error(tmp_path, FULL.replace('FOO = "bar"', 'FOO = "a\\u0000b"'))
    assert "[env].FOO contains a NUL byte" in err.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{commit_date}", "unknown placeholder {commit_date}"),
        ("{}", "unknown placeholder {}"),
        ("{commit_time:x}", "unknown placeholder {commit_time:x}"),
        ("{commit!r}", "unknown placeholder {commit!r}"),
        ("{commit.x}", "unknown placeholder {commit.x}"),
        ("{HOME}", "unknown placeholder {HOME}"),
        ("a{b", "bad placeholder syntax"),
        ("a}b", "bad placeholder syntax"),
    ],
)
def test_bad_placeholders_fail_at_load(tmp_path: Path, value: str, expected: str) -> None:
    err = load_error(tmp_path, FULL.replace('FOO = "bar"', f'FOO = "{value}"'))
    assert "[env].FOO" in err.message and expected in err.message
    assert err.hint is not None and "{{" in err.hint


def test_render_env_fills_placeholders(tmp_path: Path) -> None:
    text = FULL.replace(
        'FOO = "bar"', 'A = "{commit_time}"\nB = "v-{commit}-{commit_time}"\nC = "{{literal}}"'
    )
    recipe = load_recipe_file(write(tmp_path, text))
    assert render_env(recipe, commit="abc123", commit_time=1700000000) == (
        ("A", "1700000000"),
        ("B", "v-abc123-1700000000"),
        ("C", "{literal}"),
    )


def test_render_env_default_commit_time() -> None:
    python = builtin_recipes()["python"]
    env = dict(render_env(python, commit=None, commit_time=None))
    assert env["SOURCE_DATE_EPOCH"] == str(DEFAULT_COMMIT_TIME) == "315532800"
    zero = dict(render_env(python, commit=None, commit_time=0))
    assert zero["SOURCE_DATE_EPOCH"] == "0"


def test_render_env_commit_missing(tmp_path: Path) -> None:
    recipe = load_recipe_file(write(tmp_path, FULL.replace('"bar"', '"{commit}"')))
    with pytest.raises(RecipeError) as info:
        render_env(recipe, commit=None, commit_time=5)
    assert "[env].FOO: uses {commit}" in info.value.message
    assert str(tmp_path) in info.value.message


def test_render_env_rejects_unknown_placeholder_in_handmade_recipe() -> None:
    recipe = Recipe("x", "", "python", (), ("true",), ("*",), (("A", "{nope}"),), None, "here")
    with pytest.raises(RecipeError, match=r"here: \[env\].A: unknown placeholder \{nope\}"):
        render_env(recipe, commit="c", commit_time=1)


# --------------------------------------------------------------------------- extends


def test_extends_inherits_everything(tmp_path: Path) -> None:
    path = write(tmp_path, EXTENDING)
    recipe = load_recipe_file(path)
    python = builtin_recipes()["python"]
    assert recipe.name == "python+repo"
    assert recipe.origin == str(path)
    assert (recipe.image, recipe.commands, recipe.outputs) == (
        python.image,
        python.commands,
        python.outputs,
    )
    assert recipe.env == python.env
    assert recipe.detect_files == python.detect_files


def test_extends_merges(tmp_path: Path) -> None:
    text = (
        EXTENDING
        + 'name = "mine"\n'
        + '[build]\ncommands = ["./prepare.sh", "python -m build -o \\"$REPROBUILD_OUT\\""]\n'
        + 'outputs = ["*.whl"]\ntimeout_s = 120\n'
        + '[env]\nPYTHONDONTWRITEBYTECODE = "0"\nEXTRA = "{commit}"\n'
    )
    recipe = load_recipe_file(write(tmp_path, text))
    assert recipe.name == "mine"
    assert recipe.commands == ("./prepare.sh", 'python -m build -o "$REPROBUILD_OUT"')
    assert recipe.outputs == ("*.whl",)
    assert recipe.timeout_s == 120
    env = dict(recipe.env)
    assert env["PYTHONDONTWRITEBYTECODE"] == "0", "per-key override"
    assert env["SOURCE_DATE_EPOCH"] == "{commit_time}", "untouched base keys survive"
    assert env["EXTRA"] == "{commit}"
    assert list(env) == ["SOURCE_DATE_EPOCH", "PYTHONDONTWRITEBYTECODE", "EXTRA"]


def test_extends_unknown_base(tmp_path: Path) -> None:
    err = load_error(tmp_path, EXTENDING.replace('"python"', '"pyhton"'))
    assert "[recipe].extends names unknown recipe 'pyhton'" in err.message
    assert "did you mean 'python'?" in err.message
    assert err.hint == "available recipes: go, node, pnpm, python, rust"


def test_extending_file_is_still_validated(tmp_path: Path) -> None:
    err = load_error(tmp_path, EXTENDING + "[build]\noutputs = []\n")
    assert "[build].outputs must not be empty" in err.message
    err = load_error(tmp_path, EXTENDING + '[env]\nPATH = "/x"\n')
    assert "[env].PATH is set by the sandbox" in err.message


def test_extends_against_explicit_base(tmp_path: Path) -> None:
    base_path = write(tmp_path, FULL, name="custom.toml")
    base = {"custom": load_recipe_file(base_path)}
    recipe = load_recipe_file(
        write(tmp_path, 'schema = 1\n[recipe]\nextends = "custom"\n'), base=base
    )
    assert recipe.name == "custom+repo"
    assert recipe.timeout_s == 600


# --------------------------------------------------------------------------- selection


def test_select_by_name() -> None:
    recipe = select_recipe([], name="python", repo_recipe=None)
    assert recipe == builtin_recipes()["python"]


def test_name_wins_over_detection_and_keeps_the_repo_recipe_as_overrides() -> None:
    recipe = select_recipe(["package.json"], name="python", repo_recipe=None,
                           recipes=builtin_recipes())
    assert recipe.name == "python"
    # The repository's file extends node, but --recipe python decides the base; its
    # overrides still apply (and a broken file is still an error, not silently skipped).
    repo = b'schema = 1\n[recipe]\nextends = "node"\n[env]\nFOO = "bar"\n'
    recipe = select_recipe(["package.json"], name="python", repo_recipe=repo,
                           recipes=builtin_recipes())
    assert recipe.name == "python+repo" and recipe.fetch_strategy == "python-build"
    assert ("FOO", "bar") in recipe.env and recipe.origin == ".reprobuild.toml"
    with pytest.raises(RecipeError, match="invalid TOML"):
        select_recipe(["package.json"], name="python", repo_recipe=b"this is not toml",
                      recipes=builtin_recipes())


def test_unknown_name_suggests() -> None:
    with pytest.raises(RecipeError) as info:
        select_recipe(["pyproject.toml"], name="pyton", repo_recipe=None)
    assert info.value.message == "unknown recipe 'pyton'; did you mean 'python'?"
    assert info.value.hint == "available recipes: go, node, pnpm, python, rust"


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(RecipeError) as info:
        select_recipe([], name="zig", repo_recipe=None)
    assert "did you mean" not in info.value.message
    assert info.value.hint == "available recipes: go, node, pnpm, python, rust"


def test_repo_recipe_wins_over_detection() -> None:
    raw = (EXTENDING + '[env]\nX = "1"\n').encode()
    recipe = select_recipe(
        ["pyproject.toml"], name=None, repo_recipe=raw, repo_recipe_path="srv/.reprobuild.toml"
    )
    assert recipe.name == "python+repo"
    assert recipe.origin == "srv/.reprobuild.toml"
    assert ("X", "1") in recipe.env


def test_repo_recipe_errors_name_its_path() -> None:
    with pytest.raises(RecipeError) as info:
        select_recipe([], name=None, repo_recipe=b"schema = 1\n[recipe]\nextend = 'python'\n")
    assert info.value.message.startswith(".reprobuild.toml: unknown key [recipe].extend")
    assert "did you mean '[recipe].extends'?" in info.value.message


def test_repo_recipe_toml_error() -> None:
    with pytest.raises(RecipeError) as info:
        select_recipe([], name=None, repo_recipe=b"[recipe\n", repo_recipe_path="x/.r.toml")
    assert info.value.message.startswith("x/.r.toml: invalid TOML: ")
    assert "line 1" in info.value.message


def test_no_recipe_fits() -> None:
    with pytest.raises(RecipeError) as info:
        select_recipe(["build.zig", "README.md"], name=None, repo_recipe=None)
    assert info.value.message == (
        "no recipe fits: looked for go.mod (go); package.json (node, pnpm); pyproject.toml, "
        "setup.py, setup.cfg (python); Cargo.toml (rust)"
    )
    assert info.value.hint is not None
    assert "--recipe NAME or add .reprobuild.toml" in info.value.hint


def test_no_recipes_at_all() -> None:
    with pytest.raises(RecipeError) as info:
        select_recipe(["x"], name=None, repo_recipe=None, recipes={})
    assert "no recipe has [detect]" in info.value.message


def test_detection_follows_mapping_order(tmp_path: Path) -> None:
    python = builtin_recipes()["python"]
    other = load_recipe_file(write(tmp_path, FULL.replace('"marker.txt"', '"setup.py"')))
    assert (
        select_recipe(
            ["setup.py"], name=None, repo_recipe=None, recipes={"custom": other, "python": python}
        ).name
        == "custom"
    )
    undetectable = load_recipe_file(
        write(tmp_path, FULL.replace('[detect]\nfiles_any = ["marker.txt"]\n', ""))
    )
    assert undetectable.detect_files == ()
    found = select_recipe(
        ["marker.txt", "setup.py"],
        name=None,
        repo_recipe=None,
        recipes={"custom": undetectable, "python": python},
    )
    assert found.name == "python"


# --------------------------------------------------------------------------- output


def test_recipe_to_toml_round_trips(tmp_path: Path) -> None:
    for recipe in [*builtin_recipes().values(), load_recipe_file(write(tmp_path, FULL))]:
        text = recipe_to_toml(recipe)
        again = load_recipe_file(write(tmp_path, text, name="again.toml"))
        assert again == Recipe(**{**recipe.__dict__, "origin": again.origin})


def test_recipe_to_toml_escapes() -> None:
    nasty = 'quote " back \\ tab \t nl \n del \x7f bell \x07 é'
    recipe = Recipe("x", nasty, "python", (), (nasty,), ("*",), (("A", "{{" + nasty),), 5, "o")
    data = tomllib.loads(recipe_to_toml(recipe))
    assert data["recipe"]["description"] == nasty
    assert data["build"]["commands"] == [nasty]
    assert data["build"]["timeout_s"] == 5
    assert data["env"]["A"] == "{{" + nasty
    assert "detect" not in data


def test_fetch_strategies_and_their_docs_come_from_the_ecosystem_registry() -> None:
    assert ("none", *(e.strategy for e in ECOSYSTEMS)) == FETCH_STRATEGIES
    doc = SCHEMA["fetch"]["strategy"].doc
    for ecosystem in ECOSYSTEMS:
        assert f"'{ecosystem.strategy}' {ecosystem.summary}" in doc


def test_builtin_recipes_use_only_schema_keys() -> None:
    for recipe in builtin_recipes().values():
        data = tomllib.loads(Path(recipe.origin).read_text(encoding="utf-8"))
        for table, value in data.items():
            assert table in SCHEMA or table in SCHEMA[""]
            if isinstance(value, dict):
                assert set(value) <= set(SCHEMA[table]) or ANY_KEY in SCHEMA[table]
