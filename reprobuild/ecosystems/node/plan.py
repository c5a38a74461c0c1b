"""Planning an npm project's fetch: the lockfile, the workspace manifests, the pins.

The fetch runs ``npm ci --ignore-scripts`` on the manifests and the lockfile alone (never
the source), so the plan picks exactly those files: the lockfile found in the project
directory or the nearest directory above it (a workspace root), its ``package.json`` and
the ``package.json`` of every workspace the lock or the ``workspaces`` globs name. Every
package the lock resolves becomes a pin with its ``integrity``.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

from reprobuild.ecosystems.interface import FetchPlan, Pin, files_of, join
from reprobuild.errors import RecipeError
from reprobuild.source import SourceTree

__all__ = ["NODE_FIX_HINTS", "NPM_LOCKFILES", "OTHER_LOCKFILES", "STRATEGY",
           "UNTRUSTED_CERTIFICATE", "nearest_lockfiles", "plan_npm", "registry_env"]

STRATEGY = "npm"

NPM_LOCKFILES = ("npm-shrinkwrap.json", "package-lock.json")
"""npm's lockfiles, in npm's order of precedence (a shrinkwrap wins)."""
OTHER_LOCKFILES = {
    "pnpm-lock.yaml": "pnpm",
    "yarn.lock": "Yarn",
    "bun.lock": "Bun",
    "bun.lockb": "Bun",
}
"""Lockfiles of other Node package managers, which this strategy does not read."""
UNTRUSTED_CERTIFICATE = ("SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER_CERT",
                         "unable to get local issuer certificate", "self-signed certificate")
"""What Node's TLS stack says about a certificate it does not trust (npm and pnpm)."""
_SUPPORTED = ("package-lock.json or npm-shrinkwrap.json (--recipe node) and pnpm-lock.yaml "
              "(--recipe pnpm)")


def registry_env(proxy: str, ca_file: str | None,
                 tools: tuple[str, ...] = ("npm",)) -> dict[str, str]:
    """Each npm-style tool's own proxy settings (``<tool>_config_*``: npm ignores
    HTTPS_PROXY), no update check, one quick retry, and the CA for Node's TLS."""
    env = {"NODE_OPTIONS": ""}
    for tool in tools:
        env |= {f"{tool}_config_https_proxy": proxy, f"{tool}_config_proxy": proxy,
                f"{tool}_config_update_notifier": "false", f"{tool}_config_fetch_retries": "1",
                f"{tool}_config_fetch_retry_mintimeout": "1000",
                f"{tool}_config_fetch_retry_maxtimeout": "5000"}
    if ca_file is not None:
        env["NODE_EXTRA_CA_CERTS"] = ca_file
        env["npm_config_cafile"] = ca_file
    return env


def nearest_lockfiles(tree: SourceTree) -> tuple[str, tuple[str, ...]] | None:
    """The lockfiles governing the project: the nearest directory at the project or above
    it holding any Node lockfile, and every lockfile there (the package managers look for
    their workspace root the same way; two managers' lockfiles side by side is a tie)."""
    files = files_of(tree)
    parts = PurePosixPath(tree.subdir).parts if tree.subdir else ()
    for depth in range(len(parts), -1, -1):
        level = "/".join(parts[:depth])
        names = tuple(n for n in (*NPM_LOCKFILES, *OTHER_LOCKFILES) if join(level, n) in files)
        if names:
            return level, names
    return None


def _glob_match(path: str, pattern: str) -> bool:
    """npm workspace globs: ``*`` stays inside one path segment, ``**`` spans several."""
    if "**" in pattern:
        return fnmatchcase(path, pattern)
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(map(fnmatchcase, parts, wanted))


def _workspace_root_of(files: dict[str, bytes], ancestors: list[str],
                       project: str) -> str | None:
    """The nearest directory above the project whose package.json "workspaces" cover it
    (how npm finds the root it installs from)."""
    for level in ancestors:
        data = files.get(join(level, "package.json"))
        if data is None:
            continue
        try:
            manifest = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        globs = manifest.get("workspaces", []) if isinstance(manifest, dict) else []
        if isinstance(globs, dict):
            globs = globs.get("packages", [])
        relative = project[len(level):].lstrip("/") if level else project
        for pattern in globs if isinstance(globs, list) else []:
            if isinstance(pattern, str) and _glob_match(
                    relative, pattern.strip().rstrip("/").removeprefix("./")):
                return level
    return None


