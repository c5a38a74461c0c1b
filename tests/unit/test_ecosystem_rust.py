"""The Rust ecosystem without Docker: which manifests and stand-ins the fetch gets, the pins."""

from __future__ import annotations

import pytest

from reprobuild import ecosystems, images
from reprobuild.ecosystems.interface import FetchPlan, FetchSettings
from reprobuild.errors import RecipeError
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256

WORKSPACE = b'[workspace]\nmembers = ["crates/*"]\nresolver = "2"\n'
MEMBER = b'[package]\nname = "srv"\nversion = "1.0.0"\nedition = "2021"\nbuild = "build.rs"\n' \
         b'[[bin]]\nname = "srv"\npath = "src/bin/srv.rs"\n'
LOCK = b'''version = 4

[[package]]
name = "itoa"
version = "1.0.19"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "3bd1574e617a9a6c1f8f8181bd7e841e1f20e4277607ef28945765188d6284d4"

[[package]]
name = "private"
version = "0.1.0"
source = "git+https://git.example/private#abc"

[[package]]
name = "srv"
version = "1.0.0"
'''


def tree(files: dict[str, bytes], subdir: str = "") -> SourceTree:
    entries = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644, data=d)
                    for p, d in sorted(files.items()))
    return SourceTree(location="/r", kind=SourceKind.GIT_LOCAL, ref=None, commit="c" * 40,
                      commit_time=1, subdir=subdir, entries=entries,
                      tree_sha256=compute_tree_sha256(entries))


def plan(source: SourceTree) -> FetchPlan:
    return ecosystems.get("cargo").plan_fetch(source, FetchSettings(origin="r"), None)


def test_a_member_of_a_workspace_gets_the_root_lock_and_stand_ins_not_the_source() -> None:
    source = tree({"Cargo.toml": WORKSPACE, "Cargo.lock": LOCK,
                   "crates/srv/Cargo.toml": MEMBER, "crates/srv/src/bin/srv.rs": b"fn main(){}",
                   "crates/srv/build.rs": b"fn main(){}", "README.md": b"x"},
                  subdir="crates/srv")
    fetch_plan = plan(source)
    files = dict(fetch_plan.files)
    assert fetch_plan.lock_root == ""
    assert files["Cargo.lock"] == LOCK and files["crates/srv/Cargo.toml"] == MEMBER
    assert files["crates/srv/src/bin/srv.rs"] == b"" and files["crates/srv/build.rs"] == b""
    assert "README.md" not in files
    assert [(p.name, p.version, p.hashes) for p in fetch_plan.pins] == [
        ("itoa", "1.0.19",
         ("sha256:3bd1574e617a9a6c1f8f8181bd7e841e1f20e4277607ef28945765188d6284d4",))]
    assert any("private 0.1.0 comes from git+https://git.example" in n for n in fetch_plan.notes)


def test_no_lock_is_an_error_and_pins_are_refused() -> None:
    with pytest.raises(RecipeError, match=r"no Cargo\.toml"):
        plan(tree({"README.md": b"x"}))
    with pytest.raises(RecipeError, match=r"takes exactly what Cargo\.lock names"):
        ecosystems.get("cargo").plan_fetch(tree({"Cargo.toml": MEMBER, "Cargo.lock": LOCK}),
                                           FetchSettings(origin="r", pins=("itoa==1",)), None)
    fetch_plan = plan(tree({"Cargo.toml": MEMBER, "Cargo.lock": LOCK}))
    env = dict(ecosystems.get("cargo").build_env(fetch_plan))
    assert env["CARGO_NET_OFFLINE"] == "true" and env["CARGO_HOME"] == "/deps/cargo"
    assert env["REPROBUILD_CARGO_ROOT"] == "." and env["REPROBUILD_CARGO_LOCK"] == ""


SDK = (b'[workspace]\nmembers = ["crates/rmcp", "examples/*"]\n'
       b'[workspace.package]\nedition = "2024"\nrust-version = "1.88"\n')
