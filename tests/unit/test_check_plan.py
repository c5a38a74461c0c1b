"""Planning one check: from source tree, recipe, image and BuildEnv to a sandbox spec."""

from __future__ import annotations

import io
import shlex
import tarfile
from pathlib import Path

import pytest

from reprobuild import ecosystems
from reprobuild.errors import InputError, RecipeError
from reprobuild.images import ToolchainImage
from reprobuild.pipeline.plan import (
    build_spec,
    prepare_out_dir,
    project_files,
    repo_recipe_bytes,
    select,
    select_with_reason,
)
from reprobuild.recipes import builtin_recipes
from reprobuild.sandbox.spec import SandboxLimits
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256
from reprobuild.variations import Variation, plan_pair

ENTRIES = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644, data=p.encode())
                for p in ("README.md", "servers/a/.reprobuild.toml", "servers/a/pyproject.toml",
                          "servers/a/src/x.py", "servers/b/pyproject.toml"))
TREE = SourceTree(location="/repo", kind=SourceKind.GIT_LOCAL, ref=None, commit="c" * 40,
                  commit_time=1767323045, subdir="servers/a", entries=ENTRIES,
                  tree_sha256=compute_tree_sha256(ENTRIES))
IMAGE = ToolchainImage(name="python", tag="reprobuild/python:x", image_id="sha256:" + "1" * 64,
                       definition_sha256="2" * 64, versions=(("hatchling", "1"),),
                       path_env="/opt/reprobuild/venv/bin:/usr/bin:/bin")


def test_project_files_are_relative_to_the_subdir() -> None:
    assert project_files(TREE) == [".reprobuild.toml", "pyproject.toml", "src/x.py"]


def test_repo_recipe_is_read_from_the_project_dir() -> None:
    assert repo_recipe_bytes(TREE) == b"servers/a/.reprobuild.toml"
    root = SourceTree(**{**TREE.__dict__, "subdir": ""})
    assert repo_recipe_bytes(root) is None


@pytest.mark.parametrize("variation", [Variation.BUILD_PATH, Variation.USER])
def test_build_spec_applies_the_plan(variation: Variation) -> None:
    recipe = builtin_recipes()["python"]
    a, b = plan_pair({variation}, host_cpus=2)
    spec_a = build_spec(a, tree=TREE, recipe=recipe, toolchain=IMAGE,
                        limits=SandboxLimits())
    spec_b = build_spec(b, tree=TREE, recipe=recipe, toolchain=IMAGE,
                        limits=spec_a.limits)
    assert spec_a.image == spec_b.image == IMAGE.image_id
    assert (spec_a.uid, spec_b.uid) == ((1000, 2000) if variation is Variation.USER
                                        else (1000, 1000))
    for env, spec in ((a, spec_a), (b, spec_b)):
        assert spec.writable == (env.workdir, env.home, "/tmp")
        assert f"cd {shlex.quote(env.workdir + '/servers/a')}" in spec.script
        assert "SOURCE_DATE_EPOCH=1767323045" in spec.script
        assert f"PATH={IMAGE.path_env}" in spec.script
        with tarfile.open(fileobj=io.BytesIO(spec.stdin)) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            assert all(m.mtime == 1767323045 for m in tar.getmembers())
        assert sorted(names) == sorted(e.path for e in ENTRIES), "whole tree goes in"


def test_file_order_reverses_the_source_stream() -> None:
    recipe = builtin_recipes()["python"]
    a, b = plan_pair({Variation.FILE_ORDER}, host_cpus=2)
    def files(spec_stdin: bytes) -> list[str]:
        with tarfile.open(fileobj=io.BytesIO(spec_stdin)) as tar:
            return [m.name for m in tar.getmembers() if m.isfile()]

    fa = files(build_spec(a, tree=TREE, recipe=recipe, toolchain=IMAGE,
                          limits=SandboxLimits()).stdin)
    fb = files(build_spec(b, tree=TREE, recipe=recipe, toolchain=IMAGE,
                          limits=SandboxLimits()).stdin)
    assert fa == sorted(fa)
    assert fb != fa and sorted(fb) == sorted(fa)


def test_out_dir_must_be_new_or_empty(tmp_path: Path) -> None:
    assert prepare_out_dir(tmp_path / "new").is_dir()
    assert prepare_out_dir(tmp_path / "new").is_dir(), "empty is fine"
    (tmp_path / "new" / "keep").write_text("mine")
    with pytest.raises(InputError, match="not an empty directory"):
        prepare_out_dir(tmp_path / "new")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError):
        prepare_out_dir(tmp_path / "file")
    assert (tmp_path / "new" / "keep").read_text() == "mine"


def _node_tree(files: dict[str, bytes], subdir: str) -> SourceTree:
    entries = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644, data=d)
                    for p, d in sorted(files.items()))
    return SourceTree(location="/m", kind=SourceKind.GIT_LOCAL, ref=None, commit="c" * 40,
                      commit_time=0, subdir=subdir, entries=entries,
                      tree_sha256=compute_tree_sha256(entries))


def test_node_projects_get_the_image_their_nvmrc_asks_for() -> None:
    files = {"package.json": b'{"workspaces": ["src/*"]}', ".nvmrc": b"v22.11.0\n",
             "src/s/package.json": b'{"name": "s"}'}
    assert select(_node_tree(files, "src/s"), "node").image == "node-22"
    del files[".nvmrc"]
    files["src/s/package.json"] = b'{"name": "s", "engines": {"node": ">=24"}}'
    assert select(_node_tree(files, "src/s"), "node").image == "node"
    assert select(_node_tree(files, "src/s"), "python").image == "python"
    # Detection picks the same: the npm recipe, refined by its ecosystem.
    assert select(_node_tree(files, "src/s"), None).image == "node"
    assert ecosystems.for_image("node") is ecosystems.get("npm")


PYPROJECT = b'[build-system]\nrequires = ["hatchling"]\n[project]\nname = "srv"\nversion = "1"\n'


def test_the_recipe_whose_manifest_declares_the_package_wins_and_says_why() -> None:
    release_tooling = b'{"private": true, "devDependencies": {"semantic-release": "^24"}}'
    recipe, reason = select_with_reason(_node_tree({"pyproject.toml": PYPROJECT,
                                                    "package.json": release_tooling}, ""),
                                        None)
    assert recipe.name == "python"
    assert reason == ("chosen over node: node (package.json: declares no package); python "
                      "(pyproject.toml: pyproject.toml names the package srv)")
    # Two manifests that both declare a package: never a silent pick.
    public = b'{"name": "srv-js", "version": "1.0.0"}'
    with pytest.raises(RecipeError, match="more than one recipe fits and 2 of them declare") \
            as info:
        select_with_reason(_node_tree({"pyproject.toml": PYPROJECT, "package.json": public},
                                      ""), None)
    assert "package.json names the package srv-js" in info.value.message
    assert info.value.hint is not None and "--recipe NAME" in info.value.hint
    # --recipe decides, and one detecting recipe needs no reason.
    assert select_with_reason(_node_tree({"pyproject.toml": PYPROJECT, "package.json": public},
                                         ""), "node")[0].name == "node"
    assert select_with_reason(_node_tree({"pyproject.toml": PYPROJECT}, ""), None)[1] is None
