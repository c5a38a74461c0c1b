"""The fetch phase without Docker: planning, locks, cache keys, the cache, the proxy's rules."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from reprobuild import ecosystems
from reprobuild.archive import ExtractedFile, FileOrder, build_tar
from reprobuild.ecosystems.interface import FetchPlan
from reprobuild.ecosystems.python import frontend_source as python_frontend_source
from reprobuild.ecosystems.python.plan import DEFAULT_BUILD_REQUIRES
from reprobuild.errors import DependencyIntegrityError, InputError, RecipeError, ReprobuildError
from reprobuild.fetch import FetchedDeps, cache_key, plan_fetch, replay_lock
from reprobuild.fetch.cache import DepsCache
from reprobuild.fetch.proxylog import parse_proxy_log
from reprobuild.fetch.runner import fetch_script
from reprobuild.hashlock import HashedLock, parse_hashed_lock
from reprobuild.incontainer import fetch_proxy
from reprobuild.recipes import Recipe, builtin_recipes, load_recipe_file, recipe_to_toml
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256

COMMIT_TIME = 1767323045  # 2026-01-02T03:04:05Z
H = {name: (str(i) * 64)[:64] for i, name in enumerate(
    ["hatchling", "packaging", "pathspec", "pluggy", "trove", "tomli", "other"], start=1)}


def tree(files: Mapping[str, str | bytes], *, subdir: str = "",
         commit_time: int | None = COMMIT_TIME) -> SourceTree:
    entries = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644,
                                data=d.encode() if isinstance(d, str) else d)
                    for p, d in sorted(files.items()))
    return SourceTree(location="/repo", kind=SourceKind.GIT_LOCAL, ref=None,
                      commit="c" * 40 if commit_time else None, commit_time=commit_time,
                      subdir=subdir, entries=entries, tree_sha256=compute_tree_sha256(entries))


def recipe(strategy: str, lock: str | None = None) -> Recipe:
    return dataclasses.replace(builtin_recipes()["python"], fetch_strategy=strategy,
                               fetch_lock=lock)


def make_plan(source: SourceTree, rec: Recipe, *, now: float | None = None) -> FetchPlan:
    """What the fetch phase plans for a recipe (the ecosystem's plan, via the registry)."""
    return plan_fetch(source, strategy=rec.fetch_strategy, origin=rec.origin,
                      lock=rec.fetch_lock, now=now)


def script_of(fetch_plan: FetchPlan) -> str:
    return fetch_script(ecosystems.get(fetch_plan.strategy), fetch_plan)


def build_env(strategy: str) -> tuple[tuple[str, str], ...]:
    return ecosystems.get(strategy).build_env(FetchPlan(strategy=strategy, project_dir=""))


def integrity_failure(log: str, fetch_plan: FetchPlan) -> ReprobuildError | None:
    return ecosystems.get(fetch_plan.strategy).diagnose(fetch_plan, log)


def parse_hashed_requirements(text: str, origin: str) -> HashedLock:
    return parse_hashed_lock(text, origin, options=True, markers=True)


HATCH = """[build-system]
requires = ["hatchling>=1.27"]
build-backend = "hatchling.build"

[project]
name = "demo"
version = "1.0.0"
"""


def requirements_of(plan: FetchPlan) -> str:
    return dict(plan.files)["requirements.txt"].decode()


# --------------------------------------------------------------------------- python


def test_no_fetch_strategy_plans_nothing() -> None:
    plan = make_plan(tree({"pyproject.toml": HATCH}), recipe("none"))
    assert plan.strategy == "none" and plan.files == ()


def test_build_requires_are_read_and_resolved_as_of_the_commit() -> None:
    plan = make_plan(tree({"pyproject.toml": HATCH, "src/x.py": "import os"}),
                      recipe("python-build"))
    assert plan.strategy == "python-build"
    assert plan.requirements == ("hatchling>=1.27",)
    assert plan.pin_source == "resolved" and plan.cutoff == COMMIT_TIME and not plan.hashed
    assert [p for p, _ in plan.files] == ["requirements.txt", "reprobuild-pep517.py"], \
        "only generated input and the frontend go in"
    assert dict(plan.files)["reprobuild-pep517.py"] == python_frontend_source()
    assert requirements_of(plan).splitlines()[1:] == ["hatchling>=1.27"]
    script = script_of(plan)
    assert "--uploaded-prior-to 2026-01-02T03:04:05Z" in script
    assert "--only-binary :all:" in script and "--require-hashes" not in script


def test_default_build_requires_without_build_system() -> None:
    for files in ({"setup.py": "from setuptools import setup; setup()"},
                  {"pyproject.toml": "[project]\nname = 'x'\n"}):
        plan = make_plan(tree(files), recipe("python-build"))
        assert plan.requirements == DEFAULT_BUILD_REQUIRES == ("setuptools>=40.8.0", "wheel")
        assert plan.notes and "default" in plan.notes[0]


def test_subdir_project_and_hatch_hook_dependencies() -> None:
    pyproject = HATCH + """
[tool.hatch.build.hooks.vcs]
dependencies = ["hatch-vcs>=0.4"]

[tool.hatch.build.targets.wheel.hooks.custom]
dependencies = ["hatch-fancy-pypi-readme"]
"""
    plan = make_plan(tree({"servers/a/pyproject.toml": pyproject, "pyproject.toml": "x = ="},
                           subdir="servers/a"), recipe("python-build"))
    assert plan.requirements == ("hatchling>=1.27", "hatch-vcs>=0.4", "hatch-fancy-pypi-readme")
    assert plan.project_dir == "servers/a"


def test_bad_pyproject_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="not valid TOML"):
        make_plan(tree({"pyproject.toml": "[build-system\n"}), recipe("python-build"))
    with pytest.raises(RecipeError, match="list of strings"):
        make_plan(tree({"pyproject.toml": "[build-system]\nrequires = 'x'\n"}),
                   recipe("python-build"))