EXAMPLES = (b'[package]\nname = "mcp-server-examples"\nversion = "0.1.5"\npublish = false\n'
            b'[dependencies]\nserde = "1"\n[[example]]\nname = "servers_counter_stdio"\n'
            b'path = "src/counter_stdio.rs"\n')


def test_a_workspace_without_a_lock_resolves_one_and_builds_its_example_servers() -> None:
    source = tree({"Cargo.toml": SDK, "crates/rmcp/Cargo.toml": MEMBER,
                   "crates/rmcp/src/lib.rs": b"", "examples/servers/Cargo.toml": EXAMPLES,
                   "examples/servers/src/counter_stdio.rs": b"fn main() {}"},
                  subdir="examples/servers")
    fetch_plan = plan(source)
    assert fetch_plan.lock_root == "" and fetch_plan.pins == ()
    assert "Cargo.lock" not in dict(fetch_plan.files)
    assert dict(fetch_plan.files)["examples/servers/src/counter_stdio.rs"] == b""
    assert any("cargo generate-lockfile" in n for n in fetch_plan.notes)
    script = ecosystems.get("cargo").fetch_command(fetch_plan)
    assert script.index("cargo generate-lockfile") < script.index("cargo fetch --locked")
    env = dict(ecosystems.get("cargo").build_env(fetch_plan))
    assert env["REPROBUILD_CARGO_ROOT"] == "../.."
    assert env["REPROBUILD_CARGO_TARGETS"] == "--examples"
    assert env["REPROBUILD_CARGO_LOCK"] == "/deps/cargo-lock/Cargo.lock"
    assert fetch_plan.pin_source == "generated Cargo.lock:Cargo.lock"


def test_the_rust_image_must_be_new_enough_for_rust_version() -> None:
    cargo = ecosystems.get("cargo")
    definitions = images.load_definitions()
    fine = tree({"Cargo.toml": WORKSPACE + b'[workspace.package]\nrust-version = "1.85"\n',
                 "Cargo.lock": LOCK, "crates/srv/Cargo.toml": MEMBER}, subdir="crates/srv")
    assert cargo.choose_image(fine, "rust", definitions) == "rust"
    sdk = tree({"Cargo.toml": WORKSPACE + b'[workspace.package]\nrust-version = "1.88"\n',
                "Cargo.lock": LOCK, "crates/srv/Cargo.toml": MEMBER}, subdir="crates/srv")
    assert cargo.choose_image(sdk, "rust", definitions) == "rust"  # the official SDK's
    newer = tree({"Cargo.toml": WORKSPACE + b'[workspace.package]\nrust-version = "1.99"\n',
                  "Cargo.lock": LOCK, "crates/srv/Cargo.toml": MEMBER}, subdir="crates/srv")
    with pytest.raises(RecipeError, match=r"needs rust-version 1\.99; the pinned Rust "
                                          r"toolchain is 1\.97\.1"):
        cargo.choose_image(newer, "rust", definitions)


def test_a_pinned_rust_toolchain_other_than_the_image_s_is_said() -> None:
    from reprobuild.images import ToolchainImage  # noqa: PLC0415

    image = ToolchainImage(name="rust", tag="reprobuild/rust:x", image_id="sha256:" + "1" * 64,
                           definition_sha256="2" * 64,
                           versions=(("rustc", "1.97.1+dfsg1-1~bpo13+1"),), path_env="/usr/bin")
    source = tree({"Cargo.toml": MEMBER, "Cargo.lock": LOCK,
                   "rust-toolchain.toml": b'[toolchain]\nchannel = "1.96"\n'})
    fetch_plan = ecosystems.get("cargo").plan_fetch(source, FetchSettings(origin="r"), image)
    assert any("rust-toolchain pins 1.96; built with the image's rustc 1.97.1" in n
               for n in fetch_plan.notes)
    same = tree({"Cargo.toml": MEMBER, "Cargo.lock": LOCK, "rust-toolchain": b"1.97\n"})
    assert not any("rust-toolchain" in n for n in ecosystems.get("cargo").plan_fetch(
        same, FetchSettings(origin="r"), image).notes)
