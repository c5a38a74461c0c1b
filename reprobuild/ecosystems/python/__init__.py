"""The Python ecosystem: build requirements as wheels from PyPI, built offline with ``build``.

Everything reprobuild knows about pip, uv, PEP 517 backends and PyPI lives in this
package: planning (:mod:`.plan`), standard parsing (:mod:`.pep`, a wrapper over
``packaging``) and, here, the fetch command, the offline build environment, the check of
what pip downloaded and pip's failure messages.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache
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
    outside,
)
from reprobuild.ecosystems.python import pep
from reprobuild.ecosystems.python.plan import STRATEGY, plan_python, target_of
from reprobuild.ecosystems.python.release import PyPIReleases
from reprobuild.errors import DependencyIntegrityError, EnvironmentFailure, ReprobuildError
from reprobuild.hashing import file_digest
from reprobuild.source import SourceTree

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from reprobuild.images import ImageDefinition, ToolchainImage

__all__ = ["ECOSYSTEM", "ENV_DIR", "FRONTEND", "WHEELS_DIR", "PythonBuild"]

WHEELS_DIR = f"{DEPS_DIR}/wheels"
_ENV = "env"
_FRONTEND_DIR = "frontend"
_FRONTEND_NAME = "reprobuild-pep517.py"
ENV_DIR = f"{DEPS_DIR}/{_ENV}"
"""The pins installed once per fetch key: a venv whose interpreter links the frontend
makes again (the cache holds regular files only)."""
FRONTEND = f"{DEPS_DIR}/{_FRONTEND_DIR}/{_FRONTEND_NAME}"
"""Where the builds find :mod:`.frontend` (the recipe runs ``python`` on it; not
named ``build.py``, which would shadow pypa/build for the script itself)."""

_QUOTED_UP = re.compile(r"""["']((?:\./)?(?:\.\./)+[^"'\n]*)["']""")
"""A quoted path above the project in a build file (``"../README.md"``)."""
_GLOB = re.compile(r"[*?\[]")

_PIP_MISMATCH = re.compile(
    r"^\s*(?P<pkg>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+) from (?P<url>\S+)[^\n]*$\s*"
    r"Expected (?P<algo>sha\d+) (?P<expected>[0-9a-f]+)(?:\s*or [0-9a-f]+)*\s*"
    r"Got\s+(?P<actual>[0-9a-f]+)", re.MULTILINE)
_UNTRUSTED_CERTIFICATE = ("CERTIFICATE_VERIFY_FAILED", "unable to get local issuer certificate",
                          "self-signed certificate")


class PythonBuild:
    """``[fetch] strategy = "python-build"``: the PEP 517 build requirements, as wheels."""

    name = "python"
    strategy = STRATEGY
    summary = "fetches [build-system] requires as wheels"
    allow_list: tuple[tuple[str, int], ...] = (("pypi.org", 443), ("files.pythonhosted.org", 443))
    image_families: tuple[str, ...] = ()
    clock_via_libc = True
    releases: Releases | None = PyPIReleases()
    fix_hints: Mapping[str, str] = {
        "embedded-timestamp": "setuptools' sdist keeps the file times of the files it "
        "generates (PKG-INFO, *.egg-info/, setup.cfg) and the build time in the gzip header; "
        "hatchling and flit-core clamp both to SOURCE_DATE_EPOCH",
        "archive-metadata": "setuptools' sdist and wheel store the modes and owner names "
        "the files have on disk; hatchling stores fixed ones",
        "build-path": "look for code generated at build time that records __file__, "
        "os.getcwd() or sys.prefix",
        "randomness": "set and dict order follows PYTHONHASHSEED, which differs per run: "
        "sort before writing",
    }

    def choose_image(self, tree: SourceTree, requested: str,
                     definitions: Mapping[str, ImageDefinition]) -> str:
        """One Python toolchain image: the recipe's."""
        del tree, definitions
        return requested

    def governs(self, tree: SourceTree) -> bool:
        """Always: no other ecosystem shares this one's manifests."""
        del tree
        return True

    def reads_above(self, tree: SourceTree) -> tuple[tuple[str, str], ...]:
        """Nothing, unless a build file names a path above the project (``"../LICENSE"``:
        a readme, a force-include, a local requirement): each quoted one (up to its first
        glob), else, when a ``../`` is not a quoted path, the whole repository."""
        files = files_of(tree)
        found: list[tuple[str, str]] = []
        for name in ("pyproject.toml", "setup.py", "setup.cfg"):
            path = join(tree.subdir, name)
            data = files.get(path)
            if data is None or b"../" not in data:
                continue
            text = data.decode("utf-8", "replace")
            quoted = _QUOTED_UP.findall(text)
            if sum(q.count("../") for q in quoted) != text.count("../"):  # not all quoted
                return (("", f"{path} names a path above the project"),)
            for target in quoted:
                plain = "/".join(_GLOB.split(target, maxsplit=1)[0].split("/")[:-1]) \
                    if _GLOB.search(target) else target
                where = outside(tree.subdir, plain)
                if where is not None:
                    found.append((where, f"python: {path} names it"))
        return tuple(found)

    def declares_package(self, tree: SourceTree) -> str | None:
        """``[project] name`` in pyproject.toml, or a setup.py/setup.cfg."""
        files = files_of(tree)
        if join(tree.subdir, "setup.py") in files or join(tree.subdir, "setup.cfg") in files:
            return "setup.py/setup.cfg"
        data = files.get(join(tree.subdir, "pyproject.toml"))
        try:
            project = tomllib.loads(data.decode("utf-8-sig")).get("project") if data else None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        if isinstance(project, dict) and isinstance(project.get("name"), str):
            return f"pyproject.toml names the package {project['name']}"
        return None

    def plan_fetch(self, tree: SourceTree, settings: FetchSettings,
                   toolchain: ToolchainImage | None) -> FetchPlan:
        """See :func:`reprobuild.ecosystems.python.plan.plan_python`; the frontend goes
        in with the requirements, so a new frontend is a new fetch key."""
        plan = plan_python(tree, settings, target_of(toolchain))
        return replace(plan, files=(*plan.files, (_FRONTEND_NAME, frontend_source())))

    def fetch_command(self, plan: FetchPlan) -> str:
        """``pip download`` of wheels only: hash-checked pins, or resolution at the cutoff.

        Then, still in the fetch container (nothing of the project has run, and installing
        a wheel runs none of its code), the prepared environment: a venv holding exactly
        the downloaded wheels, byte-compiled with hash-checked pycs (the cache's file times
        are fixed, so time-checked ones would be recompiled in every build), its links
        taken out because the cache keeps regular files only.
        """
        args = ["python", "-m", "pip", "download", "--dest", WHEELS_DIR,
                "--only-binary", ":all:", "--no-cache-dir", "--disable-pip-version-check",
                "--no-input", "--progress-bar", "off", "--retries", "2", "--timeout", "60"]
        if plan.cutoff is None:
            args += ["--no-deps", "--require-hashes"]
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.cutoff))
            args += ["--uploaded-prior-to", stamp]
        args += ["-r", "requirements.txt"]
        install = ["python", "-m", "pip", "--python", f"{ENV_DIR}/bin/python", "install",
                   "--no-index", "--no-deps", "--no-compile", "--disable-pip-version-check",
                   "--no-input", "--progress-bar", "off", "--no-warn-script-location",
                   f"{WHEELS_DIR}/*.whl"]
        return "\n".join([
            f"mkdir -p {WHEELS_DIR}", " ".join(args),
            f"python -m venv --without-pip {ENV_DIR}", " ".join(install),
            f"python -m compileall -q --invalidation-mode checked-hash {ENV_DIR}/lib",
            f"find {ENV_DIR} -type l -delete",
            f"mkdir -p {DEPS_DIR}/{_FRONTEND_DIR}", f"cp {_FRONTEND_NAME} {FRONTEND}", ""])

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        """pip reads no config file of the image; the CA only when one was handed in."""
        del plan, proxy  # pip honours HTTPS_PROXY, which the fetch runner sets
        env = {"PIP_CONFIG_FILE": "/dev/null", "PYTHONDONTWRITEBYTECODE": "1"}
        if ca_file is not None:
            env["PIP_CERT"] = ca_file
        return env

    def build_env(self, plan: FetchPlan) -> tuple[tuple[str, str], ...]:
        """pip and uv both install only the fetched wheels (a recipe running
        ``python -m build`` itself still builds offline, in environments of its own)."""
        del plan
        return (("PIP_NO_INDEX", "1"), ("PIP_FIND_LINKS", WHEELS_DIR),
                ("UV_OFFLINE", "1"), ("UV_NO_INDEX", "1"), ("UV_FIND_LINKS", WHEELS_DIR),
                ("UV_PYTHON_DOWNLOADS", "never"))

    def verify(self, plan: FetchPlan, files: Sequence[ExtractedFile], staging: Path) -> Verified:
        """Every file is a wheel; with a lock, each is pinned and matches a pinned hash.
        The prepared environment comes along (it is those wheels, installed), and the
        frontend only as the exact bytes the plan handed in."""
        kept: list[ExtractedFile] = []
        pins: dict[str, str] = {}
        hashes: dict[str, str] = {}
        env_prefix, frontend = f"{_ENV}/", f"{_FRONTEND_DIR}/{_FRONTEND_NAME}"
        prepared: list[ExtractedFile] = []
        for member in files:
            if member.path == frontend:
                if (staging / member.path).read_bytes() != frontend_source():
                    raise EnvironmentFailure(f"the fetch returned a changed {frontend}",
                                             "this is a reprobuild bug or a tampered image")
                prepared.append(member)
                continue
            if member.path.startswith(env_prefix):
                prepared.append(member)
                continue
            if not member.path.startswith("wheels/"):
                continue
            filename = member.path.removeprefix("wheels/")
            parsed = pep.parse_wheel_name(filename)
            if "/" in filename or parsed is None:
                raise EnvironmentFailure(f"the fetch produced {member.path}, which is not a "
                                         "wheel", "only wheels are fetched; this is a "
                                         "reprobuild bug")
            name, version = parsed
            actual = f"sha256:{member.sha256}"
            if plan.hashed:
                pin = next((p for p in plan.pins if pep.normalise_name(p.name) == name
                            and pep.same_version(p.version, version)), None)
                if pin is None:
                    raise EnvironmentFailure(f"the fetch produced {filename}, which the lock "
                                             "does not pin", "this is a reprobuild bug")
                if not any(file_digest(staging / member.path, h.split(":", 1)[0]) == h
                           for h in pin.hashes):
                    raise DependencyIntegrityError(f"{pin.name}=={version}",
                                                   " or ".join(pin.hashes), actual,
                                                   source=plan.lock_name)
            pins[name] = version
            hashes[f"{name}=={version}"] = actual
            kept.append(member)
        if not kept:
            raise EnvironmentFailure("the fetch downloaded no wheels", "see the fetch log")
        if not any(m.path == frontend for m in prepared) or not any(
                m.path == f"{env_prefix}pyvenv.cfg" for m in prepared):
            raise EnvironmentFailure("the fetch made no prepared build environment",
                                     "see the fetch log; this is a reprobuild bug")
        scripts = frozenset(m.path for m in prepared if m.path.startswith(f"{env_prefix}bin/"))
        return Verified(files=(*kept, *prepared), pins=tuple(sorted(pins.items())),
                        executables=scripts,
                        hashes=tuple(sorted(hashes.items())))

    def diagnose(self, plan: FetchPlan, log: str) -> ReprobuildError | None:
        """pip's hash mismatch report, naming the package and both hashes."""
        m = _PIP_MISMATCH.search(log)
        if m is None:
            return None
        return DependencyIntegrityError(f"{m['pkg']}=={m['version']}",
                                        f"{m['algo']}:{m['expected']}",
                                        f"{m['algo']}:{m['actual']}", source=plan.lock_name)

    def failure_line(self, log: str) -> str | None:
        """The first line the tool marks as its error."""
        return next((line.strip() for line in log.splitlines()
                     if line.strip().startswith(("ERROR:",))), None)

    def failure_hint(self, log: str) -> str | None:
        """pip failing certificate checks: an intercepting proxy without ``--ca-cert``."""
        if any(marker in log for marker in _UNTRUSTED_CERTIFICATE):
            return UNTRUSTED_CA_HINT
        return None


@cache
def frontend_source() -> bytes:
    """The bytes of :mod:`.frontend` the fetch stages (read, never imported: it needs
    ``build``, which the toolchain image has and reprobuild does not)."""
    return (Path(__file__).parent / "frontend.py").read_bytes()


ECOSYSTEM = PythonBuild()