def test_a_directory_source_resolves_as_of_the_start_of_today() -> None:
    plan = make_plan(tree({"pyproject.toml": HATCH}, commit_time=None), recipe("python-build"),
                      now=1767323045.5)
    assert plan.cutoff == 1767312000  # 2026-01-02T00:00:00Z


LOCK = f"""# hashed build lock
--index-url https://pypi.org/simple
hatchling==1.28.0 \\
    --hash=sha256:{H["hatchling"]}
packaging==25.0 --hash=sha256:{H["packaging"]}  # inline comment
pathspec==0.12.1 --hash=sha256:{H["pathspec"]} --hash=sha512:{"ab" * 64}
pluggy==1.6.0 --hash=sha256:{H["pluggy"]}
trove-classifiers==2025.12.1.14 --hash=sha256:{H["trove"]}
tomli==2.0.1 ; python_version < "3.11" --hash=sha256:{H["tomli"]}
"""


def test_a_hashed_lock_named_by_the_recipe_pins_everything() -> None:
    plan = make_plan(tree({"a/pyproject.toml": HATCH, "a/build.lock": LOCK}, subdir="a"),
                      recipe("python-build", "build.lock"))
    assert plan.hashed and plan.cutoff is None and plan.pin_source == "lock:a/build.lock"
    assert [(p.name, p.version) for p in plan.pins][:2] == [("hatchling", "1.28.0"),
                                                          ("packaging", "25.0")]
    assert plan.pins[2].hashes == (f"sha256:{H['pathspec']}", f"sha512:{'ab' * 64}")
    assert plan.pins[-1].marker == 'python_version < "3.11"'
    text = requirements_of(plan)
    assert "--index-url https://pypi.org/simple" in text
    assert f'tomli==2.0.1 ; python_version < "3.11" --hash=sha256:{H["tomli"]}' in text
    script = script_of(plan)
    assert "--no-deps --require-hashes" in script and "--uploaded-prior-to" not in script