def plan_npm(tree: SourceTree) -> FetchPlan:
    """The fetch plan of an npm project: its lockfile, found in the project or above it."""
    files = files_of(tree)
    project = tree.subdir
    parts = PurePosixPath(project).parts if project else ()
    levels = ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]
    root: str | None = None
    lock_name = ""
    # npm itself (npm ci in the build) installs from the workspace root whose
    # "workspaces" cover the project, never from a member's own lockfile: the fetch follows
    # it, and a member lockfile is used only when that root has none (the build then runs
    # npm with --workspaces=false, so it stays in the member; see build options).
    workspace_root = _workspace_root_of(files, levels[1:], project)
    standalone = False
    if workspace_root is not None:
        if any(join(workspace_root, n) in files for n in NPM_LOCKFILES):
            levels = levels[levels.index(workspace_root):]
        elif any(join(project, n) in files for n in NPM_LOCKFILES):
            levels = [project]
            standalone = True
    for level in levels:
        lock_name = next((n for n in NPM_LOCKFILES if join(level, n) in files), "")
        if lock_name:
            root = level
            break
        others = [join(level, n) for n in OTHER_LOCKFILES if join(level, n) in files]
        if others and join(level, "pnpm-lock.yaml") in others:
            raise RecipeError(f"{join(level, 'pnpm-lock.yaml')} locks this project, not an "
                              "npm lockfile", "pass --recipe pnpm (or drop --recipe node)")
        if others:
            manager = OTHER_LOCKFILES[others[0].rsplit("/", 1)[-1]]
            raise RecipeError(
                f"found {', '.join(others)}: {manager} lockfiles are not read by the fetch "
                f"phase; supported are {_SUPPORTED}",
                "commit a package-lock.json (`npm install --package-lock-only`) or a "
                "pnpm-lock.yaml (`pnpm import` reads yarn.lock) beside it")
    if root is None:
        raise RecipeError(
            f"no package-lock.json in {project or 'the repository root'} or above it: the npm "
            "fetch installs exactly what the lockfile names",
            "run `npm install --package-lock-only` and commit package-lock.json")
    notes: list[str] = []
    lock_path = join(root, lock_name)
    manifest_path = join(root, "package.json")
    if manifest_path not in files:
        raise RecipeError(f"{lock_path} has no package.json next to it",
                          "npm ci needs both files")
    try:
        lock = json.loads(files[lock_path])
        manifest = json.loads(files[manifest_path])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecipeError(f"{lock_path} or {manifest_path} is not valid JSON: {exc}",
                          "fix the file; nothing was fetched") from exc
    if not isinstance(lock, dict) or not isinstance(manifest, dict):
        raise RecipeError(f"{lock_path}: expected a JSON object", "regenerate the lockfile")
    packages = lock.get("packages")
    if not isinstance(packages, dict):
        raise RecipeError(
            f"{lock_path} is lockfileVersion {lock.get('lockfileVersion')}; the fetch phase "
            "needs lockfileVersion 2 or 3 (npm 7 or newer)",
            "regenerate it with npm >= 7: `npm install --package-lock-only`")

    workspace_dirs: set[str] = set()
    for key, value in packages.items():
        if key and "node_modules/" not in f"/{key}" and isinstance(value, dict):
            workspace_dirs.add(key)
    globs = manifest.get("workspaces", [])
    if isinstance(globs, dict):
        globs = globs.get("packages", [])
    prefix = f"{root}/" if root else ""
    manifests = sorted(p[len(prefix):] for p in files
                       if p.startswith(prefix) and p.endswith("/package.json"))
    for pattern in globs if isinstance(globs, list) else []:
        if isinstance(pattern, str):
            clean = pattern.strip().rstrip("/").removeprefix("./")
            workspace_dirs |= {m.rsplit("/", 1)[0] for m in manifests
                               if _glob_match(m.rsplit("/", 1)[0], clean)
                               and "node_modules/" not in m}
    if root != project:
        relative = project[len(prefix):]
        if relative not in workspace_dirs:
            raise RecipeError(
                f"{project} is not a workspace of the npm project at "
                f"{root or 'the repository root'} ({lock_path} has no entry for it)",
                "add it to \"workspaces\" in package.json and refresh the lockfile, or give "
                "it its own package-lock.json")
    selected: list[tuple[str, bytes]] = [("package.json", files[manifest_path]),
                                         (lock_name, files[lock_path])]
    for directory in sorted(workspace_dirs):
        path = join(directory, "package.json")
        if path in manifests:
            selected.append((path, files[join(root, path)]))
        else:
            notes.append(f"workspace {directory} has no package.json in the tree")
    if join(root, ".npmrc") in files:
        notes.append(".npmrc is not used by the fetch (registry and settings come from "
                     "reprobuild)")

    pins: dict[tuple[str, str, str], Pin] = {}
    for key, value in packages.items():
        if "node_modules/" not in f"/{key}" or not isinstance(value, dict) or value.get("link"):
            continue
        name = str(value.get("name") or key.rsplit("node_modules/", 1)[-1])
        version = str(value.get("version", ""))
        integrity = str(value.get("integrity", ""))
        resolved = str(value.get("resolved", ""))
        if resolved and not resolved.startswith("https://registry.npmjs.org/"):
            notes.append(f"{name}@{version} resolves from {resolved[:120]} (off the registry)")
        if not integrity and not value.get("inBundle"):
            notes.append(f"{name}@{version} has no integrity in the lockfile")
        pins[(name, version, integrity)] = Pin(name, version, tuple(integrity.split()))
    if standalone:
        notes.append(f"{project} is a workspace of {workspace_root or 'the repository root'}, "
                     "which has no lockfile: its own lockfile is used, and npm runs with "
                     "--workspaces=false")
    return FetchPlan(strategy=STRATEGY, project_dir=project, lock_root=root,
                     options=(("workspaces", "false" if standalone else ""),),
                     files=tuple(selected), pin_source=f"package-lock:{lock_path}",
                     pins=tuple(sorted(pins.values(), key=lambda p: (p.name, p.version))),
                     notes=tuple(dict.fromkeys(notes)))


NODE_FIX_HINTS: dict[str, str] = {
    "embedded-timestamp": "a bundler banner or a generated version file with the build "
    "date: take it from SOURCE_DATE_EPOCH (npm pack and pnpm pack already store fixed "
    "member times)",
    "build-path": "source maps with absolute sources or sourceRoot, or a bundler that "
    "inlines __dirname: make them relative to the package",
    "file-order": "a build script that globs files without sorting (bundler entry "
    "lists, generated index files)",
}
"""What Node's tools do about a class of cause (npm and pnpm share it)."""

