"""pnpm: ``pnpm fetch`` from ``pnpm-lock.yaml`` into a store, then install, build and pack offline.

A pnpm project is one importer of a pnpm lockfile: the project directory, or a member of
the workspace whose root (the nearest directory above holding ``pnpm-lock.yaml``) locks it.
The fetch container gets the root's ``package.json``, ``pnpm-workspace.yaml`` (catalogs,
overrides, ``allowBuilds``) and the lockfile, never the source:

1. pnpm itself, the version ``packageManager`` names (``pnpm@11.8.0+sha512.<hex>``, as
   corepack reads it; a pinned default when absent), is downloaded from the npm registry
   with ``npm pack`` and its hash checked *before* it runs, when ``packageManager`` pins one.
2. ``pnpm fetch --frozen-lockfile --ignore-scripts`` fills a content-addressed store at
   ``/deps/pnpm-store``; pnpm checks every tarball against the lockfile's ``integrity``.
   Without ``--ignore-scripts`` pnpm fetch runs the install scripts ``allowBuilds``
   approves, with the registry reachable; they run in the offline builds instead.

On the host, :meth:`Pnpm.verify` checks the pnpm tarball again, unpacks it with the safe
extractor (it is the code the builds run) and puts a ``pnpm`` launcher in ``/deps/bin``,
and checks that every store file is named by its own sha512. The builds run pnpm from
there, offline, with the supply-chain age check (which asks the registry) turned off: the
lockfile was checked when it was fetched.

The lockfile is YAML, read with PyYAML's safe loader
(:func:`~reprobuild.ecosystems.interface.load_yaml`, imported only when a pnpm project is
planned).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from reprobuild.archive import ExtractedFile, ExtractLimits, extract_regular_files
from reprobuild.ecosystems.interface import (
    DEPS_BIN,
    DEPS_DIR,
    UNTRUSTED_CA_HINT,
    FetchPlan,
    FetchSettings,
    Pin,
    Releases,
    Verified,
    files_of,
    join,
    load_yaml,
)
from reprobuild.ecosystems.node.plan import (
    NODE_FIX_HINTS,
    UNTRUSTED_CERTIFICATE,
    nearest_lockfiles,
    registry_env,
)
from reprobuild.ecosystems.node.release import NpmReleases
from reprobuild.errors import (
    DependencyIntegrityError,
    EnvironmentFailure,
    RecipeError,
    ReprobuildError,
    UnsafeArchiveError,
)
from reprobuild.hashing import file_digest
from reprobuild.source import SourceTree

if TYPE_CHECKING:
    from reprobuild.images import ImageDefinition, ToolchainImage

__all__ = ["DEFAULT_PNPM", "ECOSYSTEM", "LOCKFILE", "STRATEGY", "Pnpm", "PnpmTool",
           "package_manager", "plan_pnpm"]

STRATEGY = "pnpm"
LOCKFILE = "pnpm-lock.yaml"
WORKSPACE_FILE = "pnpm-workspace.yaml"
STORE_DIR = f"{DEPS_DIR}/pnpm-store"
TOOL_TGZ = "pnpm.tgz"
"""Where the fetch leaves pnpm's own tarball in ``/deps`` (unpacked on the host)."""
TOOL_DIR = "pnpm"
"""Where the host unpacks it: ``/deps/pnpm/bin/pnpm.mjs``."""

_EXACT = re.compile(r"(?P<version>\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)"
                    r"(?:\+(?P<algo>sha1|sha224|sha256|sha384|sha512)\.(?P<hex>[0-9a-f]+))?")
_STORE_FILE = re.compile(r"pnpm-store/v\d+/files/(?P<a>[0-9a-f]{2})/(?P<b>[0-9a-f]{126})"
                         r"(?P<exec>-exec)?")
_INTEGRITY = re.compile(r'\[?ERR_PNPM_TARBALL_INTEGRITY\]?.*?Wanted "(?P<wanted>[^"]+)"\. '
                        r'Got "(?P<got>[^"]+)"')