@pytest.mark.parametrize(("line", "message"), [
    ("-e .", "option -e is not allowed"),
    ("--no-binary :all:", "option --no-binary"),
    ("-r other.txt", "option -r"),
    ("hatchling>=1 --hash=sha256:" + "1" * 64, "not pinned to one version"),
    ("hatchling==1.*", "not pinned"),
    ("hatchling==1.28.0", "has no --hash"),
    ("hatchling @ https://example.invalid/h.whl --hash=sha256:" + "1" * 64, "not pinned"),
    ("hatchling==1.28.0 --no-deps --hash=sha256:" + "1" * 64, "only --hash options"),
])
def test_hashed_lock_refuses_what_could_build_or_escape(line: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_hashed_requirements(line + "\n", "build.lock")


def test_lock_must_cover_the_build_requirements() -> None:
    with pytest.raises(RecipeError, match=r"does not pin build requirement 'hatchling>=1\.29'"):
        make_plan(tree({"pyproject.toml": HATCH.replace("1.27", "1.29"), "l.txt": LOCK}),
                   recipe("python-build", "l.txt"))
    with pytest.raises(RecipeError, match="not in the source tree"):
        make_plan(tree({"pyproject.toml": HATCH}), recipe("python-build", "missing.txt"))


FILES = "https://files.pythonhosted.org/x"


def uv_package(name: str, version: str, hash_: str, deps: str = "[]",
               wheel: str | None = None, extra: str = "") -> str:
    wheel = wheel or f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return f"""
[[package]]
name = "{name}"
version = "{version}"
source = {{ registry = "https://pypi.org/simple" }}
dependencies = {deps}
sdist = {{ url = "{FILES}/{name}-{version}.tar.gz", hash = "sha256:{"f" * 64}" }}
wheels = [
    {{ url = "{FILES}/{wheel}", hash = "sha256:{hash_}" }},
    {{ url = "{FILES}/{name}-{version}-cp311-cp311-win_amd64.whl", hash = "sha256:{"e" * 64}" }},
]
{extra}"""


UV_LOCK = "version = 1\nrevision = 3\nrequires-python = \">=3.10\"\n" + "".join([
    uv_package("hatchling", "1.28.0", H["hatchling"], """[
    { name = "packaging" },
    { name = "pathspec" },
    { name = "pluggy" },
    { name = "tomli", marker = "python_full_version < '3.11'" },
    { name = "trove-classifiers" },
]"""),
    uv_package("packaging", "25.0", H["packaging"]),
    uv_package("pathspec", "0.12.1", H["pathspec"]),
    uv_package("pluggy", "1.6.0", H["pluggy"]),
    uv_package("tomli", "2.0.1", H["tomli"]),
    uv_package("trove-classifiers", "2025.12.1.14", H["trove"]),
    uv_package("demo", "1.0.0", H["other"]).replace(
        'source = { registry = "https://pypi.org/simple" }', 'source = { editable = "." }'),
])


def test_uv_lock_entries_pin_the_build_requirements_when_they_cover_them() -> None:
    plan = make_plan(tree({"pyproject.toml": HATCH, "uv.lock": UV_LOCK}),
                      recipe("python-build"))
    assert plan.pin_source == "uv.lock:uv.lock" and plan.hashed
    assert [(p.name, p.version, p.hashes) for p in plan.pins] == [
        ("hatchling", "1.28.0", (f"sha256:{H['hatchling']}",)),
        ("packaging", "25.0", (f"sha256:{H['packaging']}",)),
        ("pathspec", "0.12.1", (f"sha256:{H['pathspec']}",)),
        ("pluggy", "1.6.0", (f"sha256:{H['pluggy']}",)),
        ("trove-classifiers", "2025.12.1.14", (f"sha256:{H['trove']}",)),
    ], "tomli is for Python < 3.11 only; the win_amd64 wheel's hash is not allowed"


@pytest.mark.parametrize(("change", "why"), [
    (lambda t: t.replace('name = "pluggy"\nversion', 'name = "plugy"\nversion'), "pluggy"),
    (lambda t: t.replace("hatchling-1.28.0-py3-none-any", "hatchling-1.28.0-cp311-cp311-win32"),
     "no wheel"),
    (lambda t: t.replace('version = "1.28.0"', 'version = "1.26.0"'), "0 entries"),
])
def test_uv_lock_that_does_not_cover_them_falls_back_to_resolution(
        change: Callable[[str], str], why: str) -> None:
    changed = change(UV_LOCK)
    assert changed != UV_LOCK
    plan = make_plan(tree({"pyproject.toml": HATCH, "uv.lock": changed}),
                      recipe("python-build"))
    assert plan.pin_source == "resolved" and plan.cutoff == COMMIT_TIME
    assert why in plan.notes[0] and "does not cover" in plan.notes[0]


# --------------------------------------------------------------------------- npm

PACKAGE_LOCK = {
    "name": "mono", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
    "packages": {
        "": {"name": "mono", "workspaces": ["src/*"]},
        "src/a": {"name": "a", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}},
        "src/b": {"name": "b", "version": "1.0.0"},
        "node_modules/a": {"resolved": "src/a", "link": True},
        "node_modules/b": {"resolved": "src/b", "link": True},
        "node_modules/is-number": {
            "version": "7.0.0",
            "resolved": "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz",
            "integrity": "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QK"
                         "PDlK9cGvNp6NZWZUBlbGXYxxng=="},
        "src/a/node_modules/@scope/x": {"version": "2.0.0", "integrity": "sha512-AAAA"},
    },
}
MONOREPO = {
    "package.json": json.dumps({"name": "mono", "private": True, "workspaces": ["src/*"]}),
    "package-lock.json": json.dumps(PACKAGE_LOCK),
    "README.md": "# mono",
    ".npmrc": "registry=https://registry.attacker.example/",
    "src/a/package.json": json.dumps({"name": "a", "dependencies": {"is-number": "7.0.0"}}),
    "src/a/index.ts": "export const a = 1;",
    "src/b/package.json": json.dumps({"name": "b"}),
    "src/b/index.ts": "export const b = 1;",
    "docs/package.json": "{}",
    "src/a/test/fixture/package.json": "{}",
}


