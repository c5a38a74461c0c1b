"""Build recipes: which toolchain image, which commands and which outputs make a release.

A recipe is a small TOML file. Built-in ones ship in ``recipes/``; a repository may carry
its own ``.reprobuild.toml`` that either defines a full recipe or extends a built-in one.
Repository recipes are untrusted input, so validation is strict and every error names the
file, the dotted key and, where it can, the key that was probably meant.

The legal keys live in one place, :data:`SCHEMA`, which drives validation and
:func:`recipe_to_toml` alike; the legal fetch strategies come from the ecosystem registry
(:mod:`reprobuild.ecosystems`).
"""

from __future__ import annotations

import difflib
import math
import re
import string
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from reprobuild.ecosystems import ECOSYSTEMS, strategy_names
from reprobuild.errors import InputError, RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "ANY_KEY",
    "DEFAULT_COMMIT_TIME",
    "FETCH_STRATEGIES",
    "MAX_TIMEOUT_S",
    "PLACEHOLDERS",
    "SANDBOX_ENV",
    "SCHEMA",
    "SCHEMA_VERSION",
    "KeySpec",
    "Kind",
    "Recipe",
    "builtin_recipes",
    "check_number",
    "detected_recipes",
    "load_recipe_file",
    "recipe_to_toml",
    "recipes_dir",
    "render_env",
    "select_recipe",
]

SCHEMA_VERSION = 1

DEFAULT_COMMIT_TIME = 315532800
"""1980-01-01T00:00:00Z: the earliest time a zip (hence a wheel) can store."""

MAX_RECIPE_BYTES = 1 << 20
"""Repository recipes are untrusted; nothing legitimate comes close to this."""

SANDBOX_ENV = frozenset(
    {
        "HOME",
        "USER",
        "LOGNAME",
        "TZ",
        "LANG",
        "LC_ALL",
        "LANGUAGE",
        "PATH",
        "HOSTNAME",
        "LD_PRELOAD",
        "FAKETIME",
        "REPROBUILD_OUT",
    }
)
"""Variables the sandbox pins so both builds see the same world; recipes may not set them."""

_RESERVED_ENV_PREFIX = "REPROBUILD_"

MAX_TIMEOUT_S = 7 * 24 * 3600
"""A week: no build needs more, and every larger number (or ``inf``, ``nan``) overflows
or disables the deadline somewhere on the way to the engine."""


def check_number(value: float, *, name: str, maximum: float, unit: str = "seconds",
                 whole: bool = False, origin: str | None = None) -> float:
    """``value`` when it is finite, positive and at most ``maximum``; else an
    :class:`~reprobuild.errors.InputError` naming ``name`` (an option or a recipe key).

    Every number a user or an untrusted file hands in goes through this: ``nan`` compares
    false with everything (a limit of ``nan`` is no limit) and ``inf`` or a huge integer
    overflows when a deadline is computed.
    """
    where = f"{origin}: {name}" if origin else name
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where} must be a number, got {type(value).__name__}",
                         f"{unit}, more than 0 and at most {maximum:g}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where} must be a finite number, got {value}",
                         f"{unit}, more than 0 and at most {maximum:g}")
    if value <= 0 or value > maximum:
        raise InputError(f"{where} must be more than 0 and at most {maximum:g}, got {value:g}",
                         f"{unit}, more than 0 and at most {maximum:g}")
    if whole and value != int(value):
        raise InputError(f"{where} must be a whole number, got {value:g}",
                         f"{unit}, a whole number from 1 to {maximum:g}")
    return value


PLACEHOLDERS: Mapping[str, str] = {
    "commit_time": "committer time of the built commit, in Unix seconds "
    f"({DEFAULT_COMMIT_TIME} when the source is not a git commit)",
    "commit": "full hash of the built commit",
}
"""The only ``{name}`` placeholders allowed in ``[env]`` values."""

FETCH_STRATEGIES = strategy_names()
"""The ``[fetch].strategy`` values of the built-in ecosystems (validation asks the registry
each time, so an ecosystem registered later is accepted too)."""