_TOOL_MISMATCH = re.compile(r"reprobuild: pnpm@(?P<version>\S+) tarball (?P<algo>sha\d+) is "
                            r"(?P<got>[0-9a-f]+), packageManager pins (?P<want>[0-9a-f]+)")
_GONE = re.compile(r"^\s+(?P<entry>\S+@\S+) .*(?:Not Found - 404|404 Not Found)")
_TOOL_LIMITS = ExtractLimits(max_files=5_000, max_file_bytes=256 * 2**20,
                             max_total_bytes=512 * 2**20)


@dataclass(frozen=True)
class PnpmTool:
    """The pnpm release a project asks for: exact version and, if pinned, its hash."""

    version: str
    algo: str | None
    hexdigest: str | None
    origin: str = field(compare=False)

    @property
    def spec(self) -> str:
        """The corepack form, ``pnpm@11.8.0+sha512.<hex>``."""
        pinned = f"+{self.algo}.{self.hexdigest}" if self.algo and self.hexdigest else ""
        return f"pnpm@{self.version}{pinned}"


DEFAULT_PNPM = PnpmTool(
    "11.8.0", "sha512",
    base64.b64decode("wfXnxMskHI8XS3Q4UdgvQrgCMkr8iw8Ra5atsVqgZmSUjd42lgo7oQebpbSyndAUATW5"
                     "S1tfUmNZIknWjlVfJg==").hex(),
    "reprobuild's default (package.json names no packageManager)")
"""The pnpm used when ``packageManager`` is absent: a release that reads lockfile 9.0,
its sha512 the registry's ``dist.integrity``, pinned here so it is checked like a pin."""


def _json_object(data: bytes | None, path: str) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecipeError(f"{path} is not valid JSON: {exc}", "fix the file") from exc
    if not isinstance(value, dict):
        raise RecipeError(f"{path}: expected a JSON object", "fix the file")
    return value


def package_manager(value: object, where: str) -> PnpmTool:
    """``packageManager`` as corepack reads it; only an exact pnpm version is accepted."""
    if value is None:
        return DEFAULT_PNPM
    text = str(value)
    name, _, rest = text.partition("@")
    if name != "pnpm":
        raise RecipeError(f"{where}: packageManager is {text!r} but the project is locked by "
                          f"{LOCKFILE}", "name the pnpm release that wrote the lockfile "
                          "(\"packageManager\": \"pnpm@X.Y.Z\")")
    m = _EXACT.fullmatch(rest)
    if m is None:
        raise RecipeError(f"{where}: packageManager {text!r} is not an exact pnpm version",
                          "pin it as corepack does: \"pnpm@X.Y.Z\" (optionally "
                          "+sha512.<hex>)")
    major = int(m["version"].split(".", 1)[0])
    if major < 9:
        raise RecipeError(f"{where}: pnpm {m['version']} writes lockfiles older than 9.0, "
                          "which the fetch does not read", "upgrade to pnpm 9 or newer")
    return PnpmTool(m["version"], m["algo"], m["hex"], f"packageManager in {where}")


def _pins(packages: object) -> tuple[list[Pin], list[str]]:
    """Every registry package of the lockfile with its integrity; notes for the others."""
    pins: list[Pin] = []
    notes: list[str] = []
    if not isinstance(packages, dict):
        return pins, notes
    for entry, value in packages.items():
        key = str(entry)
        name, sep, version = key[1:].partition("@")
        if not sep:
            notes.append(f"{key}: not a name@version entry")
            continue
        name = key[0] + name
        resolution = value.get("resolution") if isinstance(value, dict) else None
        if not isinstance(resolution, dict):
            notes.append(f"{key} has no resolution in the lockfile")
            continue
        integrity = resolution.get("integrity")
        if "tarball" in resolution or "type" in resolution:
            where = resolution.get("tarball") or resolution.get("repo") or resolution["type"]
            notes.append(f"{key} resolves from {str(where)[:120]} (off the registry)")
        if isinstance(integrity, str):
            pins.append(Pin(name, version, tuple(integrity.split())))
        elif "type" not in resolution:
            notes.append(f"{key} has no integrity in the lockfile")
    return pins, notes