def test_npm_copies_only_manifests_of_the_root_and_every_workspace() -> None:
    plan = make_plan(tree(MONOREPO, subdir="src/a"), recipe("npm"))
    assert plan.strategy == "npm" and plan.lock_root == ""
    assert [p for p, _ in plan.files] == ["package.json", "package-lock.json",
                                          "src/a/package.json", "src/b/package.json"]
    assert dict(plan.files)["package-lock.json"] == MONOREPO["package-lock.json"].encode()
    assert [(p.name, p.version) for p in plan.pins] == [("@scope/x", "2.0.0"),
                                                        ("is-number", "7.0.0")]
    assert plan.pins[1].hashes[0].startswith("sha512-41Cifkg6")
    assert any(".npmrc is not used" in n for n in plan.notes)
    script = script_of(plan)
    assert "npm ci --ignore-scripts --no-audit --no-fund --cache /deps/npm-cache" in script


def test_npm_lock_in_the_project_itself_and_a_nested_project() -> None:
    files = {"package.json": '{"name": "x"}', "package-lock.json": json.dumps(
        {"lockfileVersion": 3, "packages": {"": {"name": "x"}}})}
    plan = make_plan(tree(files), recipe("npm"))
    assert [p for p, _ in plan.files] == ["package.json", "package-lock.json"]
    nested = {f"tools/x/{k}": v for k, v in files.items()}
    plan = make_plan(tree(nested, subdir="tools/x"), recipe("npm"))
    assert plan.lock_root == "tools/x"


def test_an_npm_workspace_member_with_its_own_lock_agrees_with_npm_on_the_root() -> None:
    member_lock = json.dumps({"lockfileVersion": 3, "packages": {"": {"name": "m"}}})
    root_lock = json.dumps({"lockfileVersion": 3, "packages": {
        "": {"name": "mono", "workspaces": ["src/*"]}, "src/m": {"name": "m"}}})
    files = {"package.json": '{"name": "mono", "workspaces": ["src/*"]}',
             "src/m/package.json": '{"name": "m"}', "src/m/package-lock.json": member_lock}
    # The root has no lockfile: the member's is used and npm is kept in the member.
    plan = make_plan(tree(files, subdir="src/m"), recipe("npm"))
    assert plan.lock_root == "src/m"
    assert ("REPROBUILD_NPM_FLAGS", "--workspaces=false") in ecosystems.get("npm").build_env(plan)
    assert any("--workspaces=false" in n for n in plan.notes)
    # The root has one: npm ci in the member installs from the root, so the fetch does too.
    plan = make_plan(tree({**files, "package-lock.json": root_lock}, subdir="src/m"),
                     recipe("npm"))
    assert plan.lock_root == ""
    assert ("REPROBUILD_NPM_FLAGS", "") in ecosystems.get("npm").build_env(plan)


