"""The Rust ecosystem: crates from crates.io, checked against Cargo.lock, built offline.

Everything reprobuild knows about cargo lives here:

* **planning**: the workspace root's ``Cargo.toml`` and ``Cargo.lock`` (found in the project
  directory or the nearest directory above it that has the lock), every member's manifest
  with empty stand-ins for its targets (cargo refuses a manifest whose targets it cannot
  find, and the fetch must not see the source), and every registry package of the lock as
  a pin with its sha256;
* **the fetch**: ``cargo fetch --locked`` with crates.io's sparse index and download hosts
  as the only reachable hosts, into ``/deps/cargo``;
* **the check**: every downloaded ``.crate`` against the lock's checksum;
* **the build**: offline, ``CARGO_HOME`` the fetched cache, with the build directory and
  the cargo home remapped in the binaries (``--remap-path-prefix``, set by the recipe, which
  knows the build directory) so the build-path variation does not leak into them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from reprobuild.archive import ExtractedFile
from reprobuild.ecosystems.interface import (
    DEPS_DIR,
    UNTRUSTED_CA_HINT,
    FetchPlan,
    FetchSettings,
    Pin,
    Releases,
    Verified,
    files_of,
    join,
    levels_above,
    outside,
)
from reprobuild.errors import (
    DependencyIntegrityError,
    EnvironmentFailure,
    RecipeError,
    ReprobuildError,
)
from reprobuild.hashing import file_digest
from reprobuild.source import SourceTree

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from reprobuild.images import ImageDefinition, ToolchainImage

__all__ = ["CARGO_HOME", "ECOSYSTEM", "Cargo"]

STRATEGY = "cargo"
CARGO_HOME = f"{DEPS_DIR}/cargo"
GENERATED_LOCK = f"{DEPS_DIR}/cargo-lock/Cargo.lock"
"""Where a fetch that had to resolve a lock leaves it for the builds."""
_CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
_CRATE_FILE = re.compile(r"cargo/registry/cache/[^/]+/(?P<file>[^/]+\.crate)")
# A crate whose bytes do not match the lock, or a lock whose checksum is not the one the
# registry's index publishes for that version.
_MISMATCH = re.compile(r"failed to verify the checksum of `(?P<pkg>[^`]+)`|"
                       r"checksum for `(?P<changed>[^`]+)` changed between lock files")


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _toml(data: bytes, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{origin} is not valid TOML: {exc}", "fix it; nothing was fetched"
                          ) from exc


def _members(root: str, manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> list[str]:
    """Workspace member directories (relative to the tree) whose manifests are in it."""
    workspace = manifest.get("workspace")
    found = []
    patterns = workspace.get("members", []) if isinstance(workspace, dict) else []
    manifests = sorted(p.rsplit("/", 1)[0] for p in files if p.endswith("/Cargo.toml"))
    for pattern in patterns if isinstance(patterns, list) else []:
        if not isinstance(pattern, str):
            continue
        wanted = PurePosixPath(join(root, pattern.rstrip("/")))
        found += [m for m in manifests if PurePosixPath(m).match(str(wanted))
                  and m != root]
    return sorted(set(found))


def _stand_ins(directory: str, manifest: Mapping[str, Any]) -> list[str]:
    """Empty target files so cargo can read a manifest without its source."""
    paths = {"src/lib.rs", "src/main.rs"}
    for key in ("lib", "bin", "example", "test", "bench"):
        table = manifest.get(key)
        for target in (table if isinstance(table, list) else [table]):
            if isinstance(target, dict) and isinstance(target.get("path"), str):
                paths.add(target["path"])
    if isinstance(manifest.get("package"), dict) and isinstance(
            manifest["package"].get("build"), str):
        paths.add(manifest["package"]["build"])
    clean = set()
    for path in paths:  # each becomes a file of the fetch container: inside the project
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not path.isprintable() or path.startswith("/") or ".." in parts or not parts:
            raise RecipeError(f"{join(directory, 'Cargo.toml')}: target path {path!r} is not "
                              "a file inside the package",
                              "give targets relative paths inside the package directory")
        clean.add("/".join(parts))
    return [join(directory, p) for p in sorted(clean)]


_PATH_KEY = re.compile(r'\bpath\s*=\s*"([^"]+)"')
"""A ``path = "..."`` of a dependency (or a build script) in a Cargo.toml."""


def _workspace_root(levels: Sequence[str], files: Mapping[str, bytes]) -> str | None:
    """Where cargo would write a lock: the nearest ``[workspace]`` manifest at or above the
    project, else the project's own manifest."""
    own = next((level for level in levels if join(level, "Cargo.toml") in files), None)
    for level in levels:
        data = files.get(join(level, "Cargo.toml"))
        if data is not None and "workspace" in _toml(data, join(level, "Cargo.toml")):
            return level
    return own


