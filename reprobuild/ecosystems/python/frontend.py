"""The PEP 517 frontend the Python recipe runs in the sandbox: pypa/build on a prepared env.

``python -m build`` makes a fresh virtual environment and installs the build requirements
into it for every build, twice (the sdist, then the wheel from it): ~0.4 s of the ~0.7 s a
small server's build takes, spent on work whose result never changes for one fetch. The
fetch phase instead installs exactly the pinned wheels, once per fetch key, into a venv at
``/deps/env`` that the cache keeps (regular files only: its interpreter links are made
again here). This program runs pypa/build's own API (``ProjectBuilder.from_isolated_env``,
the documented seam for frontends that bring their own environment) with that env as the
isolated environment: the backend's interpreter sees the standard library and the pins,
nothing of the image or of this frontend, exactly as in ``build``'s isolated mode, and
unmet requirements (static or the backend's ``get_requires_for_build_*``) fail the build
as they would there.

It is not part of reprobuild's host code: the fetch stages this file next to the wheels
(its bytes are checked when they come back), and the toolchain image's Python runs it,
where ``build`` and ``packaging`` are installed. The command line is ``build``'s subset:
``[--sdist] [--wheel] [--outdir DIR] [-C KEY=VALUE] [--env DIR] [SRCDIR]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import build
from packaging.requirements import Requirement

ENV_DIR = "/deps/env"
"""Where the fetch phase installs the pins (a venv with its links taken out)."""


class PreparedEnv:
    """``build.env.IsolatedEnv`` over the fetch phase's venv, made runnable again.

    The cache holds no links, so the venv's ``bin/python*`` links to the base interpreter
    its ``pyvenv.cfg`` names are recreated; a venv that would see the system's
    site-packages is refused, since then the build would not be isolated.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        cfg = _read_cfg(root / "pyvenv.cfg")
        if cfg.get("include-system-site-packages", "false").lower() != "false":
            raise SystemExit(f"ERROR: {root} sees the system's site-packages: not isolated")
        base = cfg.get("executable") or str(Path(cfg.get("home", "/usr/bin")) / "python3")
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        bindir = root / "bin"
        bindir.mkdir(exist_ok=True)
        for name in ("python", "python3", f"python{version}"):
            link = bindir / name
            if not link.is_symlink():
                link.symlink_to(base)
        self.site = root / "lib" / f"python{version}" / "site-packages"

    @property
    def python_executable(self) -> str:
        """The interpreter the backend runs in."""
        return str(self.root / "bin" / "python")

    def make_extra_environ(self) -> Mapping[str, str]:
        """The env's scripts first on PATH and no inherited PYTHONPATH, as ``build`` does."""
        path = os.environ.get("PATH")
        scripts = str(self.root / "bin")
        return {"PATH": f"{scripts}{os.pathsep}{path}" if path else scripts, "PYTHONPATH": ""}


def _read_cfg(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"ERROR: no prepared build environment at {path.parent} ({exc})"
                         ) from exc
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip().lower(): value.strip() for key, value in pairs}


def unmet(requirements: set[str], site: Path) -> list[str]:
    """The requirements (and their extras' requirements) the env does not satisfy: the
    check ``build`` makes against the current env, made against the prepared one."""
    missing: list[str] = []
    for text in sorted(requirements):
        missing.extend(_unmet(Requirement(text), frozenset({""}), site, set()))
    return missing


def _unmet(req: Requirement, extras: frozenset[str], site: Path,
           seen: set[str]) -> Iterator[str]:
    if str(req) in seen:
        return
    seen.add(str(req))
    if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
        return
    found = next(iter(importlib.metadata.distributions(name=req.name, path=[str(site)])), None)
    if found is None or not req.specifier.contains(found.version, prereleases=True):
        yield str(req)
        return
    for dep in found.requires or ():
        yield from _unmet(Requirement(dep), frozenset({"", *req.extras}), site, seen)


Distribution = Literal["sdist", "wheel"]


def _build_one(env: PreparedEnv, srcdir: str, distribution: Distribution, outdir: str,
               config: Mapping[str, str]) -> str:
    print(f"* Building {distribution} in the prepared environment {env.root}...", flush=True)
    builder = build.ProjectBuilder.from_isolated_env(env, srcdir)
    wanted = builder.build_system_requires | builder.get_requires_for_build(
        distribution, config or None)
    missing = unmet(wanted, env.site)
    if missing:
        raise SystemExit("ERROR: the fetched build requirements do not satisfy "
                         + ", ".join(missing) + f" (needed to build the {distribution})")
    return builder.build(distribution, outdir, config or None)


def _extract_sdist(sdist: str, into: str) -> str:
    """The sdist's single top-level directory, unpacked with the stdlib's data filter
    where this Python has it (what ``build`` does with the intermediate sdist)."""
    with tarfile.open(sdist) as archive:
        names = {member.name.split("/", 1)[0] for member in archive.getmembers()}
        if len(names) != 1:
            raise SystemExit(f"ERROR: {Path(sdist).name} has {len(names)} top-level "
                             "entries, not one directory")
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
        else:  # pragma: no cover - Pythons before the filter backport
            archive.extractall(into)  # noqa: S202 - our own backend's sdist, just built
    return str(Path(into) / names.pop())


def main(argv: list[str] | None = None) -> int:
    """Build like ``python -m build``: without --sdist/--wheel the sdist, then the wheel
    from the sdist."""
    parser = argparse.ArgumentParser(prog="reprobuild-pep517")
    parser.add_argument("srcdir", nargs="?", default=".")
    parser.add_argument("--sdist", "-s", action="store_true")
    parser.add_argument("--wheel", "-w", action="store_true")
    parser.add_argument("--outdir", "-o", default=None)
    parser.add_argument("--config-setting", "-C", action="append", default=[])
    parser.add_argument("--env", default=ENV_DIR)
    args = parser.parse_args(argv)
    outdir = args.outdir or str(Path(args.srcdir) / "dist")
    config = dict(item.partition("=")[::2] for item in args.config_setting)
    env = PreparedEnv(Path(args.env))
    built: list[str] = []
    try:
        if args.sdist or args.wheel:
            chosen: tuple[tuple[Distribution, bool], ...] = (("sdist", args.sdist),
                                                            ("wheel", args.wheel))
            built += [_build_one(env, args.srcdir, d, outdir, config) for d, on in chosen if on]
        else:
            sdist = _build_one(env, args.srcdir, "sdist", outdir, config)
            built.append(sdist)
            with tempfile.TemporaryDirectory(prefix="build-via-sdist-") as tmp:
                print("* Building wheel from sdist", flush=True)
                built.append(_build_one(env, _extract_sdist(sdist, tmp), "wheel", outdir,
                                        config))
    except build.BuildException as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except build.BuildBackendException as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    names = " and ".join(Path(path).name for path in built)
    print(f"Successfully built {names}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