@pytest.mark.parametrize(("lock", "manager"), [("yarn.lock", "Yarn"), ("bun.lockb", "Bun")])
def test_npm_refuses_other_lockfiles_clearly(lock: str, manager: str) -> None:
    files = {"package.json": '{"name": "x"}', lock: "lockfileVersion: '9.0'\n"}
    with pytest.raises(RecipeError, match=f"found {lock}: {manager} lockfiles are not read by "
                                          "the fetch phase; supported are package-lock.json"
                       ) as info:
        make_plan(tree(files), recipe("npm"))
    assert "pnpm-lock.yaml (--recipe pnpm)" in info.value.message
    assert "pnpm import" in (info.value.hint or "")


def test_npm_forced_onto_a_pnpm_project_points_at_the_pnpm_recipe() -> None:
    files = {"package.json": '{"name": "x"}', "pnpm-lock.yaml": "lockfileVersion: '9.0'\n"}
    with pytest.raises(RecipeError, match=r"pnpm-lock\.yaml locks this project") as info:
        make_plan(tree(files), recipe("npm"))
    assert "--recipe pnpm" in (info.value.hint or "")


def test_npm_without_any_lockfile_or_outside_the_workspaces() -> None:
    with pytest.raises(RecipeError, match=r"no package-lock\.json"):
        make_plan(tree({"package.json": "{}"}), recipe("npm"))
    with pytest.raises(RecipeError, match="docs is not a workspace"):
        make_plan(tree(MONOREPO, subdir="docs"), recipe("npm"))
    old = {**MONOREPO, "package-lock.json": json.dumps({"lockfileVersion": 1,
                                                         "dependencies": {}})}
    with pytest.raises(RecipeError, match="lockfileVersion 2 or 3"):
        make_plan(tree(old), recipe("npm"))


# --------------------------------------------------------------------------- cache keys


def test_cache_key_is_stable_and_covers_every_input() -> None:
    plan = make_plan(tree(MONOREPO, subdir="src/a"), recipe("npm"))
    key = cache_key(plan, "sha256:img")
    assert key == cache_key(make_plan(tree(MONOREPO, subdir="src/a"), recipe("npm")),
                            "sha256:img")
    assert len(key) == 64
    # Source changes that npm ci does not read keep the key; a subdir in the same root too.
    edited = {**MONOREPO, "src/a/index.ts": "changed", "README.md": "changed"}
    assert cache_key(make_plan(tree(edited, subdir="src/b"), recipe("npm")), "sha256:img") \
        == key
    assert cache_key(plan, "sha256:other-image") != key
    lock = json.loads(MONOREPO["package-lock.json"])
    lock["packages"]["node_modules/is-number"]["version"] = "7.0.1"
    bumped = {**MONOREPO, "package-lock.json": json.dumps(lock)}
    assert cache_key(make_plan(tree(bumped), recipe("npm")), "sha256:img") != key


def test_python_cache_key_depends_on_requirements_and_cutoff_only() -> None:
    base = make_plan(tree({"pyproject.toml": HATCH}), recipe("python-build"))
    version_bump = make_plan(tree({"pyproject.toml": HATCH.replace("1.0.0", "2.0.0")}),
                              recipe("python-build"))
    assert cache_key(base, "i") == cache_key(version_bump, "i")
    later = make_plan(tree({"pyproject.toml": HATCH}, commit_time=COMMIT_TIME + 1),
                       recipe("python-build"))
    assert cache_key(later, "i") != cache_key(base, "i")
    pinned = make_plan(tree({"pyproject.toml": HATCH, "l": LOCK}, commit_time=COMMIT_TIME + 9),
                        recipe("python-build", "l"))
    pinned_earlier = make_plan(tree({"pyproject.toml": HATCH, "l": LOCK}),
                                recipe("python-build", "l"))
    assert cache_key(pinned, "i") == cache_key(pinned_earlier, "i"), "a lock ignores the date"


# --------------------------------------------------------------------------- cache + tar


