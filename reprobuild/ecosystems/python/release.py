"""PyPI releases: naming them, listing their files, and reading how they were built.

A release is ``pypi:NAME==VERSION``. Its files and their sha256 come from PyPI's JSON API
(``/pypi/NAME/json``, its ``releases`` entry for the version: the per-version document is
not served by every mirror; ``REPROBUILD_PYPI_URL`` points elsewhere, e.g. a mirror or the
loopback index a test serves). What a release's artifacts say about how it was built
(NOTES.md §7, checked on real releases):

* a wheel's ``*.dist-info/WHEEL`` names the backend and its version
  (``Generator: hatchling 1.27.0``): the rebuild pins exactly that backend, since the
  newest one as of the commit date can differ from the one the release job had;
* member times: all equal to 1580601600 (2020-02-02) is hatchling's stamp when
  ``SOURCE_DATE_EPOCH`` is unset, so the rebuild leaves it unset; any other single time is
  the ``SOURCE_DATE_EPOCH`` the release was built with (an sdist's tar times are exact, a
  wheel's zip times have two-second steps); times that vary mean it was not set at all,
  which no rebuild can match for those members;
* the upload time: the other build requirements resolve as of then.

The Python and interpreter versions are not recorded in pure wheels; the report says so.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urljoin

from reprobuild.ecosystems.interface import (
    PublishedFile,
    ReleaseConditions,
    ReleaseRef,
    files_of,
    join,
)
from reprobuild.ecosystems.python import pep
from reprobuild.errors import InputError, RecipeError
from reprobuild.source import SourceTree

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = ["HATCHLING_DEFAULT_TIME", "PyPIReleases"]

HATCHLING_DEFAULT_TIME = 1580601600
"""2020-02-02T00:00:00Z: what hatchling stamps when SOURCE_DATE_EPOCH is unset."""
ZIP_EPOCH = 315532800
"""1980-01-01: the earliest time a zip stores (tools clamp to it)."""
_SPEC = re.compile(r"^pypi:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s=]+)$")
_GENERATOR = re.compile(r"^Generator:\s*(?P<name>[A-Za-z0-9_.-]+)\s*\(?(?P<version>\d[^)\s]*)\)?",
                        re.MULTILINE)
# The backend package behind each WHEEL Generator name.
_GENERATOR_PACKAGE = {"hatchling": "hatchling", "poetry-core": "poetry-core",
                      "poetry": "poetry-core", "flit": "flit-core", "flit_core": "flit-core",
                      "setuptools": "setuptools", "bdist_wheel": "wheel",
                      "pdm-backend": "pdm-backend", "pdm": "pdm-backend",
                      "maturin": "maturin", "scikit-build-core": "scikit-build-core",
                      "uv": "uv-build", "uv_build": "uv-build"}


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class PyPIReleases:
    """Releases on PyPI (or the index ``REPROBUILD_PYPI_URL`` names)."""

    registry = "pypi"
    spec_form = "pypi:NAME==VERSION"

    @staticmethod
    def index() -> str:
        """The JSON API's base URL."""
        return os.environ.get("REPROBUILD_PYPI_URL", "https://pypi.org").rstrip("/")

    def parse(self, spec: str) -> ReleaseRef | None:
        """``pypi:NAME==VERSION``."""
        if not spec.startswith("pypi:"):
            return None
        m = _SPEC.fullmatch(spec.strip())
        if m is None:
            raise InputError(f"{spec!r} is not a PyPI release", "write pypi:NAME==VERSION")
        return ReleaseRef("pypi", pep.normalise_name(m["name"]), m["version"], spec.strip())

    def of_project(self, tree: SourceTree) -> ReleaseRef | None:
        """``[project] name`` and a static ``version`` from pyproject.toml."""
        data = files_of(tree).get(join(tree.subdir, "pyproject.toml"))
        if data is None:
            return None
        try:
            project = tomllib.loads(data.decode("utf-8-sig")).get("project", {})
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise RecipeError(f"pyproject.toml is not valid TOML: {exc}",
                              "fix it, or name the release with --against") from exc
        name, version = project.get("name"), project.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            raise InputError(
                "pyproject.toml does not say the release's name and version statically "
                f"(name {name!r}, version {version!r}; a dynamic version is computed by the "
                "build)", "name the release: --against pypi:NAME==VERSION")
        spec = f"pypi:{name}=={version}"
        return ReleaseRef("pypi", pep.normalise_name(name), version, spec)

    def metadata_url(self, ref: ReleaseRef) -> str:
        """PyPI's JSON for the project (every release's files)."""
        return f"{self.index()}/pypi/{quote(ref.name)}/json"

    def files(self, ref: ReleaseRef, metadata: bytes) -> tuple[PublishedFile, ...]:
        """Every file of the release with its sha256 and upload time."""
        try:
            data = json.loads(metadata)
            releases = data["releases"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{ref.spec}: the index's answer is not a project description",
                             "is the name right?") from exc
        urls = releases.get(ref.version) if isinstance(releases, dict) else None
        if urls is None:
            known = sorted(releases) if isinstance(releases, dict) else []
            raise InputError(f"{ref.spec}: the index has no release {ref.version}",
                             "known versions: " + ", ".join(known[-8:]) if known
                             else "check the name")
        found = []
        for item in urls if isinstance(urls, list) else []:
            try:
                # Mirrors may answer with URLs relative to the document.
                name, url = str(item["filename"]), urljoin(self.metadata_url(ref),
                                                           str(item["url"]))
                digest = str(item["digests"]["sha256"]).lower()
            except (KeyError, TypeError):
                continue
            if not re.fullmatch(r"[0-9a-f]{64}", digest) or "/" in name:
                continue
            uploaded = None
            stamp = item.get("upload_time_iso_8601") or item.get("upload_time")
            if isinstance(stamp, str):
                try:
                    uploaded = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
                except ValueError:
                    uploaded = None
            found.append(PublishedFile(name=name, url=url, digest=f"sha256:{digest}",
                                       uploaded=uploaded,
                                       source=item.get("packagetype") == "sdist"))
        if not found:
            raise InputError(f"{ref.spec} has no files on the index",
                             "check the name and version (yanked releases still list files)")
        return tuple(found)

    def conditions(self, files: Mapping[str, Path], tree: SourceTree) -> ReleaseConditions:
        """Backend version, SOURCE_DATE_EPOCH and upload time, from the wheel and sdist."""
        facts: list[str] = []
        details: dict[str, str] = {}
        pins: list[str] = []
        env: list[tuple[str, str | None]] = []
        wheels = sorted(n for n in files if n.endswith(".whl"))
        sdists = sorted(n for n in files if n.endswith((".tar.gz", ".zip"))
                        and not n.endswith(".whl"))
        requires = _build_requirement_keys(tree)
        for name in wheels:
            generator = _wheel_generator(files[name])
            if generator is None:
                facts.append(f"{name}: WHEEL names no generator")
                continue
            tool, version = generator
            details["backend"], details["backend_version"] = tool, version
            package = _GENERATOR_PACKAGE.get(tool.lower(), tool.lower())
            facts.append(f"{name}: WHEEL Generator {tool} {version}")
            if requires is not None and package not in requires:
                facts.append(f"{package} is not among the project's build requirements; "
                             "not pinned")
            elif f"{package}=={version}" not in pins:
                pins.append(f"{package}=={version}")
            break
        stamp = None
        for name in sdists + wheels:
            stamp = _single_time(files[name])
            if stamp is None:
                facts.append(f"{name}: member times vary (built without SOURCE_DATE_EPOCH; "
                             "those times cannot be reproduced)")
                continue
            where = f"{name}: every member stamped {_iso(stamp)}"
            if stamp == HATCHLING_DEFAULT_TIME:
                facts.append(f"{where}, hatchling's stamp when SOURCE_DATE_EPOCH is unset")
                env.append(("SOURCE_DATE_EPOCH", None))
                details["source_date_epoch"] = "unset"
            else:
                facts.append(f"{where}: built with SOURCE_DATE_EPOCH={stamp}")
                env.append(("SOURCE_DATE_EPOCH", str(stamp)))
                details["source_date_epoch"] = str(stamp)
            break
        facts.append("Python version: not recorded in the artifacts; the toolchain image's")
        return ReleaseConditions(facts=tuple(facts), pins=tuple(pins), env=tuple(env),
                                 details=tuple(sorted(details.items())))


