"""Node.js projects: toolchain choice from engines/.nvmrc, lockfile support, and the Node
fixtures being real (lockfiles generated against the registries). No Docker here."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from reprobuild import images
from reprobuild.ecosystems.node.toolchain import (
    LTS_CODENAMES,
    node_images,
    parse_range,
    satisfies,
    select_node_image,
)
from reprobuild.errors import ExitCode, RecipeError
from reprobuild.recipes import builtin_recipes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MONOREPO = FIXTURES / "monorepo"
AVAILABLE = {"node": "24.19.0", "node-22": "22.20.0", "node-20": "20.18.0"}


def manifest(engines: object = None) -> bytes:
    data: dict[str, object] = {"name": "demo", "version": "1.0.0"}
    if engines is not None:
        data["engines"] = engines
    return json.dumps(data).encode()


# --------------------------------------------------------------------------- semver


# Expected values cross-checked against npm's own semver package (node-semver 7).
@pytest.mark.parametrize(("range_text", "inside", "outside"), [
    (">=18", ["18.0.0", "24.19.0"], ["16.20.2"]),
    (">= 18", ["18.0.0"], ["17.9.9"]),
    ("^18.17.0", ["18.17.0", "18.99.0"], ["18.16.9", "19.0.0"]),
    ("^20 || ^22", ["20.0.0", "22.20.0"], ["21.7.3", "24.0.0"]),
    ("18 || 20 || 22", ["20.18.0"], ["21.0.0", "23.0.0"]),
    ("20 - 22", ["20.0.0", "22.99.0"], ["19.9.9", "23.0.0"]),
    ("20.1 - 22.3", ["20.1.0", "22.3.9"], ["20.0.9", "22.4.0"]),
    ("22.20.0 - 24", ["22.20.0", "24.19.0"], ["22.19.9", "25.0.0"]),
    ("22.x", ["22.0.0", "22.20.0"], ["21.9.9", "23.0.0"]),
    ("22", ["22.20.0"], ["24.0.0"]),
    ("~22.20", ["22.20.9"], ["22.21.0"]),
    ("~> 22.1", ["22.1.0"], ["22.2.0"]),
    (">=20 <23", ["22.20.0"], ["23.0.0", "19.0.0"]),
    ("<=22", ["22.99.0"], ["23.0.0"]),
    ("<=22.5", ["22.5.9"], ["22.6.0"]),
    (">22", ["23.0.0"], ["22.99.0"]),
    (">22.20", ["22.21.0"], ["22.20.9"]),
    ("=22.20.0", ["22.20.0"], ["22.20.1"]),
    ("v22.20.0", ["22.20.0"], ["22.21.0"]),
    (">=18.0.0-0", ["18.0.0"], ["17.0.0"]),
    (">=22.0.0 <24.0.0-0", ["23.11.1"], ["24.0.0"]),
    ("^0.2.3", ["0.2.9"], ["0.3.0"]),
    ("^0.0.3", ["0.0.3"], ["0.0.4"]),
    ("*", ["0.0.1", "24.19.0"], []),
    ("", ["24.19.0"], []),
    ("<*", [], ["24.19.0"]),
])
def test_satisfies_like_npm(range_text: str, inside: list[str], outside: list[str]) -> None:
    for version in inside:
        assert satisfies(version, range_text), (version, range_text)
    for version in outside:
        assert not satisfies(version, range_text), (version, range_text)


@pytest.mark.parametrize("bad", ["node >= 18", "lts", ">=18.0.0.1", "^^18", "18 - ", "01.2.3",
                                 ">=18 - 20", "x" * 1001])
def test_bad_ranges_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_range(bad)


def test_satisfies_wants_a_release_version() -> None:
    with pytest.raises(ValueError, match="release version"):
        satisfies("22", ">=18")


# --------------------------------------------------------------------------- selection


def test_no_constraints_picks_the_newest() -> None:
    assert select_node_image(manifest(), None, AVAILABLE) == "node"
    assert select_node_image(manifest({"npm": ">=9"}), None, AVAILABLE) == "node"
    assert select_node_image(manifest({"node": "*"}), b"\n", AVAILABLE) == "node"


@pytest.mark.parametrize(("engines", "expected"), [
    (">=18", "node"),
    ("^22.11.0", "node-22"),
    ("20 || 22", "node-22"),
    (">=20 <23", "node-22"),
    ("~20.18", "node-20"),
    ("18.x || 20.x", "node-20"),
])
def test_engines_node_is_honoured_exactly(engines: str, expected: str) -> None:
    assert select_node_image(manifest({"node": engines}), None, AVAILABLE) == expected


@pytest.mark.parametrize(("nvmrc", "expected"), [
    (b"22\n", "node-22"),
    (b"v22.11.0\n", "node-22"),  # exact patch not shipped: its major line is used
    (b"20.18", "node-20"),
    (b"22.x", "node-22"),
    (b"lts/jod\n", "node-22"),
    (b"lts/Krypton", "node"),
    (b"lts/*", "node"),
    (b"node", "node"),
    (b"stable", "node"),
    (b"\xef\xbb\xbf# team default\n\n  v20  # comment\n", "node-20"),
    (b"", "node"),
])
def test_nvmrc_selects_a_major_line(nvmrc: bytes, expected: str) -> None:
    assert select_node_image(manifest(), nvmrc, AVAILABLE) == expected


def test_lts_star_skips_odd_majors() -> None:
    available = {"node-25": "25.0.0", "node": "24.19.0"}
    assert select_node_image(manifest(), b"lts/*", available) == "node"
    assert select_node_image(manifest(), None, available) == "node-25"


def test_engines_and_nvmrc_must_both_hold() -> None:
    assert select_node_image(manifest({"node": ">=20"}), b"22", AVAILABLE) == "node-22"
    with pytest.raises(RecipeError) as info:
        select_node_image(manifest({"node": ">=22"}), b"20", AVAILABLE)
    message = info.value.message
    assert "engines.node '>=22' in package.json and .nvmrc '20' (Node.js 20.x)" in message
    assert "available: 24.19.0 (node), 22.20.0 (node-22), 20.18.0 (node-20)" in message
    assert info.value.exit_code is ExitCode.BAD_INPUT
    assert info.value.hint and "containers/node-<major>.toml" in info.value.hint


def test_nothing_satisfies_says_what_was_asked() -> None:
    with pytest.raises(RecipeError, match=r"no Node.js toolchain satisfies engines.node "
                                          r"'\^18' in package.json; available"):
        select_node_image(manifest({"node": "^18"}), None, AVAILABLE)
    with pytest.raises(RecipeError, match=r"\.nvmrc '16' \(Node.js 16.x\)"):
        select_node_image(manifest(), b"16", AVAILABLE)


def test_ties_and_order_do_not_matter() -> None:
    same = {"b": "22.20.0", "a": "22.20.0"}
    assert select_node_image(manifest(), None, same) == select_node_image(
        manifest(), None, dict(reversed(list(same.items()))))


@pytest.mark.parametrize(("package_json", "nvmrc", "message"), [
    (b"{not json", None, "package.json is not valid JSON"),
    (b"[]", None, "package.json is not a JSON object"),
    (b"\xff\xfe", None, "package.json is not valid JSON"),
    (manifest(["node"]), None, "engines must be an object"),
    (manifest({"node": 22}), None, "engines.node must be a string"),
    (manifest({"node": "node >= 18"}), None, "is not a semver range npm understands"),
    (manifest(), b"lts/unicorn", "unknown LTS line 'lts/unicorn'"),
    (manifest(), b"iojs", "not a Node.js version reprobuild understands"),
    (manifest(), b"\xff\xfe", ".nvmrc is not UTF-8"),
])
def test_bad_input_is_a_recipe_error(package_json: bytes, nvmrc: bytes | None,
                                     message: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(message)):
        select_node_image(package_json, nvmrc, AVAILABLE)


def test_no_images_at_all() -> None:
    with pytest.raises(RecipeError, match=r"no Node\.js toolchain image is defined"):
        select_node_image(manifest(), None, {})


def test_lts_codenames_are_even_majors() -> None:
    assert all(major % 2 == 0 for major in LTS_CODENAMES.values())
    assert LTS_CODENAMES["jod"] == 22 and LTS_CODENAMES["krypton"] == 24


# --------------------------------------------------------------------------- shipped images


def test_shipped_node_images_and_recipe() -> None:
    definitions = images.load_definitions()
    found = node_images(definitions)
    assert set(found) == {"node", "node-22"}
    assert found["node"].startswith("24.") and found["node-22"].startswith("22.")
    for name in found:
        assert definitions[name].base == "base-bookworm"
        assert dict(definitions[name].env)["PATH"].startswith("/opt/reprobuild/node/bin:")
        checks = "\n".join(definitions[name].checks)
        assert f"v{found[name]}" in checks  # the check pins the exact Node.js version
    recipe = builtin_recipes()["node"]
    assert recipe.image == "node" and recipe.image in found
    assert recipe.detect_files == ("package.json",)
    assert recipe.fetch_strategy == "npm"
    assert recipe.outputs == ("*.tgz",)
    assert recipe.commands[0] == "npm ci --offline $REPROBUILD_NPM_FLAGS"
    assert "$REPROBUILD_OUT" in recipe.commands[-1]
    assert dict(recipe.env)["SOURCE_DATE_EPOCH"] == "{commit_time}"


def test_monorepo_fixture_picks_node_24() -> None:
    package_json = (MONOREPO / "src" / "notes-ts" / "package.json").read_bytes()
    assert select_node_image(package_json, None, node_images(images.load_definitions())) \
        == "node"


# --------------------------------------------------------------------------- fixtures


def test_monorepo_fixture_is_a_real_npm_workspace() -> None:
    root = json.loads((MONOREPO / "package.json").read_text())
    assert root["workspaces"] == ["src/*"] and root["private"] is True
    lock = json.loads((MONOREPO / "package-lock.json").read_text())
    assert lock["lockfileVersion"] == 3
    packages = lock["packages"]
    assert packages["src/notes-ts"]["name"] == "@reprobuild-fixture/server-notes"
    assert packages["node_modules/@reprobuild-fixture/server-notes"]["link"] is True
    assert "node_modules/@modelcontextprotocol/sdk" in packages
    assert "node_modules/typescript" in packages
    registry = [p for k, p in packages.items() if k.startswith("node_modules/")
                and not p.get("link")]
    assert len(registry) > 50
    for entry in registry:
        assert entry["resolved"].startswith("https://registry.npmjs.org/")
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", entry["integrity"])
    server = json.loads((MONOREPO / "src" / "notes-ts" / "package.json").read_text())
    assert server["scripts"]["build"] == "tsc" and server["files"] == ["dist"]
    assert server["bin"] == {"mcp-server-notes": "dist/index.js"}
    assert not (MONOREPO / "node_modules").exists()


def test_monorepo_python_server_is_uv_locked() -> None:
    project = MONOREPO / "src" / "weather-py"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["build-system"]["build-backend"] == "hatchling.build"
    lock = tomllib.loads((project / "uv.lock").read_text())
    names = {package["name"] for package in lock["package"]}
    assert {"mcp", "httpx", "reprobuild-fixture-weather-mcp"} <= names
    for package in lock["package"]:
        if package["name"] == "reprobuild-fixture-weather-mcp":
            continue
        assert package["source"] == {"registry": "https://pypi.org/simple"}
        for wheel in package.get("wheels", []):
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", wheel["hash"])
    assert not (project / "package.json").exists()  # npm skips it as a workspace


def test_tampered_lock_fixture_differs_from_the_registry() -> None:
    lock = json.loads((FIXTURES / "tampered-lock" / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/is-number"]
    assert entry["version"] == "7.0.0"
    assert entry["resolved"] == "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz"
    # The registry serves sha512-41Cifkg6…; the lockfile claims something else.
    assert entry["integrity"].startswith("sha512-")
    assert not entry["integrity"].startswith("sha512-41Cifkg6e8TylSpdtTpeLVMqvSBE")
