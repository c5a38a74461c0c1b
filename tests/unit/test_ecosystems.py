"""The ecosystem seam: one registry, lookups that never fall through, and a new ecosystem
added from here (no other module touched) planned end to end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from reprobuild import ecosystems
from reprobuild.archive import ExtractedFile
from reprobuild.ecosystems.interface import (
    DEPS_DIR,
    Ecosystem,
    FetchPlan,
    FetchSettings,
    Pin,
    Releases,
    Verified,
    files_of,
)
from reprobuild.errors import RecipeError, ReprobuildError
from reprobuild.fetch import cache_key, plan_fetch
from reprobuild.fetch.runner import fetch_env, fetch_script, input_tar
from reprobuild.images import ImageDefinition, ToolchainImage
from reprobuild.pipeline import plan as pipeline_plan
from reprobuild.recipes import load_recipe_file
from reprobuild.sandbox.spec import SandboxLimits
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256
from reprobuild.variations import Variation, plan_pair

IMAGE = ToolchainImage(name="python", tag="reprobuild/python:x", image_id="sha256:" + "1" * 64,
                       definition_sha256="2" * 64, versions=(), path_env="/usr/bin:/bin")


class Toy:
    """A made-up ecosystem: ``vendor.txt`` lists ``name version`` lines to download."""

    name = "toy"
    strategy = "toy-vendor"
    summary = "downloads what vendor.txt lists"
    allow_list: tuple[tuple[str, int], ...] = (("registry.toy.example", 443),)
    image_families: tuple[str, ...] = ("toy",)
    clock_via_libc = True
    releases: Releases | None = None
    fix_hints: Mapping[str, str] = {"content": "toys are reproducible"}

    def choose_image(self, tree: SourceTree, requested: str,
                     definitions: Mapping[str, ImageDefinition]) -> str:
        del definitions
        return "python" if "vendor.txt" in files_of(tree) else requested

    def governs(self, tree: SourceTree) -> bool:
        return True

    def reads_above(self, tree: SourceTree) -> tuple[tuple[str, str], ...]:
        del tree
        return ()

    def declares_package(self, tree: SourceTree) -> str | None:
        return "vendor.txt" if "vendor.txt" in files_of(tree) else None

    def plan_fetch(self, tree: SourceTree, settings: FetchSettings,
                   toolchain: ToolchainImage | None) -> FetchPlan:
        del toolchain
        text = files_of(tree).get("vendor.txt")
        if text is None:
            raise RecipeError(f"{settings.origin}: no vendor.txt", "add one")
        pins = tuple(Pin(name, version) for name, version in
                     (line.split() for line in text.decode().splitlines() if line))
        return FetchPlan(strategy=self.strategy, project_dir=tree.subdir,
                         files=(("vendor.txt", text),), pin_source="vendor.txt", pins=pins)

    def fetch_command(self, plan: FetchPlan) -> str:
        return f"toy-fetch --into {DEPS_DIR}/toy " + " ".join(p.name for p in plan.pins) + "\n"

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        del plan
        return {"TOY_PROXY": proxy, **({"TOY_CA": ca_file} if ca_file else {})}

    def build_env(self, plan: FetchPlan) -> tuple[tuple[str, str], ...]:
        del plan
        return (("TOY_OFFLINE", "1"), ("TOY_HOME", f"{DEPS_DIR}/toy"))

    def verify(self, plan: FetchPlan, files: Sequence[ExtractedFile], staging: Path) -> Verified:
        del staging
        return Verified(files=tuple(files), pins=tuple((p.name, p.version) for p in plan.pins))

    def diagnose(self, plan: FetchPlan, log: str) -> ReprobuildError | None:
        del plan, log
        return None

    def failure_line(self, log: str) -> str | None:
        return next((line for line in log.splitlines() if line.startswith("toy: ")), None)

    def failure_hint(self, log: str) -> str | None:
        del log
        return None


def tree(files: Mapping[str, str]) -> SourceTree:
    entries = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644, data=d.encode())
                    for p, d in sorted(files.items()))
    return SourceTree(location="/repo", kind=SourceKind.GIT_LOCAL, ref=None, commit="c" * 40,
                      commit_time=1767323045, subdir="", entries=entries,
                      tree_sha256=compute_tree_sha256(entries))


TOY_RECIPE = """schema = 1
[recipe]
name = "toy"
image = "toy"
[detect]
files_any = ["vendor.txt"]
[build]
commands = ["toy-build --out \\"$REPROBUILD_OUT\\""]
outputs = ["*.toy"]
[fetch]
strategy = "toy-vendor"
"""


def test_a_new_ecosystem_is_planned_end_to_end_without_touching_other_modules() -> None:
    toy = Toy()
    source = tree({"vendor.txt": "left-pad 1.3.0\nright-pad 2.0.0\n", "main.toy": "x",
                   ".reprobuild.toml": TOY_RECIPE})
    registered: Ecosystem = toy  # it satisfies the protocol (mypy checks this line)
    with ecosystems.registered(registered):
        assert ecosystems.get("toy-vendor") is toy and ecosystems.for_image("toy") is toy
        assert "toy-vendor" in ecosystems.strategy_names()
        # The repository's recipe names the strategy; recipes accept it from the registry.
        recipe = pipeline_plan.select(source, None)
        assert (recipe.fetch_strategy, recipe.image) == ("toy-vendor", "python")
        plan = plan_fetch(source, strategy=recipe.fetch_strategy, origin=recipe.origin,
                          lock=recipe.fetch_lock, toolchain=IMAGE)
        assert [(p.name, p.version) for p in plan.pins] == [("left-pad", "1.3.0"),
                                                            ("right-pad", "2.0.0")]
        # The fetch phase runs the ecosystem's command with its settings, behind its
        # allow-list, and hands only the planned files in.
        script = fetch_script(toy, plan)
        assert script.endswith("toy-fetch --into /deps/toy left-pad right-pad\n")
        assert "tar -x -f - -C /work" in script, "the shared head unpacks and starts the relay"
        env = fetch_env(toy, plan, IMAGE.path_env, has_ca=True)
        assert env["TOY_PROXY"] == env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
        assert env["TOY_CA"] == "/work/ca.pem"
        assert b"src/vendor.txt" in input_tar(plan, None)
        assert b"main.toy" not in input_tar(plan, None), "no source goes to the fetch"
        key = cache_key(plan, IMAGE.image_id)
        toy.allow_list = (("other.toy.example", 443),)
        assert cache_key(plan, IMAGE.image_id) != key, "the allow-list is part of the key"
        # The builds get its offline environment.
        env_a, _ = plan_pair({Variation.HOSTNAME}, host_cpus=2)
        spec = pipeline_plan.build_spec(env_a, tree=source, recipe=recipe, toolchain=IMAGE,
                                 limits=SandboxLimits(), deps=Path("/cache/deps/toy.tar"),
                                 deps_env=toy.build_env(plan))
        assert "TOY_OFFLINE=1" in spec.script and "TOY_HOME=/deps/toy" in spec.script
    # Gone again once the block ends: an unknown strategy is an error, not a fall-through.
    with pytest.raises(RecipeError, match=r"unknown \[fetch\].strategy 'toy-vendor'"):
        plan_fetch(source, strategy="toy-vendor", origin=".reprobuild.toml")
    with pytest.raises(RecipeError, match="'toy-vendor', not one of none, python-build, npm, "
                                          "pnpm, go-mod, cargo"):
        pipeline_plan.select(source, None)


def test_unknown_strategies_name_the_known_ones() -> None:
    with pytest.raises(RecipeError) as info:
        ecosystems.get("pnmp", origin="r.toml")
    assert "r.toml: unknown [fetch].strategy 'pnmp'; did you mean 'pnpm'?" in info.value.message
    assert info.value.hint == "known strategies: none, python-build, npm, pnpm, go-mod, cargo"
    with pytest.raises(ValueError, match="already registered"), \
            ecosystems.registered(ecosystems.get("npm")):
        pass


def test_recipe_files_validate_against_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(TOY_RECIPE)
    with pytest.raises(RecipeError,
                       match="not one of none, python-build, npm, pnpm, go-mod, cargo"):
        load_recipe_file(path)
    with ecosystems.registered(Toy()):
        assert load_recipe_file(path).fetch_strategy == "toy-vendor"