_T = TypeVar("_T")
_U = TypeVar("_U")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


class Kind(Enum):
    """The value types a recipe key may have; the value reads as "must be <value>"."""

    STR = "a string"
    INT = "an integer"
    STR_LIST = "a list of strings"


@dataclass(frozen=True)
class KeySpec:
    """One legal key: its type, whether a full (non-extending) recipe needs it, and docs."""

    kind: Kind
    required: bool
    doc: str


ANY_KEY = "*"
"""Key of a table whose keys are free-form (``[env]``)."""

SCHEMA: Mapping[str, Mapping[str, KeySpec]] = {
    "": {
        "schema": KeySpec(Kind.INT, True, f"recipe format version; must be {SCHEMA_VERSION}"),
    },
    "recipe": {
        "name": KeySpec(
            Kind.STR,
            True,
            "recipe name, used by --recipe; built-in recipes are named after their file "
            "(an extending recipe defaults to '<base>+repo')",
        ),
        "description": KeySpec(Kind.STR, False, "one line shown by `reprobuild recipes`"),
        "image": KeySpec(
            Kind.STR, True, "toolchain image definition to build in (containers/<image>.toml)"
        ),
        "extends": KeySpec(
            Kind.STR,
            False,
            "built-in recipe to start from; [build] commands/outputs/timeout_s replace the "
            "base's, [env] keys are merged one by one",
        ),
    },
    "detect": {
        "files_any": KeySpec(
            Kind.STR_LIST,
            False,
            "the recipe is picked automatically when the project directory contains one of "
            "these files; omit [detect] to make the recipe selectable only by name",
        ),
    },
    "build": {
        "commands": KeySpec(
            Kind.STR_LIST,
            True,
            "shell commands run one after another with /bin/sh -e in the project directory, "
            "offline; artifacts go to $REPROBUILD_OUT",
        ),
        "outputs": KeySpec(
            Kind.STR_LIST,
            True,
            "globs, relative to $REPROBUILD_OUT, naming the artifacts to compare",
        ),
        "timeout_s": KeySpec(
            Kind.INT, False, "wall-clock limit for one build, in seconds (default: the CLI's)"
        ),
    },
    "fetch": {
        "strategy": KeySpec(
            Kind.STR,
            False,
            "how dependencies are fetched, through a logging allow-list proxy, before the "
            "offline build: " + ", ".join(f"'{s}'" for s in FETCH_STRATEGIES) + " ('none' by "
            "default; " + ", ".join(f"'{e.strategy}' {e.summary}" for e in ECOSYSTEMS) + ")",
        ),
        "lock": KeySpec(
            Kind.STR,
            False,
            "python-build only: a hashed requirements file (name==version --hash=sha256:...), "
            "relative to the project directory, pinning every build requirement",
        ),
    },
    "env": {
        ANY_KEY: KeySpec(
            Kind.STR,
            False,
            "extra environment variables; values may use "
            + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS),
        ),
    },
}
"""Table name ("" for top level) → legal keys. The single source of truth for the format."""


@dataclass(frozen=True)
class Recipe:
    """A validated, fully resolved recipe (any ``extends`` already merged in)."""

    name: str
    description: str
    image: str
    detect_files: tuple[str, ...]
    commands: tuple[str, ...]
    outputs: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    timeout_s: int | None
    origin: str
    fetch_strategy: str = "none"
    fetch_lock: str | None = None


# --------------------------------------------------------------------------- locations


def recipes_dir() -> Path:
    """Where built-in recipes live: inside the installed wheel, else the source checkout."""
    packaged = Path(__file__).resolve().parent / "_data" / "recipes"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "recipes"


def builtin_recipes() -> dict[str, Recipe]:
    """Load every built-in recipe, keyed by name, in file-name order (the detection order)."""
    directory = recipes_dir()
    if not directory.is_dir():
        raise RecipeError(
            f"built-in recipes directory not found: {directory}",
            hint="reinstall reprobuild; the wheel ships them under reprobuild/_data/recipes",
        )
    found: dict[str, Recipe] = {}
    for path in sorted(directory.glob("*.toml")):
        recipe = load_recipe_file(path, base={})
        if recipe.name != path.stem:
            raise RecipeError(
                f"{path}: [recipe].name is {recipe.name!r} but the file is {path.name}",
                hint="built-in recipes are looked up by file name; make the two match",
            )
        found[recipe.name] = recipe
    return found


