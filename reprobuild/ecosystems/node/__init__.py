"""The Node.js ecosystem with npm: ``npm ci`` from the lockfile, built and packed offline.

Everything reprobuild knows about npm, its lockfiles, its cache (cacache) and the Node.js
toolchain images lives in this package: planning (:mod:`.plan`), the choice of Node.js
image from ``engines.node`` and ``.nvmrc`` (:mod:`.toolchain`), pnpm projects
(:mod:`.pnpm`, a second strategy on the same images and registry) and, here, the fetch
command, the offline build environment, the check of npm's cache and npm's messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reprobuild.archive import ExtractedFile
from reprobuild.ecosystems.interface import (
    DEPS_DIR,
    UNTRUSTED_CA_HINT,
    FetchPlan,
    FetchSettings,
    Releases,
    Verified,
    files_of,
    join,
    levels_above,
    resolve,
)
from reprobuild.ecosystems.node.plan import (
    NODE_FIX_HINTS,
    NPM_LOCKFILES,
    STRATEGY,
    UNTRUSTED_CERTIFICATE,
    nearest_lockfiles,
    plan_npm,
    registry_env,
)
from reprobuild.ecosystems.node.pnpm import ECOSYSTEM as PNPM
from reprobuild.ecosystems.node.release import NpmReleases
from reprobuild.ecosystems.node.toolchain import node_images, select_node_image
from reprobuild.errors import (
    DependencyIntegrityError,
    EnvironmentFailure,
    RecipeError,
    ReprobuildError,
)
from reprobuild.hashing import file_digest
from reprobuild.source import SourceTree

if TYPE_CHECKING:
    from reprobuild.images import ImageDefinition, ToolchainImage

__all__ = ["ECOSYSTEM", "NPM_CACHE_DIR", "PNPM", "Npm"]

NPM_CACHE_DIR = f"{DEPS_DIR}/npm-cache"
_CONTENT = re.compile(r"npm-cache/_cacache/content-v2/(sha\d+)/([0-9a-f]{2})/([0-9a-f]{2})/"
                      r"([0-9a-f]+)")
_NPM_INTEGRITY = re.compile(
    r"(?P<want>sha\d+-[A-Za-z0-9+/=]+) integrity checksum failed when using sha\d+: wanted "
    r"(?P<wanted>sha\d+-[A-Za-z0-9+/=]+) but got (?P<got>sha\d+-[A-Za-z0-9+/=]+)")


_EXTENDS = re.compile(rb'"extends"\s*:\s*(\[[^\]]*\]|"[^"]*")')
_QUOTED = re.compile(rb'"([^"]*)"')


def tsconfig_bases(files: Mapping[str, bytes], subdir: str) -> list[tuple[str, str]]:
    """The tsconfig files above the project its own ``extends`` (tsc follows the chain;
    a monorepo member usually extends ``../../tsconfig.json``). The files are JSON with
    comments, so ``extends`` is found by pattern: one sent too many costs nothing, one
    missing fails the build. Package names (``@tsconfig/node20``) resolve in node_modules."""
    prefix = f"{subdir}/" if subdir else ""
    todo = [name for name in sorted(files) if name.startswith(prefix)
            and "/" not in name[len(prefix):] and name[len(prefix):].startswith("tsconfig")
            and name.endswith(".json")]
    seen = set(todo)
    found: list[tuple[str, str]] = []
    while todo and len(seen) < 64:
        path = todo.pop()
        match = _EXTENDS.search(files.get(path, b""))
        for raw in _QUOTED.findall(match.group(1)) if match else ():
            target = raw.decode("utf-8", "replace")
            if not target.startswith(("./", "../")):
                continue
            resolved = resolve(path.rsplit("/", 1)[0] if "/" in path else "",
                               target if target.endswith(".json") else f"{target}.json")
            if resolved is None or resolved in seen or resolved not in files:
                continue
            seen.add(resolved)
            todo.append(resolved)
            if not resolved.startswith(prefix):
                found.append((resolved, f"node: {path} extends it (tsc reads it)"))
    return found


class Npm:
    """``[fetch] strategy = "npm"``: every package of ``package-lock.json``, into a cache."""

    name = "node"
    strategy = STRATEGY
    summary = "runs `npm ci --ignore-scripts` from package-lock.json"
    allow_list: tuple[tuple[str, int], ...] = (("registry.npmjs.org", 443),)
    image_families: tuple[str, ...] = ("node",)
    clock_via_libc = True
    releases: Releases | None = NpmReleases()
    fix_hints: Mapping[str, str] = NODE_FIX_HINTS

    def choose_image(self, tree: SourceTree, requested: str,
                     definitions: Mapping[str, ImageDefinition]) -> str:
        """The newest Node.js image that ``engines.node`` and ``.nvmrc`` allow.

        ``.nvmrc`` is looked up in the project directory, then its ancestors (monorepos
        keep it at the root); a recipe naming another image than ``node`` keeps it.
        """
        if requested not in self.image_families:
            return requested
        files = {e.path: e.data for e in tree.entries}
        prefix = f"{tree.subdir}/" if tree.subdir else ""
        package_json = files.get(f"{prefix}package.json", b"{}")
        nvmrc = None
        parts = tree.subdir.split("/") if tree.subdir else []
        for depth in range(len(parts), -1, -1):
            candidate = "/".join([*parts[:depth], ".nvmrc"])
            if candidate in files:
                nvmrc = files[candidate]
                break
        return select_node_image(package_json, nvmrc, node_images(definitions))

    def governs(self, tree: SourceTree) -> bool:
        """Unless the nearest lockfile is only another manager's (pnpm's: :mod:`.pnpm`)."""
        found = nearest_lockfiles(tree)
        return found is None or bool(set(found[1]) & set(NPM_LOCKFILES)) \
            or "pnpm-lock.yaml" not in found[1]

    def reads_above(self, tree: SourceTree) -> tuple[tuple[str, str], ...]:
        """The nearest ``.nvmrc`` above; for a workspace member, the root npm installs
        from (its package.json, lockfile, .npmrc) and every workspace (npm ci links them)."""
        files = files_of(tree)
        if join(tree.subdir, "package.json") not in files:
            return ()
        found: list[tuple[str, str]] = []
        nvmrc = next((join(level, ".nvmrc") for level in [tree.subdir, *levels_above(
            tree.subdir)] if join(level, ".nvmrc") in files), None)
        if nvmrc is not None and nvmrc != join(tree.subdir, ".nvmrc"):
            found.append((nvmrc, "node: the .nvmrc that picks the Node.js version"))
        found += tsconfig_bases(files, tree.subdir)
        try:
            plan = plan_npm(tree)
        except RecipeError:
            return tuple(found)  # not npm's to build, or planning will say what is wrong
        root = plan.lock_root
        standalone = dict(plan.options).get("workspaces") == "false"
        roots = [root] if root != tree.subdir else []
        if standalone:  # npm still reads the workspace root's manifest above the member
            roots += [level for level in levels_above(tree.subdir)
                      if join(level, "package.json") in files][:1]
        for level in roots:
            for name in ("package.json", *NPM_LOCKFILES, ".npmrc"):
                if join(level, name) in files:
                    found.append((join(level, name), f"npm: the workspace root's {name}"))
        if root != tree.subdir:
            for name, _ in plan.files:
                member = join(root, name.rsplit("/", 1)[0]) if "/" in name else None
                if member is not None and member != tree.subdir:
                    found.append((member, "npm: a workspace of the root (npm ci installs "
                                          "and links every one)"))
        return tuple(found)

    def declares_package(self, tree: SourceTree) -> str | None:
        """A named package.json that is not ``private`` (release tooling, a monorepo root)."""
        data = files_of(tree).get(join(tree.subdir, "package.json"))
        try:
            manifest = json.loads(data.decode("utf-8-sig")) if data else None
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("name"), str):
            return None
        if manifest.get("private") is True:
            return None
        return f"package.json names the package {manifest['name']}"

    def plan_fetch(self, tree: SourceTree, settings: FetchSettings,
                   toolchain: ToolchainImage | None) -> FetchPlan:
        """See :func:`reprobuild.ecosystems.node.plan.plan_npm`."""
        del toolchain  # the lockfile decides everything
        if settings.pins:
            raise RecipeError(f"--pin {settings.pins[0]}: pins apply to Python build "
                              "requirements; an npm build takes exactly what its lockfile names",
                              "drop --pin, or change package-lock.json")
        return plan_npm(tree)

    def fetch_command(self, plan: FetchPlan) -> str:
        """``npm ci`` without running any package's scripts, into the cache only."""
        del plan
        args = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund",
                "--cache", NPM_CACHE_DIR, "--registry=https://registry.npmjs.org/",
                "--loglevel=warn"]
        return " ".join(args) + "\n"

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        """npm's own proxy settings (it ignores HTTPS_PROXY), quick retries, the CA."""
        del plan
        return registry_env(proxy, ca_file)

    def build_env(self, plan: FetchPlan) -> tuple[tuple[str, str], ...]:
        """``npm ci --offline`` in the build reads the fetched cache and nothing else."""
        # npm reads --workspaces=false only from its command line: the recipe passes this.
        flags = "--workspaces=false" if dict(plan.options).get("workspaces") == "false" else ""
        return (("REPROBUILD_NPM_FLAGS", flags),
                ("npm_config_cache", NPM_CACHE_DIR), ("npm_config_offline", "true"),
                ("npm_config_audit", "false"), ("npm_config_fund", "false"),
                ("npm_config_update_notifier", "false"))

    def verify(self, plan: FetchPlan, files: Sequence[ExtractedFile], staging: Path) -> Verified:
        """Keep npm's content-addressed cache only, and check each file against its name."""
        kept: list[ExtractedFile] = []
        content: set[str] = set()
        for member in files:
            if not member.path.startswith("npm-cache/_cacache/"):
                continue  # npm's _logs and notifier stamps are not dependencies
            if member.path.startswith("npm-cache/_cacache/tmp/"):
                continue
            m = _CONTENT.fullmatch(member.path)
            if m is not None:
                algo = m[1]
                named = f"{algo}:{m[2]}{m[3]}{m[4]}"
                actual = file_digest(staging / member.path, algo)
                if actual != named:  # cacache names each file by its own hash; npm checked too
                    raise DependencyIntegrityError(member.path, named, actual,
                                                   source="its npm cache name")
                content.add(named)
            kept.append(member)
        missing = 0
        for pin in plan.pins:
            for sri in pin.hashes:
                algo, _, b64 = sri.partition("-")
                try:
                    hexdigest = base64.b64decode(b64, validate=True).hex()
                except (ValueError, binascii.Error):
                    continue
                if f"{algo}:{hexdigest}" not in content:
                    missing += 1
        notes: tuple[str, ...] = ()
        if missing:
            notes = (f"{missing} lockfile entries were not downloaded (optional or for other "
                     "platforms)",)
        if not kept:
            raise EnvironmentFailure("the npm fetch left an empty cache", "see the fetch log")
        return Verified(files=tuple(kept), pins=tuple((p.name, p.version) for p in plan.pins),
                        notes=notes)

    def diagnose(self, plan: FetchPlan, log: str) -> ReprobuildError | None:
        """npm's EINTEGRITY, naming the lockfile entries with the wanted hash."""
        m = _NPM_INTEGRITY.search(log)
        if m is None and "EINTEGRITY" not in log:
            return None
        wanted = m["wanted"] if m else "the lockfile's integrity"
        got = m["got"] if m else "something else"
        names = [f"{p.name}@{p.version}" for p in plan.pins if m and m["wanted"] in p.hashes]
        return DependencyIntegrityError(", ".join(names) or "a package", wanted, got,
                                        source=plan.pin_source.split(":", 1)[-1])

    def failure_line(self, log: str) -> str | None:
        """The first line the tool marks as its error."""
        return next((line.strip() for line in log.splitlines()
                     if line.strip().startswith(("npm ERR! code", "npm error code"))), None)

    def failure_hint(self, log: str) -> str | None:
        """npm failing certificate checks: an intercepting proxy without ``--ca-cert``."""
        if any(marker in log for marker in UNTRUSTED_CERTIFICATE):
            return UNTRUSTED_CA_HINT
        return None


ECOSYSTEM = Npm()
