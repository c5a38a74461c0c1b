"""npm releases: naming them, listing their tarball, and reading how it was packed.

A release is ``npm:NAME@VERSION`` (``npm:@scope/name@1.2.3``). Its tarball and integrity
come from the registry's version document (``/NAME/VERSION``; ``REPROBUILD_NPM_REGISTRY``
points elsewhere, e.g. a mirror or the loopback registry a test serves). ``npm pack`` of
the same files gives the registry tarball byte for byte: it stamps every entry
1985-10-26T08:15:00Z, owner 0:0. A tarball with other times or a different gzip header
was packed by another tool (pnpm, yarn), which the report says; nothing needs pinning.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from reprobuild.ecosystems.interface import (
    PublishedFile,
    ReleaseConditions,
    ReleaseRef,
    files_of,
    join,
)
from reprobuild.errors import InputError, RecipeError
from reprobuild.source import SourceTree

__all__ = ["NPM_PACK_TIME", "NpmReleases"]

NPM_PACK_TIME = 499162500
"""1985-10-26T08:15:00Z: the time ``npm pack`` gives every entry."""
_SPEC = re.compile(r"^npm:(?P<name>(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*)"
                   r"@(?P<version>[0-9A-Za-z.+-]+)$")


class NpmReleases:
    """Releases on the npm registry (or the one ``REPROBUILD_NPM_REGISTRY`` names)."""

    registry = "npm"
    spec_form = "npm:NAME@VERSION"

    @staticmethod
    def base() -> str:
        """The registry's base URL."""
        return os.environ.get("REPROBUILD_NPM_REGISTRY",
                              "https://registry.npmjs.org").rstrip("/")

    def parse(self, spec: str) -> ReleaseRef | None:
        """``npm:NAME@VERSION``."""
        if not spec.startswith("npm:"):
            return None
        m = _SPEC.fullmatch(spec.strip())
        if m is None:
            raise InputError(f"{spec!r} is not an npm release", "write npm:NAME@VERSION")
        return ReleaseRef("npm", m["name"], m["version"], spec.strip())

    def of_project(self, tree: SourceTree) -> ReleaseRef | None:
        """``name`` and ``version`` from package.json."""
        data = files_of(tree).get(join(tree.subdir, "package.json"))
        if data is None:
            return None
        try:
            manifest = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RecipeError(f"package.json is not valid JSON: {exc}", "fix it") from exc
        name = manifest.get("name") if isinstance(manifest, dict) else None
        version = manifest.get("version") if isinstance(manifest, dict) else None
        if not isinstance(name, str) or not isinstance(version, str):
            raise InputError("package.json has no name and version",
                             "name the release: --against npm:NAME@VERSION")
        return self.parse(f"npm:{name}@{version}")

    def metadata_url(self, ref: ReleaseRef) -> str:
        """The registry's document of one version."""
        return f"{self.base()}/{quote(ref.name, safe='@')}/{quote(ref.version)}"

    def files(self, ref: ReleaseRef, metadata: bytes) -> tuple[PublishedFile, ...]:
        """The version's tarball, checked against ``dist.integrity`` (sha512)."""
        try:
            dist = json.loads(metadata)["dist"]
            url, integrity = str(dist["tarball"]), str(dist["integrity"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{ref.spec}: the registry's answer is not a version document",
                             "is the name and version right?") from exc
        algo, _, b64 = integrity.partition("-")
        try:
            hexdigest = base64.b64decode(b64, validate=True).hex()
        except (ValueError, binascii.Error) as exc:
            raise InputError(f"{ref.spec}: unreadable integrity {integrity[:60]}",
                             "the registry's document is malformed") from exc
        if algo not in ("sha512", "sha384", "sha256"):
            raise InputError(f"{ref.spec}: integrity uses {algo}", "only sha2 digests count")
        if not url.rsplit("/", 1)[-1].endswith(".tgz"):
            raise InputError(f"{ref.spec}: tarball URL {url[:200]} is not a .tgz",
                             "the registry's document is malformed")
        # Named as `npm pack` names it (the registry drops the scope: server-x-1.0.tgz),
        # so the rebuilt tarball matches by name.
        name = ref.name.removeprefix("@").replace("/", "-") + f"-{ref.version}.tgz"
        return (PublishedFile(name=name, url=url, digest=f"{algo}:{hexdigest}", source=True),)

    def conditions(self, files: Mapping[str, Path], tree: SourceTree) -> ReleaseConditions:
        """Which tool packed the tarball (npm pack or another), from entry times and gzip."""
        from reprobuild.forensics import read_manifest  # noqa: PLC0415 - verify only

        del tree
        facts: list[str] = []
        details: dict[str, str] = {}
        for name, path in sorted(files.items()):
            if not name.endswith(".tgz"):
                continue
            manifest = read_manifest(path)
            times = Counter(int(m.mtime) for m in manifest.members
                            if m.kind == "file" and m.mtime is not None)
            gzip = ", ".join(f"{k.removeprefix('gzip_')} {v}"
                             for k, v in sorted(manifest.container.items())
                             if k.startswith("gzip_"))
            if set(times) == {NPM_PACK_TIME}:
                facts.append(f"{name}: every entry stamped 1985-10-26T08:15:00Z: packed by "
                             "npm pack or pnpm pack (they stamp the same; gzip header: "
                             f"{gzip or 'unknown'})")
                details["packer"] = "npm"
            else:
                facts.append(f"{name}: entry times are not npm pack's: packed by another "
                             f"tool (yarn, an older pnpm?); gzip header: {gzip or 'unknown'}")
                details["packer"] = "other"
        facts.append("Node.js version: not recorded in the tarball; the toolchain image's")
        return ReleaseConditions(facts=tuple(facts), details=tuple(sorted(details.items())))