def _toolchain_channel(files: Mapping[str, bytes], root: str) -> str | None:
    """The channel ``rust-toolchain.toml`` (or the older ``rust-toolchain``) pins."""
    data = files.get(join(root, "rust-toolchain.toml"))
    if data is not None:
        try:
            table = _toml(data, "rust-toolchain.toml").get("toolchain")
        except RecipeError:
            return None
        channel = table.get("channel") if isinstance(table, dict) else None
        return channel if isinstance(channel, str) else None
    legacy = files.get(join(root, "rust-toolchain"))
    text = legacy.decode("utf-8", "replace").strip() if legacy is not None else ""
    return text if re.fullmatch(r"[0-9A-Za-z.-]{1,40}", text) else None


def _lock_pins(lock: Mapping[str, Any], notes: list[str]) -> list[Pin]:
    """Every crates.io package of a lock, with its checksum; notes for the others."""
    pins = []
    for package in lock.get("package", []):
        if not isinstance(package, dict):
            continue
        source = package.get("source")
        if source is None:
            continue  # a workspace member or a path dependency: in the tree
        if source != _CRATES_IO:
            notes.append(f"{package.get('name')} {package.get('version')} comes from "
                         f"{str(source)[:120]} (not crates.io: the fetch will refuse it)")
            continue
        checksum = str(package.get("checksum", ""))
        if not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise RecipeError(f"Cargo.lock: {package.get('name')} has no checksum",
                              "regenerate the lock with a current cargo")
        pins.append(Pin(str(package["name"]), str(package["version"]),
                        (f"sha256:{checksum}",)))
    return pins


def _targets(tree: SourceTree, files: Mapping[str, bytes]) -> str:
    """``--bins``, unless the project's package has no binary but examples (the official
    SDK's example servers are ``[[example]]`` targets of one package)."""
    data = files.get(join(tree.subdir, "Cargo.toml"))
    manifest = _toml(data, "Cargo.toml") if data is not None else {}
    if not isinstance(manifest.get("package"), dict):
        return "--bins"  # a workspace: every member's binaries
    prefix = f"{tree.subdir}/" if tree.subdir else ""
    bins = bool(manifest.get("bin")) or f"{prefix}src/main.rs" in files or any(
        p.startswith(f"{prefix}src/bin/") and p.endswith(".rs") for p in files)
    examples = bool(manifest.get("example")) or any(
        p.startswith(f"{prefix}examples/") and p.endswith(".rs") for p in files)
    return "--examples" if examples and not bins else "--bins"