def _build_requirement_keys(tree: SourceTree) -> set[str] | None:
    """Normalised names of ``[build-system] requires``, None when it cannot be read."""
    data = files_of(tree).get(join(tree.subdir, "pyproject.toml"))
    if data is None:
        return {"setuptools", "wheel"}
    try:
        requires = tomllib.loads(data.decode("utf-8-sig")).get("build-system", {}).get(
            "requires", ["setuptools", "wheel"])
        return {pep.parse_requirement(r).key for r in requires}
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, pep.Unsupported, AttributeError,
            TypeError):
        return None


def _wheel_generator(path: Path) -> tuple[str, str] | None:
    """(tool, version) from a wheel's ``*.dist-info/WHEEL``."""
    from reprobuild.forensics import read_manifest, read_member  # noqa: PLC0415 - verify only

    manifest = read_manifest(path)
    names = [m.name for m in manifest.members
             if re.fullmatch(r"[^/]+\.dist-info/WHEEL", m.name)]
    if len(names) != 1:
        return None
    text = read_member(path, names[0]).decode("utf-8", "replace")
    m = _GENERATOR.search(text)
    return (m["name"], m["version"]) if m else None


def _single_time(path: Path) -> int | None:
    """The one time every file member carries, if they all carry the same one."""
    from reprobuild.forensics import (  # noqa: PLC0415 - verify only, see _wheel_generator
        ArchiveKind,
        detect_kind,
        read_manifest,
    )

    if detect_kind(path) is ArchiveKind.FILE:
        return None
    times = Counter(int(m.mtime) for m in read_manifest(path).members
                    if m.kind == "file" and m.mtime is not None)
    if len(times) != 1:
        return None
    (stamp, _), = times.items()
    return stamp