def members_for(files: dict[str, bytes], staging: Path) -> list[ExtractedFile]:
    found = []
    for path, data in files.items():
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(data)
        found.append(ExtractedFile(path=path, sha256=hashlib.sha256(data).hexdigest(),
                                   size=len(data)))
    return found


def test_cache_store_load_and_rebuild_from_blobs(tmp_path: Path) -> None:
    cache = DepsCache(tmp_path / "cache")
    files = {"wheels/a-1-py3-none-any.whl": b"A" * 3000, "wheels/b-1-py3-none-any.whl": b"B",
             "npm-cache/_cacache/index-v5/aa/bb/cc": b"index"}
    members = members_for(files, tmp_path / "staging")
    assert cache.load("k" * 64) is None
    meta = cache.store("k" * 64, tmp_path / "staging", members, {"env": [["A", "1"]]})
    assert cache.load("k" * 64) == meta
    tar_path = cache.tar_path("k" * 64)
    first = tar_path.read_bytes()
    assert len(first) % tarfile.RECORDSIZE == 0
    with tarfile.open(tar_path) as tar:
        names = [(m.name, m.type, m.mode, m.mtime, m.uid) for m in tar.getmembers()]
    assert names[0] == ("npm-cache", tarfile.DIRTYPE, 0o755, 315532800, 0)
    assert [n for n, t, *_ in names if t == tarfile.REGTYPE] == sorted(files)
    assert all(t in (tarfile.REGTYPE, tarfile.DIRTYPE) for _, t, *_ in names)
    # A damaged archive is rebuilt, bit for bit, from the blobs.
    tar_path.write_bytes(b"garbage")
    assert cache.load("k" * 64) == meta and tar_path.read_bytes() == first
    # Missing archive and a corrupt blob: a miss, never a wrong archive.
    tar_path.unlink()
    cache.blob(members[0].sha256).write_bytes(b"tampered")
    assert cache.load("k" * 64) is None
    assert oct(cache.meta_path("k" * 64).stat().st_mode & 0o777) == "0o644"


def test_deps_tar_extracts_after_the_source_tar_on_one_stdin(tmp_path: Path) -> None:
    entries = tree({"pyproject.toml": HATCH, "src/x.py": "x = 1\n" * 5000}).entries
    source = build_tar(entries, order=FileOrder.SORTED, mtime=COMMIT_TIME)
    cache = DepsCache(tmp_path / "cache")
    members = members_for({"wheels/w-1-py3-none-any.whl": b"W" * 12345}, tmp_path / "staging")
    cache.store("d" * 64, tmp_path / "staging", members, {})
    stream = source + cache.tar_path("d" * 64).read_bytes()
    (tmp_path / "w").mkdir()
    (tmp_path / "deps").mkdir()
    subprocess.run(["sh", "-c", f"tar -x -f - -C {tmp_path / 'w'} && "
                    f"tar -x -f - -C {tmp_path / 'deps'}"], input=stream, check=True)
    assert (tmp_path / "w/src/x.py").read_text() == "x = 1\n" * 5000
    assert (tmp_path / "deps/wheels/w-1-py3-none-any.whl").read_bytes() == b"W" * 12345


def test_build_env_and_replay_lock() -> None:
    python = dict(build_env("python-build"))
    assert python["PIP_NO_INDEX"] == python["UV_NO_INDEX"] == python["UV_OFFLINE"] == "1"
    assert python["PIP_FIND_LINKS"] == python["UV_FIND_LINKS"] == "/deps/wheels"
    assert ("npm_config_offline", "true") in build_env("npm")
    deps = FetchedDeps(strategy="python-build", key="k", archive=None, env=(),
                       pins=(("hatchling", "1.28.0"),), requests=(), cache_hit=False,
                       seconds=0, failure=None,
                       hashes=(("hatchling==1.28.0", "sha256:" + H["hatchling"]),))
    text = replay_lock(deps)
    pins = parse_hashed_requirements(text, "replay").pins
    assert pins[0].hashes == ("sha256:" + H["hatchling"],)


# --------------------------------------------------------------------------- failures


