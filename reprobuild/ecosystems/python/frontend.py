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

Each distribution's hooks (``get_requires_for_build_*``, then ``build_*``) run in one
backend process, not one each: pyproject_hooks' own ``_in_process`` script, run twice by a
small stdlib server (:data:`HOOK_SERVER`) in the env's interpreter. Starting a process and
loading the backend's machinery is most of a hook's cost (~80 ms of hatchling's), so this
saves about a third of a small server's build. The sdist and the wheel (built in the
unpacked sdist) still get a fresh process each. The process imports the backend first, as
the first hook would, and every hook starts from the state that import left (``sys.path``,
``sys.meta_path``, the environment, the working directory): what the second hook can see of
the first is what the backend keeps in its own modules. ``--fresh-hooks`` gives every hook
its own process, as ``python -m build`` does.

It is not part of reprobuild's host code: the fetch stages this file next to the wheels
(its bytes are checked when they come back), and the toolchain image's Python runs it,
where ``build`` and ``packaging`` are installed. The command line is ``build``'s subset:
``[--sdist] [--wheel] [--outdir DIR] [-C KEY=VALUE] [--env DIR] [--fresh-hooks] [SRCDIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

import build
import pyproject_hooks
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


HOOK_SERVER = r"""
import importlib.util, json, os, runpy, sys, traceback
# "-c" put the working directory first on sys.path (unless PYTHONSAFEPATH says not to); a
# hook script run as a file has its own directory there instead, which _in_process takes
# out: either way the backend sees neither.
if not getattr(sys.flags, "safe_path", False):
    del sys.path[0]
control = os.fdopen(int(sys.argv[1]), "r", encoding="utf-8")
reply = os.fdopen(int(sys.argv[2]), "w", encoding="utf-8")
os.set_inheritable(control.fileno(), False)
os.set_inheritable(reply.fileno(), False)
script = sys.argv[3]
sys.argv[:] = [script]
# Import the backend as the first hook would (same environment, directory and backend-path
# finder), then start every hook from the state that import left: a fresh process's, as far
# as sys.path, sys.meta_path, the environment and the directory go (a backend that puts its
# vendored packages on sys.path when imported keeps them). A failed import is the hook's to
# report, as it would be in a fresh process.
try:
    spec = importlib.util.spec_from_file_location("_reprobuild_hooks", script)
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    hooks._build_backend()
except BaseException:
    pass
imported = list(sys.path), list(sys.meta_path), dict(os.environ), os.getcwd()
for line in control:
    request = json.loads(line)
    sys.path[:], sys.meta_path[:] = imported[0], imported[1]
    os.environ.clear()
    os.environ.update(imported[2])
    os.chdir(imported[3])
    sys.argv[:] = request["argv"]
    code = 0
    try:
        runpy.run_path(request["argv"][0], run_name="__main__")
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    reply.write(json.dumps(code) + "\n")
    reply.flush()
"""
"""The backend process's loop: one hook per request (the hook script's ``argv``), each
through ``runpy`` as if the script were run; answers each with its exit code. Stdlib only:
it runs in the prepared env's interpreter, which holds only the pins."""


class HookProcess:
    """A pyproject_hooks runner that serves one builder's hooks from one backend process.

    A call with another interpreter, hook script, directory or environment than the running
    process's starts a new one; a process that dies answers its call as a failed subprocess
    would (``CalledProcessError``, which ``build`` reports as a backend failure).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._key: tuple[str, str, str, tuple[tuple[str, str], ...]] | None = None
        self._control: IO[str] | None = None
        self._reply: IO[str] | None = None

    def __call__(self, cmd: Sequence[str], cwd: str | None = None,
                 extra_environ: Mapping[str, str] | None = None) -> None:
        env = {**os.environ, **(extra_environ or {})}
        where = cwd or str(Path.cwd())
        # The process serves calls that a fresh one would start alike: the same interpreter,
        # hook script, directory and environment (one builder's calls all are).
        key = (cmd[0], cmd[1], where, tuple(sorted(env.items())))
        if self._proc is not None and key != self._key:
            self.close()
        if self._proc is None:
            self._start(cmd[0], cmd[1], env, where)
            self._key = key
        assert self._control is not None and self._reply is not None
        request = {"argv": list(cmd[1:])}
        try:
            self._control.write(json.dumps(request) + "\n")
            self._control.flush()
            answer = self._reply.readline()
        except OSError:
            answer = ""
        if not answer:  # the backend took its process down with it
            code = self.close() or 1
            raise subprocess.CalledProcessError(code, list(cmd))
        code = int(json.loads(answer))
        if code:
            raise subprocess.CalledProcessError(code, list(cmd))

    def _start(self, python: str, script: str, env: Mapping[str, str], cwd: str) -> None:
        control_r, control_w = os.pipe()
        reply_r, reply_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [python, "-c", HOOK_SERVER, str(control_r), str(reply_w), script],
                cwd=cwd, env=dict(env), pass_fds=(control_r, reply_w))
        finally:
            os.close(control_r)
            os.close(reply_w)
        self._control = os.fdopen(control_w, "w", encoding="utf-8")
        self._reply = os.fdopen(reply_r, "r", encoding="utf-8")

    def close(self) -> int | None:
        """End the backend process (its control pipe closes); its exit code, None if none
        ran."""
        proc, self._proc, self._key = self._proc, None, None
        for stream in (self._control, self._reply):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._control = self._reply = None
        return None if proc is None else proc.wait()


Distribution = Literal["sdist", "wheel"]


def _build_one(env: PreparedEnv, srcdir: str, distribution: Distribution, outdir: str,
               config: Mapping[str, str], *, fresh_hooks: bool = False) -> str:
    print(f"* Building {distribution} in the prepared environment {env.root}...", flush=True)
    runner = HookProcess()
    builder = build.ProjectBuilder.from_isolated_env(
        env, srcdir, runner=pyproject_hooks.default_subprocess_runner if fresh_hooks
        else runner)
    try:
        wanted = builder.build_system_requires | builder.get_requires_for_build(
            distribution, config or None)
        missing = unmet(wanted, env.site)
        if missing:
            raise SystemExit("ERROR: the fetched build requirements do not satisfy "
                             + ", ".join(missing) + f" (needed to build the {distribution})")
        return builder.build(distribution, outdir, config or None)
    finally:
        runner.close()


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
    parser.add_argument("--fresh-hooks", action="store_true",
                        help="run every hook in a new process, as python -m build does")
    args = parser.parse_args(argv)
    outdir = args.outdir or str(Path(args.srcdir) / "dist")
    config = dict(item.partition("=")[::2] for item in args.config_setting)
    env = PreparedEnv(Path(args.env))
    fresh: bool = args.fresh_hooks
    built: list[str] = []
    try:
        if args.sdist or args.wheel:
            chosen: tuple[tuple[Distribution, bool], ...] = (("sdist", args.sdist),
                                                            ("wheel", args.wheel))
            built += [_build_one(env, args.srcdir, d, outdir, config, fresh_hooks=fresh)
                      for d, on in chosen if on]
        else:
            sdist = _build_one(env, args.srcdir, "sdist", outdir, config, fresh_hooks=fresh)
            built.append(sdist)
            with tempfile.TemporaryDirectory(prefix="build-via-sdist-") as tmp:
                print("* Building wheel from sdist", flush=True)
                built.append(_build_one(env, _extract_sdist(sdist, tmp), "wheel", outdir,
                                        config, fresh_hooks=fresh))
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
    status = main()
    # Nothing is left to clean up (the backend processes have been waited for, the
    # temporary directory is gone): skip tearing down build's ~100 modules, ~20 ms.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