def _member_dir(root: str, importer: str) -> str | None:
    """Where an importer of the lockfile (``packages/a``, ``.``) is in the tree."""
    parts = [p for p in importer.split("/") if p not in ("", ".")]
    if ".." in parts or importer.startswith("/"):
        return None
    return join(root, *parts) or None


def plan_pnpm(tree: SourceTree) -> FetchPlan:
    """The fetch plan of a pnpm project: its lockfile (here or at the workspace root)."""
    files = files_of(tree)
    found = nearest_lockfiles(tree)
    if found is None or LOCKFILE not in found[1]:
        where = tree.subdir or "the repository root"
        other = f" (the nearest lockfile is {join(found[0], found[1][0])})" if found else ""
        raise RecipeError(f"no {LOCKFILE} in {where} or above it{other}: the pnpm fetch "
                          "installs exactly what the lockfile names",
                          "run `pnpm install --lockfile-only` and commit pnpm-lock.yaml, or "
                          "pass --recipe node for an npm lockfile")
    root = found[0]
    lock_path = join(root, LOCKFILE)
    lock = load_yaml(files[lock_path], lock_path, "fix the file; nothing was fetched")
    if not isinstance(lock, dict):
        raise RecipeError(f"{lock_path}: expected a mapping", "regenerate the lockfile")
    version = str(lock.get("lockfileVersion", ""))
    if not version.startswith("9."):
        raise RecipeError(f"{lock_path} is lockfileVersion {version or '(none)'}; the fetch "
                          "reads lockfile 9.x (pnpm 9 or newer)",
                          "regenerate it with pnpm >= 9: `pnpm install --lockfile-only`")
    importers = lock.get("importers")
    if not isinstance(importers, dict):
        importers = {".": {}}
    relative = tree.subdir[len(root):].lstrip("/") if root else tree.subdir
    if (relative or ".") not in {str(k) for k in importers}:
        raise RecipeError(f"{tree.subdir} is not a project of the pnpm workspace at "
                          f"{root or 'the repository root'} ({lock_path} has no importer "
                          "for it)", "add it to packages in pnpm-workspace.yaml and refresh "
                          "the lockfile")
    root_manifest_path = join(root, "package.json")
    if root_manifest_path not in files:
        raise RecipeError(f"{lock_path} has no package.json beside it", "pnpm needs both")
    project_manifest = _json_object(files.get(join(tree.subdir, "package.json")),
                                    join(tree.subdir, "package.json"))
    root_manifest = _json_object(files[root_manifest_path], root_manifest_path)
    selected: list[tuple[str, bytes]] = [("package.json", files[root_manifest_path]),
                                         (LOCKFILE, files[lock_path])]
    if relative and "packageManager" in project_manifest:
        # The member's own pin wins, as corepack reads the nearest package.json; its
        # manifest goes in so the cache key covers it.
        tool = package_manager(project_manifest["packageManager"],
                               join(tree.subdir, "package.json"))
        selected.append((join(relative, "package.json"),
                         files[join(tree.subdir, "package.json")]))
    else:
        tool = package_manager(root_manifest.get("packageManager"), root_manifest_path)
    notes: list[str] = []
    if tool is DEFAULT_PNPM:
        notes.append(f"no packageManager in package.json: pnpm {tool.version} "
                     "(reprobuild's pinned default) fetches and builds")
    elif tool.hexdigest is None:
        notes.append(f"packageManager pins pnpm {tool.version} without a hash: the registry's "
                     "tarball is trusted as served (its sha512 is in the report)")
    if join(root, WORKSPACE_FILE) in files:
        selected.append((WORKSPACE_FILE, files[join(root, WORKSPACE_FILE)]))
    if join(root, ".npmrc") in files:
        notes.append(".npmrc is not used by the fetch (registry and settings come from "
                     "reprobuild)")
    pins, pin_notes = _pins(lock.get("packages"))
    notes += pin_notes
    return FetchPlan(strategy=STRATEGY, project_dir=tree.subdir, lock_root=root,
                     files=tuple(selected), pin_source=f"pnpm-lock:{lock_path}",
                     requirements=(tool.spec,),
                     pins=tuple(sorted(set(pins), key=lambda p: (p.name, p.version))),
                     notes=tuple(dict.fromkeys(notes)))