PIP_LOG = f"""Collecting pathspec==0.12.1 (from -r requirements.txt (line 4))
ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have ...
    pathspec==0.12.1 from {FILES}/pathspec-0.12.1-py3-none-any.whl (from -r r.txt (line 4)):
        Expected sha256 {"b" * 64}
             Got        {"a" * 64}
"""
NPM_LOG = """npm error code EINTEGRITY
npm error sha512-rXu0Ii== integrity checksum failed when using sha512: \
wanted sha512-rXu0Ii== but got sha512-41Cif==. (1546 bytes)
"""


def test_integrity_failures_name_the_package_and_both_hashes() -> None:
    plan = make_plan(tree({"pyproject.toml": HATCH, "l": LOCK}), recipe("python-build", "l"))
    error = integrity_failure(PIP_LOG, plan)
    assert isinstance(error, DependencyIntegrityError) and isinstance(error, InputError)
    assert (error.package, error.expected, error.actual) == (
        "pathspec==0.12.1", "sha256:" + "b" * 64, "sha256:" + "a" * 64)
    assert "pathspec==0.12.1 does not match l" in error.message
    npm_plan = dataclasses.replace(make_plan(tree(MONOREPO), recipe("npm")), pins=(
        dataclasses.replace(make_plan(tree(MONOREPO), recipe("npm")).pins[1],
                            hashes=("sha512-rXu0Ii==",)),))
    error = integrity_failure(NPM_LOG, npm_plan)
    assert isinstance(error, DependencyIntegrityError) and error.package == "is-number@7.0.0"
    assert (error.expected, error.actual) == ("sha512-rXu0Ii==", "sha512-41Cif==")
    assert integrity_failure("ERROR: No matching distribution found", plan) is None


def test_proxy_log_parsing_skips_noise() -> None:
    text = "\n".join([
        json.dumps({"event": "ready", "socket": "/s"}), "garbage {",
        json.dumps({"event": "request", "host": "pypi.org", "port": 443, "method": "CONNECT",
                    "target": "pypi.org:443", "allowed": True, "status": 200, "time": 1.5}),
        json.dumps({"event": "request", "host": "x.example", "port": 443, "method": "CONNECT",
                    "target": "x.example:443", "allowed": False, "status": 403, "time": 2}),
    ])
    got = parse_proxy_log(text)
    assert [(r.host, r.allowed, r.status) for r in got] == [("pypi.org", True, 200),
                                                            ("x.example", False, 403)]


# --------------------------------------------------------------------------- recipes