class Cargo:
    """``[fetch] strategy = "cargo"``: every crates.io package of Cargo.lock."""

    name = "rust"
    strategy = STRATEGY
    summary = "runs `cargo fetch --locked` from Cargo.toml/Cargo.lock (checksum-checked)"
    allow_list: tuple[tuple[str, int], ...] = (("index.crates.io", 443),
                                                ("static.crates.io", 443))
    image_families: tuple[str, ...] = ("rust",)
    clock_via_libc = True
    releases: Releases | None = None
    fix_hints: Mapping[str, str] = {
        "embedded-timestamp": "a build.rs that embeds the current time: read "
        "SOURCE_DATE_EPOCH instead",
        "build-path": "file!(), panic locations and debug info hold the build directory: "
        "pass --remap-path-prefix=$PWD=. in RUSTFLAGS",
        "cpu-count": "codegen-units follow the CPU count unless set: pin codegen-units in "
        "the release profile",
    }

    def choose_image(self, tree: SourceTree, requested: str,
                     definitions: Mapping[str, ImageDefinition]) -> str:
        """The pinned Rust image, if its rustc is at least the project's ``rust-version``."""
        if requested not in self.image_families or requested not in definitions:
            return requested
        files = files_of(tree)
        wanted = None
        parts = PurePosixPath(tree.subdir).parts if tree.subdir else ()
        for depth in range(len(parts), -1, -1):  # the package's, else its workspace's
            data = files.get(join("/".join(parts[:depth]), "Cargo.toml"))
            if data is None:
                continue
            manifest = _toml(data, "Cargo.toml")
            for table in (manifest.get("package"), manifest.get("workspace", {}).get("package")):
                value = table.get("rust-version") if isinstance(table, dict) else None
                if isinstance(value, str):
                    wanted = value
                    break
            if wanted:
                break
        base = definitions.get(definitions[requested].base)
        have = next((pin.split("=", 1)[1].split("+", 1)[0] for pin in (base.packages if base
                    else ()) if pin.startswith("rustc=")), None)
        if wanted and have and _numbers(wanted) > _numbers(have):
            raise RecipeError(f"the project needs rust-version {wanted}; the pinned Rust "
                              f"toolchain is {have}",
                              "add an image with a newer rustc (containers/base-trixie.toml, "
                              "containers/rust.toml)")
        return requested

    def governs(self, tree: SourceTree) -> bool:
        """Always: no other ecosystem shares this one's manifests."""
        del tree
        return True

    def reads_above(self, tree: SourceTree) -> tuple[tuple[str, str], ...]:
        """The workspace root above the crate, whole (its manifest and lock, every member),
        and each local ``path`` dependency outside the crate."""
        files = files_of(tree)
        data = files.get(join(tree.subdir, "Cargo.toml"))
        if data is None:
            return ()
        found: list[tuple[str, str]] = []
        try:
            root = _workspace_root([tree.subdir, *levels_above(tree.subdir)], files)
        except RecipeError:
            root = None
        if root is not None and root != tree.subdir:
            found.append((root, "cargo: the workspace root (manifest, Cargo.lock, members)"))
        manifest = join(tree.subdir, "Cargo.toml")
        for target in _PATH_KEY.findall(data.decode("utf-8", "replace")):
            where = outside(tree.subdir, target)
            if where is not None:
                found.append((where, f"cargo: a path dependency in {manifest}"))
        return tuple(found)

    def declares_package(self, tree: SourceTree) -> str | None:
        """A Cargo.toml with a [package] or a [workspace]."""
        data = files_of(tree).get(join(tree.subdir, "Cargo.toml"))
        if data is None:
            return None
        try:
            manifest = _toml(data, "Cargo.toml")
        except RecipeError:
            return None
        package = manifest.get("package")
        if isinstance(package, dict) and isinstance(package.get("name"), str):
            return f"Cargo.toml declares the package {package['name']}"
        return "Cargo.toml declares a workspace" if "workspace" in manifest else None

    def plan_fetch(self, tree: SourceTree, settings: FetchSettings,
                   toolchain: ToolchainImage | None) -> FetchPlan:
        """The workspace's manifests and lock, with stand-ins for its targets."""
        if settings.pins:
            raise RecipeError(f"--pin {settings.pins[0]}: a cargo build takes exactly what "
                              "Cargo.lock names", "drop --pin, or update Cargo.lock")
        files = files_of(tree)
        parts = PurePosixPath(tree.subdir).parts if tree.subdir else ()
        levels = ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]
        root = next((level for level in levels if join(level, "Cargo.lock") in files), None)
        generated = root is None
        notes: list[str] = []
        if root is None:
            # No lock committed (a library's workspace, like the official MCP Rust SDK):
            # the fetch resolves one, the builds use it, the report lists what it pinned.
            root = _workspace_root(levels, files)
            if root is None:
                raise RecipeError(f"no Cargo.toml in {tree.subdir or 'the repository root'}",
                                  "pass --subdir to the crate or workspace to build")
            notes.append(f"no Cargo.lock in {root or 'the repository root'} or above it: "
                         "the fetch resolved one with `cargo generate-lockfile` from crates.io"
                         " (newest compatible versions at fetch time, reused from the cache "
                         "afterwards); commit a Cargo.lock to pin what a release builds")
        manifest_path = join(root, "Cargo.toml")
        if manifest_path not in files:
            raise RecipeError(f"{join(root, 'Cargo.lock')} has no Cargo.toml beside it",
                              "cargo needs both")
        manifest = _toml(files[manifest_path], manifest_path)
        lock = {} if generated else _toml(files[join(root, "Cargo.lock")],
                                          join(root, "Cargo.lock"))
        prefix = f"{root}/" if root else ""
        selected: list[tuple[str, bytes]] = [("Cargo.toml", files[manifest_path])]
        if not generated:
            selected.append(("Cargo.lock", files[join(root, "Cargo.lock")]))
        stand_ins = _stand_ins("", manifest) if "package" in manifest else []
        for member in _members(root, manifest, files):
            data = files[join(member, "Cargo.toml")]
            relative = member[len(prefix):]
            selected.append((join(relative, "Cargo.toml"), data))
            stand_ins += _stand_ins(relative, _toml(data, join(member, "Cargo.toml")))
        selected += [(path, b"") for path in sorted(set(stand_ins))]
        if (toolchain_file := join(root, "rust-toolchain.toml")) in files:
            selected.append(("rust-toolchain.toml", files[toolchain_file]))
        pinned = _toolchain_channel(files, root)
        have = dict(toolchain.versions).get("rustc", "").split("+", 1)[0] if toolchain else ""
        if pinned and have and not have.startswith(pinned):
            notes.append(f"rust-toolchain pins {pinned}; built with the image's rustc {have} "
                         "(Debian's: rustup's downloads are not reachable), so a release "
                         f"built with {pinned} may differ")
        pins = _lock_pins(lock, notes)
        relative = tree.subdir[len(prefix):] if tree.subdir != root else ""
        up = "/".join([".."] * len(PurePosixPath(relative).parts)) if relative else "."
        options = (("root", up), ("targets", _targets(tree, files)),
                   ("lock", "generated" if generated else "committed"))
        lock_name = join(root, "Cargo.lock")
        return FetchPlan(strategy=STRATEGY, project_dir=tree.subdir, lock_root=root,
                         files=tuple(selected),
                         pin_source=f"{'generated ' if generated else ''}Cargo.lock:{lock_name}",
                         pins=tuple(sorted(pins, key=lambda p: (p.name, p.version))),
                         notes=tuple(notes), options=options)

    def fetch_command(self, plan: FetchPlan) -> str:
        """``cargo fetch --locked``: exactly the lock, for every target platform (a lock
        resolved first, and kept for the builds, when none is committed)."""
        lines = [f"mkdir -p {CARGO_HOME}"]
        if dict(plan.options).get("lock") == "generated":
            lines += ["cargo generate-lockfile", f"mkdir -p {GENERATED_LOCK.rsplit('/', 1)[0]}",
                      f"cp Cargo.lock {GENERATED_LOCK}"]
        return "\n".join([*lines, "cargo fetch --locked"]) + "\n"

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        """crates.io's sparse index; cargo takes the proxy from its own variable too."""
        del plan
        env = {"CARGO_HOME": CARGO_HOME, "CARGO_HTTP_PROXY": proxy,
               "CARGO_REGISTRIES_CRATES_IO_PROTOCOL": "sparse", "CARGO_NET_RETRY": "2",
               "CARGO_TERM_COLOR": "never",
               # A resolved lock picks versions the toolchain's rustc can build.
               "CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS": "fallback"}
        if ca_file is not None:
            env["CARGO_HTTP_CAINFO"] = ca_file
        return env

    def build_env(self, plan: FetchPlan) -> tuple[tuple[str, str], ...]:
        """The fetched cargo home, offline, and what the recipe's commands need to know:
        the workspace root relative to the project (``REPROBUILD_CARGO_ROOT``), the targets
        (``--bins``, or ``--examples`` for a package of example servers) and the resolved
        lock to put there when none was committed (``REPROBUILD_CARGO_LOCK``)."""
        options = dict(plan.options)
        generated = options.get("lock") == "generated"
        return (("CARGO_HOME", CARGO_HOME), ("CARGO_NET_OFFLINE", "true"),
                ("CARGO_TERM_COLOR", "never"), ("CARGO_INCREMENTAL", "0"),
                ("REPROBUILD_CARGO_ROOT", options.get("root", ".")),
                ("REPROBUILD_CARGO_TARGETS", options.get("targets", "--bins")),
                ("REPROBUILD_CARGO_LOCK", GENERATED_LOCK if generated else ""))

    def verify(self, plan: FetchPlan, files: Sequence[ExtractedFile], staging: Path) -> Verified:
        """Keep the registry's index cache and crates; every crate matches the lock."""
        notes: list[str] = []
        pins_of = plan.pins
        if dict(plan.options).get("lock") == "generated":
            lock_path = staging / GENERATED_LOCK.removeprefix(f"{DEPS_DIR}/")
            if not lock_path.is_file():
                raise EnvironmentFailure("the cargo fetch resolved no Cargo.lock",
                                         "see the fetch log")
            pins_of = tuple(_lock_pins(_toml(lock_path.read_bytes(), "the resolved Cargo.lock"),
                                       notes))
        expected = {f"{p.name}-{p.version}.crate": p for p in pins_of}
        kept: list[ExtractedFile] = []
        pins: dict[str, str] = {}
        for member in files:
            if member.path == GENERATED_LOCK.removeprefix(f"{DEPS_DIR}/"):
                kept.append(member)
                continue
            if not member.path.startswith("cargo/registry/"):
                continue
            m = _CRATE_FILE.fullmatch(member.path)
            if m is not None:
                pin = expected.get(m["file"])
                if pin is None:
                    raise EnvironmentFailure(f"the fetch downloaded {m['file']}, which "
                                             "Cargo.lock does not name", "this is a bug")
                actual = file_digest(staging / member.path, "sha256")
                if actual not in pin.hashes:
                    raise DependencyIntegrityError(f"{pin.name} {pin.version}", pin.hashes[0],
                                                   actual, source="Cargo.lock")
                pins[pin.name] = pin.version
            kept.append(member)
        if pins_of and not pins:
            raise EnvironmentFailure("the cargo fetch downloaded no crates", "see its log")
        return Verified(files=tuple(kept), pins=tuple(sorted(pins.items())), notes=tuple(notes))

    def diagnose(self, plan: FetchPlan, log: str) -> ReprobuildError | None:
        """cargo's checksum failure, naming the package."""
        m = _MISMATCH.search(log)
        if m is None:
            return None
        name, _, version = (m["pkg"] or m["changed"]).partition(" v")
        pin = next((p for p in plan.pins if p.name == name and p.version == version), None)
        actual = ("another checksum in the registry's index" if m["changed"]
                  else "a crate with another checksum")
        return DependencyIntegrityError(f"{name} {version}",
                                        pin.hashes[0] if pin else "the lock's checksum",
                                        actual, source="Cargo.lock")

    def failure_line(self, log: str) -> str | None:
        """cargo's own error line."""
        return next((line.strip() for line in log.splitlines()
                     if line.strip().startswith("error")), None)

    def failure_hint(self, log: str) -> str | None:
        """Untrusted certificates: an intercepting proxy without ``--ca-cert``."""
        if "SSL certificate problem" in log or "certificate verify failed" in log:
            return UNTRUSTED_CA_HINT
        return None


ECOSYSTEM = Cargo()