def _tool(plan: FetchPlan) -> PnpmTool:
    """The pnpm release of a plan (``requirements`` holds its corepack form)."""
    spec = plan.requirements[0] if plan.requirements else DEFAULT_PNPM.spec
    if spec == DEFAULT_PNPM.spec:
        return DEFAULT_PNPM
    return package_manager(spec, "package.json")


def _sri(algo: str, hexdigest: str) -> str:
    return f"{algo}-{base64.b64encode(bytes.fromhex(hexdigest)).decode()}"


class Pnpm:
    """``[fetch] strategy = "pnpm"``: every package of ``pnpm-lock.yaml``, into a store."""

    name = "pnpm"
    strategy = STRATEGY
    summary = "runs `pnpm fetch` from pnpm-lock.yaml (pnpm from packageManager, hash-checked)"
    allow_list: tuple[tuple[str, int], ...] = (("registry.npmjs.org", 443),)
    image_families: tuple[str, ...] = ()  # the node ecosystem picks the Node.js image
    clock_via_libc = True
    releases: Releases | None = NpmReleases()
    fix_hints: Mapping[str, str] = NODE_FIX_HINTS

    def choose_image(self, tree: SourceTree, requested: str,
                     definitions: Mapping[str, ImageDefinition]) -> str:
        """The recipe's image (the node ecosystem refines ``node`` from ``engines``)."""
        del tree, definitions
        return requested

    def governs(self, tree: SourceTree) -> bool:
        """When the nearest Node lockfile at or above the project is pnpm's."""
        found = nearest_lockfiles(tree)
        return found is not None and LOCKFILE in found[1]

    def reads_above(self, tree: SourceTree) -> tuple[tuple[str, str], ...]:
        """The workspace root (package.json, the lockfile, pnpm-workspace.yaml, .npmrc,
        .pnpmfile.cjs) and every project of the workspace the lockfile names."""
        found = nearest_lockfiles(tree)
        if found is None or LOCKFILE not in found[1] or found[0] == tree.subdir:
            return ()
        root = found[0]
        files = files_of(tree)
        result = [(join(root, name), f"pnpm: the workspace root's {name}") for name in
                  ("package.json", LOCKFILE, WORKSPACE_FILE, ".npmrc", ".pnpmfile.cjs")
                  if join(root, name) in files]
        try:
            lock = load_yaml(files[join(root, LOCKFILE)], join(root, LOCKFILE), "")
        except RecipeError:
            return tuple(result)  # planning will say what is wrong with it
        importers = lock.get("importers") if isinstance(lock, dict) else None
        for key in importers if isinstance(importers, dict) else ():
            member = _member_dir(root, str(key))
            if member is not None and member != tree.subdir:
                result.append((member, "pnpm: a project of the workspace (linked with "
                                       "workspace:)"))
        return tuple(result)

    def declares_package(self, tree: SourceTree) -> str | None:
        """A named, public package.json that a pnpm lockfile (here or above) locks."""
        found = nearest_lockfiles(tree)
        if found is None or LOCKFILE not in found[1]:
            return None
        manifest = files_of(tree).get(join(tree.subdir, "package.json"))
        try:
            data = json.loads(manifest.decode("utf-8-sig")) if manifest else None
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) \
                or data.get("private") is True:
            return None
        return (f"package.json names the package {data['name']}, locked by "
                f"{join(found[0], LOCKFILE)}")

    def plan_fetch(self, tree: SourceTree, settings: FetchSettings,
                   toolchain: ToolchainImage | None) -> FetchPlan:
        """See :func:`plan_pnpm`."""
        del toolchain
        if settings.pins:
            raise RecipeError(f"--pin {settings.pins[0]}: a pnpm build takes exactly what "
                              "its lockfile names", "drop --pin, or change pnpm-lock.yaml")
        return plan_pnpm(tree)

    def fetch_command(self, plan: FetchPlan) -> str:
        """Get pnpm (hash-checked before it runs), then ``pnpm fetch`` into the store."""
        tool = _tool(plan)
        tgz = f"/tmp/pnpm-dl/pnpm-{tool.version}.tgz"
        lines = [
            "set -e",
            f"mkdir -p /tmp/pnpm-dl /tmp/pnpm {STORE_DIR}",
            f"npm pack pnpm@{tool.version} --pack-destination /tmp/pnpm-dl "
            "--cache /tmp/npm-cache --registry=https://registry.npmjs.org/ --loglevel=warn "
            ">/dev/null",
        ]
        if tool.algo and tool.hexdigest:
            lines += [
                f"got=$({tool.algo}sum {tgz} | cut -d' ' -f1)",
                f'if [ "$got" != {tool.hexdigest} ]; then echo "reprobuild: pnpm@{tool.version}'
                f' tarball {tool.algo} is $got, packageManager pins {tool.hexdigest}" >&2; '
                "exit 1; fi",
            ]
        lines += [
            f"cp {tgz} {DEPS_DIR}/{TOOL_TGZ}",
            f"tar -xzf {tgz} -C /tmp/pnpm",
            # --ignore-scripts: pnpm fetch would run the install scripts allowBuilds approves
            # (esbuild's), and nothing from a package runs where the network is reachable.
            f"node /tmp/pnpm/package/bin/pnpm.mjs fetch --frozen-lockfile --ignore-scripts "
            f"--store-dir {STORE_DIR} --reporter=append-only",
            f"rm -rf {STORE_DIR}/v*/projects {STORE_DIR}/v*/tmp",
        ]
        return "\n".join(lines) + "\n"

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        """npm's and pnpm's own proxy settings, one quick retry, the CA."""
        del plan
        return registry_env(proxy, ca_file, ("npm", "pnpm")) | {
            "pnpm_config_registry": "https://registry.npmjs.org/", "CI": "true"}

    def build_env(self, plan: FetchPlan) -> tuple[tuple[str, str], ...]:
        """pnpm from ``/deps/bin``, the fetched store, offline; no registry age check."""
        del plan
        return (("PATH", DEPS_BIN), ("pnpm_config_store_dir", STORE_DIR),
                ("pnpm_config_offline", "true"), ("pnpm_config_minimum_release_age", "0"),
                ("pnpm_config_verify_deps_before_run", "false"),
                ("pnpm_config_update_notifier", "false"), ("CI", "true"),
                ("npm_config_update_notifier", "false"))

    def verify(self, plan: FetchPlan, files: Sequence[ExtractedFile], staging: Path) -> Verified:
        """pnpm's tarball against its pin (then unpacked here), every store file by name."""
        tool = _tool(plan)
        tgz = staging / TOOL_TGZ
        if not tgz.is_file():
            raise EnvironmentFailure("the pnpm fetch left no pnpm tarball", "see the fetch log")
        sha512 = file_digest(tgz, "sha512").split(":", 1)[1]
        if tool.algo and tool.hexdigest:
            actual = sha512 if tool.algo == "sha512" else file_digest(tgz, tool.algo).split(
                ":", 1)[1]
            if actual != tool.hexdigest:
                raise DependencyIntegrityError(f"pnpm@{tool.version}",
                                               f"{tool.algo}:{tool.hexdigest}",
                                               f"{tool.algo}:{actual}", source=tool.origin)
        kept = self._unpack_tool(tgz, staging)
        launcher = staging / DEPS_BIN.removeprefix(f"{DEPS_DIR}/") / "pnpm"
        launcher.parent.mkdir(parents=True, exist_ok=True)
        script = f'#!/bin/sh\nexec node {DEPS_DIR}/{TOOL_DIR}/bin/pnpm.mjs "$@"\n'.encode()
        launcher.write_bytes(script)
        kept.append(ExtractedFile(path=launcher.relative_to(staging).as_posix(),
                                  size=len(script), sha256=hashlib.sha256(script).hexdigest()))
        stored = 0
        for member in files:
            if not member.path.startswith("pnpm-store/"):
                continue
            m = _STORE_FILE.fullmatch(member.path)
            if m is not None:
                named = f"sha512:{m['a']}{m['b']}"
                actual = file_digest(staging / member.path, "sha512")
                if actual != named:  # pnpm's store names each file by its own sha512
                    raise DependencyIntegrityError(member.path, named, actual,
                                                   source="its pnpm store name")
                stored += 1
            elif not re.fullmatch(r"pnpm-store/v\d+/index\.db", member.path):
                continue  # locks, temporary files: not dependencies
            kept.append(member)
        if plan.pins and not stored:
            raise EnvironmentFailure("the pnpm fetch left an empty store", "see the fetch log")
        executables = frozenset(f.path for f in kept
                                if f.path.endswith("-exec") or f.path.startswith("bin/"))
        return Verified(files=tuple(kept), pins=tuple((p.name, p.version) for p in plan.pins),
                        hashes=((f"pnpm@{tool.version}", _sri("sha512", sha512)),),
                        executables=executables)

    @staticmethod
    def _unpack_tool(tgz: Path, staging: Path) -> list[ExtractedFile]:
        """pnpm's own files, from its (checked) tarball, through the safe extractor."""
        dest = staging / TOOL_DIR
        if dest.exists():
            raise EnvironmentFailure(f"the pnpm fetch wrote {TOOL_DIR}/ into the deps",
                                     "this is a bug")
        try:
            with gzip.open(tgz, "rb") as stream:
                unpacked = extract_regular_files(cast(BinaryIO, stream), dest, _TOOL_LIMITS,
                                                 strip_prefix="package")
        except (OSError, EOFError, UnsafeArchiveError) as exc:
            raise EnvironmentFailure(f"the pnpm tarball could not be unpacked: {exc}",
                                     "see the fetch log") from exc
        if not (dest / "bin" / "pnpm.mjs").is_file():
            raise EnvironmentFailure("the pnpm tarball has no bin/pnpm.mjs",
                                     "packageManager names a pnpm this fetch cannot run")
        return [ExtractedFile(path=f"{TOOL_DIR}/{f.path}", size=f.size, sha256=f.sha256)
                for f in unpacked]

    def diagnose(self, plan: FetchPlan, log: str) -> ReprobuildError | None:
        """A tarball that does not match the lockfile (or pnpm's own, its pin)."""
        tool = _TOOL_MISMATCH.search(log)
        if tool is not None:
            return DependencyIntegrityError(f"pnpm@{tool['version']}",
                                            f"{tool['algo']}:{tool['want']}",
                                            f"{tool['algo']}:{tool['got']}",
                                            source="packageManager in package.json")
        m = _INTEGRITY.search(log)
        if m is None:
            return None
        names = [f"{p.name}@{p.version}" for p in plan.pins if m["wanted"] in p.hashes]
        return DependencyIntegrityError(", ".join(names) or "a package", m["wanted"], m["got"],
                                        source=plan.lock_name)

    def failure_line(self, log: str) -> str | None:
        """The first line pnpm (or npm, fetching pnpm) marks as its error, with the
        lockfile entries the registry no longer serves when that is why."""
        lines = log.splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith(("[ERR_PNPM", "ERR_PNPM", "npm error code",
                                        "reprobuild:")):
                gone = [m["entry"] for m in map(_GONE.search, lines[i + 1:i + 200]) if m]
                if gone:
                    return (f"{line.strip()} {len(gone)} lockfile entries are not on the "
                            f"registry (404): {', '.join(gone[:5])}"
                            + (", ..." if len(gone) > 5 else ""))
                return line.strip()
        return None

    def failure_hint(self, log: str) -> str | None:
        """Certificate failures: an intercepting proxy without ``--ca-cert``."""
        if any(marker in log for marker in UNTRUSTED_CERTIFICATE):
            return UNTRUSTED_CA_HINT
        return None


ECOSYSTEM = Pnpm()