# --------------------------------------------------------------------------- loading


def load_recipe_file(path: Path, *, base: Mapping[str, Recipe] | None = None) -> Recipe:
    """Read and validate one recipe file; ``extends`` resolves against ``base`` (built-ins)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(
            f"cannot read recipe {path}: {exc.strerror or exc}",
            hint="check that the file exists and is readable",
        ) from exc
    return _load_bytes(raw, str(path), base)


def _load_bytes(raw: bytes, origin: str, base: Mapping[str, Recipe] | None, *,
                extends: str | None = None) -> Recipe:
    """Parse recipe bytes; shared by files on disk and recipes read out of a repository.

    ``extends`` applies the document on top of that recipe, whatever its own
    ``[recipe].extends`` says (``--recipe NAME`` with a repository's ``.reprobuild.toml``).
    """
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"{origin}: recipe is {len(raw)} bytes, more than the {MAX_RECIPE_BYTES} allowed",
            hint="a recipe is a few lines of TOML; is this the right file?",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{origin}: not UTF-8 (byte {exc.start}): {exc.reason}",
            hint="TOML files must be UTF-8 encoded",
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(
            f"{origin}: invalid TOML: {exc}",
            hint="see https://toml.io for the syntax",
        ) from exc
    except RecursionError as exc:
        raise RecipeError(
            f"{origin}: invalid TOML: nested too deeply", hint="a recipe needs no nesting"
        ) from exc
    return _parse(data, origin, base, extends=extends)


def _where(table: str, key: str) -> str:
    """Render a dotted key the way users see it in the file: ``[build].commands``."""
    return f"[{table}].{key}" if table else key


def _type_name(value: object) -> str:
    """Name a TOML value's type in the user's terms (tables, not dicts)."""
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _suggest(key: str, table: str) -> str | None:
    """Guess the key meant: the same key in another table, else a close spelling."""
    for other, keys in SCHEMA.items():
        if other != table and key in keys:
            return _where(other, key)
    candidates = {k: _where(table, k) for k in SCHEMA.get(table, {}) if k != ANY_KEY}
    if not table:
        candidates |= {t: f"[{t}]" for t in SCHEMA if t}
    close = difflib.get_close_matches(key, list(candidates), n=1)
    if not close:  # abbreviations and long forms: "desc", "environment"
        close = [c for c in candidates if min(len(c), len(key)) >= 3 and _prefixed(c, key)]
    return candidates[close[0]] if close else None


def _prefixed(a: str, b: str) -> bool:
    """Whether one of two keys, lower-cased, starts with the other."""
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


def _unknown(origin: str, table: str, key: str, is_table: bool) -> RecipeError:
    """Build the error for a key or table the format does not have."""
    if is_table:
        what = f"table [{table}.{key}]" if table else f"table [{key}]"
    else:
        what = f"key {_where(table, key)}"
    message = f"{origin}: unknown {what}"
    suggestion = _suggest(key, table)
    if suggestion:
        message += f"; did you mean '{suggestion}'?"
    legal = ", ".join(k for k in SCHEMA.get(table, {}) if k != ANY_KEY)
    if table:
        hint = f"[{table}] accepts: {legal}"
    else:
        hint = f"top-level keys: {legal}; tables: " + ", ".join(f"[{t}]" for t in SCHEMA if t)
    return RecipeError(message, hint=hint)


def _check_type(origin: str, table: str, key: str, value: object, spec: KeySpec) -> None:
    """Reject a value whose TOML type does not match the schema, naming both types."""
    where = _where(table, key)
    expected = f"{origin}: {where} must be {spec.kind.value}"
    hint = f"{where}: {spec.doc}"
    if spec.kind is Kind.STR:
        if not isinstance(value, str):
            extra = " (quote it)" if table == "env" and isinstance(value, int | float) else ""
            raise RecipeError(f"{expected}, got {_type_name(value)}{extra}", hint=hint)
    elif spec.kind is Kind.INT:
        # bool is an int subclass in Python; TOML keeps them apart and so do we.
        if not isinstance(value, int) or isinstance(value, bool):
            raise RecipeError(f"{expected}, got {_type_name(value)}", hint=hint)
    elif spec.kind is Kind.STR_LIST:
        if not isinstance(value, list):
            raise RecipeError(f"{expected}, got {_type_name(value)}", hint=hint)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise RecipeError(f"{expected}, got {_type_name(item)} at index {index}", hint=hint)


def _check_structure(data: Mapping[str, Any], origin: str) -> None:
    """Walk every key once: unknown tables/keys and wrong types fail here, in file order."""
    top = SCHEMA[""]
    for key, value in data.items():
        if key in top:
            _check_type(origin, "", key, value, top[key])
            continue
        if key not in SCHEMA:
            raise _unknown(origin, "", key, isinstance(value, dict))
        if not isinstance(value, dict):
            raise RecipeError(
                f"{origin}: [{key}] must be a table, got {_type_name(value)}",
                hint=f"write it as a [{key}] section",
            )
        keys = SCHEMA[key]
        for sub, subvalue in value.items():
            spec = keys.get(sub, keys.get(ANY_KEY))
            if spec is None:
                raise _unknown(origin, key, sub, isinstance(subvalue, dict))
            _check_type(origin, key, sub, subvalue, spec)


def _check_schema_version(data: Mapping[str, Any], origin: str) -> None:
    """Check ``schema`` before anything else, so a newer file says "upgrade", not "typo"."""
    if "schema" not in data:
        raise RecipeError(
            f"{origin}: missing schema",
            hint=f"add `schema = {SCHEMA_VERSION}` as the first line",
        )
    _check_type(origin, "", "schema", data["schema"], SCHEMA[""]["schema"])
    if data["schema"] != SCHEMA_VERSION:
        raise RecipeError(
            f"{origin}: schema {data['schema']} is not supported "
            f"(this reprobuild reads schema {SCHEMA_VERSION})",
            hint=f"upgrade reprobuild, or write the recipe for schema {SCHEMA_VERSION}",
        )


class _Doc:
    """Typed access to a document that :func:`_check_structure` already validated."""

    def __init__(self, data: Mapping[str, Any], origin: str) -> None:
        self.data = data
        self.origin = origin

    def has(self, table: str, key: str) -> bool:
        """Whether the file sets ``[table].key``."""
        section = self.data.get(table)
        return isinstance(section, dict) and key in section

    def str_(self, table: str, key: str) -> str | None:
        """A string value, or None when absent."""
        value = self.data.get(table, {}).get(key)
        assert value is None or isinstance(value, str)
        return value

    def int_(self, table: str, key: str) -> int | None:
        """An integer value, or None when absent."""
        value = self.data.get(table, {}).get(key)
        assert value is None or isinstance(value, int)
        return value

    def list_(self, table: str, key: str) -> tuple[str, ...] | None:
        """A list-of-strings value as a tuple, or None when absent."""
        value = self.data.get(table, {}).get(key)
        if value is None:
            return None
        assert isinstance(value, list)
        return tuple(str(item) for item in value)

    def env(self) -> dict[str, str]:
        """The ``[env]`` table, in file order."""
        section = self.data.get("env", {})
        return {str(k): str(v) for k, v in section.items()}

    def fail(self, table: str, key: str, problem: str, hint: str) -> RecipeError:
        """An error about one key, prefixed with the file and the dotted key."""
        return RecipeError(f"{self.origin}: {_where(table, key)} {problem}", hint=hint)


def _parse(data: Mapping[str, Any], origin: str, base: Mapping[str, Recipe] | None, *,
           extends: str | None = None) -> Recipe:
    """Validate a parsed document and turn it into a resolved :class:`Recipe`."""
    _check_schema_version(data, origin)
    _check_structure(data, origin)
    doc = _Doc(data, origin)
    _check_values(doc)

    extends = extends or doc.str_("recipe", "extends")
    if extends is not None:
        return _merge(doc, extends, builtin_recipes() if base is None else base)

    for table, keys in SCHEMA.items():
        for key, spec in keys.items():
            if spec.required and table and not doc.has(table, key):
                raise RecipeError(
                    f"{origin}: missing {_where(table, key)}",
                    hint="a recipe needs [recipe] name and image and [build] commands and "
                    'outputs, or `extends = "python"` under [recipe] to start from a built-in',
                )
    name, image = doc.str_("recipe", "name"), doc.str_("recipe", "image")
    commands, outputs = doc.list_("build", "commands"), doc.list_("build", "outputs")
    assert name is not None and image is not None
    assert commands is not None and outputs is not None
    return Recipe(
        name=name,
        description=doc.str_("recipe", "description") or "",
        image=image,
        detect_files=doc.list_("detect", "files_any") or (),
        commands=commands,
        outputs=outputs,
        env=tuple(doc.env().items()),
        timeout_s=doc.int_("build", "timeout_s"),
        origin=origin,
        fetch_strategy=doc.str_("fetch", "strategy") or "none",
        fetch_lock=doc.str_("fetch", "lock"),
    )


def _merge(doc: _Doc, extends: str, base: Mapping[str, Recipe]) -> Recipe:
    """Apply an extending recipe on top of its base: lists replace, env merges per key."""
    parent = base.get(extends)
    if parent is None:
        message = f"{doc.origin}: [recipe].extends names unknown recipe {extends!r}"
        close = difflib.get_close_matches(extends, list(base), n=1)
        if close:
            message += f"; did you mean '{close[0]}'?"
        raise RecipeError(message, hint=_available(base))
    env = dict(parent.env)
    env.update(doc.env())
    return replace(
        parent,
        name=_pick(doc.str_("recipe", "name"), f"{parent.name}+repo"),
        description=_pick(doc.str_("recipe", "description"), parent.description),
        image=_pick(doc.str_("recipe", "image"), parent.image),
        detect_files=_pick(doc.list_("detect", "files_any"), parent.detect_files),
        commands=_pick(doc.list_("build", "commands"), parent.commands),
        outputs=_pick(doc.list_("build", "outputs"), parent.outputs),
        env=tuple(env.items()),
        timeout_s=_pick(doc.int_("build", "timeout_s"), parent.timeout_s),
        origin=doc.origin,
        fetch_strategy=_pick(doc.str_("fetch", "strategy"), parent.fetch_strategy),
        fetch_lock=_pick(doc.str_("fetch", "lock"), parent.fetch_lock),
    )


def _pick(override: _T | None, inherited: _U) -> _T | _U:
    """The extending file's value when it sets one, else the base recipe's."""
    return inherited if override is None else override


def _check_values(doc: _Doc) -> None:
    """Constraints beyond types: names, non-empty lists, safe globs, env names, placeholders."""
    for key, pattern, hint in (
        ("name", _RECIPE_NAME, "use letters, digits, '.', '_', '+' and '-'"),
        ("image", _IMAGE_NAME, "name a file in containers/ without .toml, e.g. 'python'"),
        ("extends", _RECIPE_NAME, "name a built-in recipe, e.g. 'python'"),
    ):
        value = doc.str_("recipe", key)
        if value is not None and not pattern.fullmatch(value):
            raise doc.fail("recipe", key, f"is not a valid name: {value!r}", hint)

    for table, key in (("detect", "files_any"), ("build", "commands"), ("build", "outputs")):
        items = doc.list_(table, key)
        if items is not None and not items:
            raise doc.fail(table, key, "must not be empty", SCHEMA[table][key].doc)
        for index, item in enumerate(items or ()):
            if not item.strip() or "\0" in item:
                raise doc.fail(
                    table,
                    key,
                    f"has an empty or NUL-containing entry at index {index}",
                    SCHEMA[table][key].doc,
                )

    for table, key in (("detect", "files_any"), ("build", "outputs")):
        for item in doc.list_(table, key) or ():
            path = PurePosixPath(item)
            if path.is_absolute() or ".." in path.parts or "\\" in item or str(path) == ".":
                raise doc.fail(
                    table,
                    key,
                    f"entry {item!r} must be a relative path inside the directory, without '..'",
                    "outputs are matched inside $REPROBUILD_OUT and detect files inside the "
                    "project directory; nothing outside them is read",
                )

    strategy = doc.str_("fetch", "strategy")
    known = strategy_names()  # now, not at import: ecosystems may be registered later
    if strategy is not None and strategy not in known:
        close = difflib.get_close_matches(strategy, known, n=1)
        raise doc.fail(
            "fetch",
            "strategy",
            f"is {strategy!r}, not one of " + ", ".join(known)
            + (f"; did you mean '{close[0]}'?" if close else ""),
            SCHEMA["fetch"]["strategy"].doc,
        )
    lock = doc.str_("fetch", "lock")
    if lock is not None:
        path = PurePosixPath(lock)
        if (not lock.strip() or path.is_absolute() or ".." in path.parts or "\\" in lock
                or "\0" in lock or str(path) == "."):
            raise doc.fail(
                "fetch",
                "lock",
                f"{lock!r} must be a relative path inside the project directory, without '..'",
                SCHEMA["fetch"]["lock"].doc,
            )

    timeout = doc.int_("build", "timeout_s")
    if timeout is not None and timeout <= 0:
        raise doc.fail("build", "timeout_s", f"must be positive, got {timeout}",
                       f"seconds, from 1 to {MAX_TIMEOUT_S} (a week)")
    if timeout is not None and timeout > MAX_TIMEOUT_S:
        raise doc.fail("build", "timeout_s", f"must be at most {MAX_TIMEOUT_S} (a week), "
                       f"got {timeout}", f"seconds, from 1 to {MAX_TIMEOUT_S}")

    for name, value in doc.env().items():
        where = f"[env].{name}"
        if not _ENV_NAME.fullmatch(name):
            raise RecipeError(
                f"{doc.origin}: [env] key {name!r} is not a valid environment variable name",
                hint="use letters, digits and '_', not starting with a digit",
            )
        if name in SANDBOX_ENV or name.startswith(_RESERVED_ENV_PREFIX):
            raise RecipeError(
                f"{doc.origin}: {where} is set by the sandbox and cannot be overridden",
                hint="the sandbox pins " + ", ".join(sorted(SANDBOX_ENV)) + " and every "
                f"{_RESERVED_ENV_PREFIX}* variable so both builds see the same environment; "
                f"remove {name} from [env]",
            )
        if "\0" in value:
            raise RecipeError(f"{doc.origin}: {where} contains a NUL byte", hint="remove it")
        _substitute(value, dict.fromkeys(PLACEHOLDERS, ""), f"{doc.origin}: {where}")


# --------------------------------------------------------------------------- selection


def _available(recipes: Mapping[str, Recipe]) -> str:
    """A hint listing the recipe names one can pass to --recipe."""
    if not recipes:
        return "no recipes are available"
    return "available recipes: " + ", ".join(sorted(recipes))


def detected_recipes(project_files: Collection[str],
                     recipes: Mapping[str, Recipe] | None = None) -> list[Recipe]:
    """Every recipe whose ``[detect]`` files are at the project's root, in detection order."""
    available = builtin_recipes() if recipes is None else recipes
    present = {str(PurePosixPath(f)) for f in project_files}
    return [r for r in available.values() if any(f in present for f in r.detect_files)]


def select_recipe(
    project_files: Collection[str],
    *,
    name: str | None,
    repo_recipe: bytes | None,
    repo_recipe_path: str = ".reprobuild.toml",
    recipes: Mapping[str, Recipe] | None = None,
) -> Recipe:
    """Pick the recipe: an explicit name wins, then the repository's own file, then detection.

    An explicit name still takes the repository's file as overrides on top of it (its
    ``[recipe].extends`` is replaced by the name). ``project_files`` are posix paths
    relative to the project directory; only the ones at its root matter for detection.
    """
    available = builtin_recipes() if recipes is None else recipes
    if name is not None:
        recipe = available.get(name)
        if recipe is not None and repo_recipe is not None:
            return _load_bytes(repo_recipe, repo_recipe_path, available, extends=name)
        if recipe is not None:
            return recipe
        message = f"unknown recipe {name!r}"
        close = difflib.get_close_matches(name, list(available), n=1)
        if close:
            message += f"; did you mean '{close[0]}'?"
        raise RecipeError(message, hint=_available(available))

    if repo_recipe is not None:
        return _load_bytes(repo_recipe, repo_recipe_path, available)

    found = detected_recipes(project_files, available)
    if found:
        return found[0]
    by_files: dict[tuple[str, ...], list[str]] = {}
    for r in available.values():
        if r.detect_files:
            by_files.setdefault(r.detect_files, []).append(r.name)
    looked = "; ".join(f"{', '.join(files)} ({', '.join(names)})"
                       for files, names in by_files.items())
    raise RecipeError(
        f"no recipe fits: looked for {looked or 'nothing (no recipe has [detect])'}",
        hint=f"pass --recipe NAME or add {repo_recipe_path} to the project directory "
        f"({_available(available)})",
    )


# --------------------------------------------------------------------------- rendering


def _substitute(template: str, values: Mapping[str, str | None], where: str) -> str:
    """Replace ``{placeholder}``s; ``{{``/``}}`` are literal braces, anything else is an error."""
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise RecipeError(
            f"{where}: bad placeholder syntax in {template!r}: {exc}",
            hint="write {{ and }} for literal braces",
        ) from exc
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise RecipeError(
                f"{where}: unknown placeholder {shown}",
                hint="placeholders: "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                + "; write {{ and }} for literal braces",
            )
        value = values[field]
        if value is None:
            raise RecipeError(
                f"{where}: uses {{{field}}} but the source is not a git commit",
                hint="build from a git repository and ref, or drop the placeholder",
            )
        out.append(value)
    return "".join(out)


def render_env(
    recipe: Recipe, *, commit: str | None, commit_time: int | None
) -> tuple[tuple[str, str], ...]:
    """The recipe's environment with placeholders filled in for one concrete commit."""
    values: dict[str, str | None] = {
        "commit": commit,
        "commit_time": str(DEFAULT_COMMIT_TIME if commit_time is None else commit_time),
    }
    return tuple(
        (key, _substitute(value, values, f"{recipe.origin}: [env].{key}"))
        for key, value in recipe.env
    )


# --------------------------------------------------------------------------- output


def _toml_str(value: str) -> str:
    """A TOML basic string; escapes every control character TOML forbids raw."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
    escapes |= {"\f": "\\f", "\r": "\\r"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_list(values: Iterable[str]) -> str:
    """A one-line TOML array of strings."""
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as a standalone TOML file; loading it gives the same recipe back."""
    lines = [
        f"# origin: {recipe.origin}".replace("\n", " "),
        f"schema = {SCHEMA_VERSION}",
        "",
        "[recipe]",
        f"name = {_toml_str(recipe.name)}",
        f"description = {_toml_str(recipe.description)}",
        f"image = {_toml_str(recipe.image)}",
    ]
    if recipe.detect_files:
        lines += ["", "[detect]", f"files_any = {_toml_list(recipe.detect_files)}"]
    lines += [
        "",
        "[build]",
        f"commands = {_toml_list(recipe.commands)}",
        f"outputs = {_toml_list(recipe.outputs)}",
    ]
    if recipe.timeout_s is not None:
        lines.append(f"timeout_s = {recipe.timeout_s}")
    if recipe.fetch_strategy != "none" or recipe.fetch_lock is not None:
        lines += ["", "[fetch]", f"strategy = {_toml_str(recipe.fetch_strategy)}"]
        if recipe.fetch_lock is not None:
            lines.append(f"lock = {_toml_str(recipe.fetch_lock)}")
    if recipe.env:
        lines += ["", "[env]"]
        lines += [f"{key} = {_toml_str(value)}" for key, value in recipe.env]
    return "\n".join(lines) + "\n"