def test_recipe_fetch_table(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('schema = 1\n[recipe]\nextends = "python"\n[fetch]\n'
                    'strategy = "python-build"\nlock = "build/requirements.lock"\n')
    loaded = load_recipe_file(path)
    assert (loaded.fetch_strategy, loaded.fetch_lock) == ("python-build",
                                                          "build/requirements.lock")
    again = tmp_path / "again.toml"
    again.write_text(recipe_to_toml(loaded))
    assert load_recipe_file(again) == dataclasses.replace(loaded, origin=str(again))
    for body, message in [('strategy = "pip"',
                           "not one of none, python-build, npm, pnpm, go-mod, cargo"),
                          ('strategy = "npn"', "did you mean 'npm'"),
                          ('lock = "../x"', "relative path inside the project"),
                          ('lock = "/etc/x"', "relative path"), ("locks = 'x'", "unknown key")]:
        path.write_text(f'schema = 1\n[recipe]\nextends = "python"\n[fetch]\n{body}\n')
        with pytest.raises(RecipeError, match=message):
            load_recipe_file(path)


# --------------------------------------------------------------------------- the proxy


class Upstream:
    """A fake connect(): records what the proxy dialled, hands back one end of a pair."""

    def __init__(self) -> None:
        self.dialled: list[tuple[str, int]] = []
        self.far: socket.socket | None = None

    def __call__(self, address: tuple[str, int], timeout: float) -> socket.socket:
        self.dialled.append(address)
        near, self.far = socket.socketpair()
        return near


def serve_one(request: bytes, upstream: Upstream,
              allow: str = "pypi.org:443,files.pythonhosted.org:443,deb.debian.org:80",
              upstream_reply: bytes = b"") -> tuple[bytes, list[dict[str, object]], bytes]:
    client, server = socket.socketpair()
    out = io.StringIO()
    log = fetch_proxy.Log(out)

    def serve() -> None:
        with server:
            fetch_proxy.handle(server, fetch_proxy.parse_allow(allow), log, upstream)

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    client.sendall(request)
    seen = b""
    if upstream_reply:
        deadline = threading.Event()
        while upstream.far is None and not deadline.wait(0.01):
            pass
        assert upstream.far is not None
        upstream.far.settimeout(5)
        while b"\r\n\r\n" not in seen:
            seen += upstream.far.recv(65536)
        upstream.far.sendall(upstream_reply)
        upstream.far.close()
    client.shutdown(socket.SHUT_WR)
    client.settimeout(5)
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    worker.join(5)
    client.close()
    if upstream.far is not None:
        upstream.far.close()
    return answer, [json.loads(line) for line in out.getvalue().splitlines()], seen


@pytest.mark.parametrize("target", ["registry.attacker.example:443", "pypi.org:22",
                                    "203.0.113.7:443", "[2001:db8::5]:443",
                                    "PyPI.org.evil.invalid:443", "files.pythonhosted.org:80"])
def test_proxy_refuses_off_list_targets_without_connecting(target: str) -> None:
    upstream = Upstream()
    answer, log, _ = serve_one(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode(),
                               upstream)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert upstream.dialled == [], "nothing may be dialled for a refused request"
    assert log == [{"event": "request", "host": log[0]["host"], "port": log[0]["port"],
                    "method": "CONNECT", "target": target, "allowed": False, "status": 403,
                    "time": log[0]["time"]}]


def test_proxy_tunnels_allow_listed_hosts_and_logs_them() -> None:
    upstream = Upstream()
    answer, log, seen = serve_one(b"CONNECT PyPI.org.:443 HTTP/1.1\r\n\r\nclient-hello\r\n\r\n",
                                  upstream, upstream_reply=b"server-hello")
    assert upstream.dialled == [("pypi.org", 443)]
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\nserver-hello"
    assert seen == b"client-hello\r\n\r\n"
    assert log[0]["allowed"] is True and log[0]["status"] == 200 and log[0]["host"] == "pypi.org"


def test_proxy_forwards_plain_http_with_connection_close() -> None:
    upstream = Upstream()
    request = (b"GET http://deb.debian.org/debian/dists HTTP/1.1\r\nHost: deb.debian.org\r\n"
               b"Proxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n")
    answer, log, seen = serve_one(request, upstream,
                                  upstream_reply=b"HTTP/1.1 200 OK\r\n\r\nbody")
    assert upstream.dialled == [("deb.debian.org", 80)]
    assert seen.startswith(b"GET /debian/dists HTTP/1.1\r\n")
    assert b"Proxy-Connection" not in seen and b"Connection: close" in seen
    assert b"Host: deb.debian.org" in seen and b"Accept: */*" in seen
    assert answer == b"HTTP/1.1 200 OK\r\n\r\nbody"
    assert log[0]["method"] == "GET" and log[0]["target"] == "http://deb.debian.org/debian/dists"


@pytest.mark.parametrize("request_", [b"GET / HTTP/1.1\r\n\r\n", b"nonsense\r\n\r\n",
                                      b"GET https://pypi.org/ HTTP/1.1\r\n\r\n",
                                      b"CONNECT pypi.org HTTP/1.1\r\n\r\n", b"\r\n\r\n"])
def test_proxy_answers_malformed_requests_with_400(request_: bytes) -> None:
    upstream = Upstream()
    answer, log, _ = serve_one(request_, upstream)
    assert answer.startswith(b"HTTP/1.1 400 ") and upstream.dialled == []
    assert log[0]["status"] == 400 and log[0]["allowed"] is False


def test_proxy_log_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_proxy, "MAX_LOG_LINES", 2)
    out = io.StringIO()
    log = fetch_proxy.Log(out)
    for _ in range(5):
        log.event(event="request", host="h")
    assert len(out.getvalue().splitlines()) == 2 and log.dropped == 3
    with pytest.raises(ValueError, match="bad allow-list entry"):
        fetch_proxy.parse_allow("pypi.org")
