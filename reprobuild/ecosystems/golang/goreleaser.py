"""What a goreleaser release build does to a Go binary, so a rebuild can do the same.

Go servers released with goreleaser (github/github-mcp-server, grafana/mcp-grafana) stamp
their version, commit and date into the binary with ``-ldflags -X``; a plain ``go build``
of the same tree gives another binary. :func:`read_goreleaser` reads the project's
``.goreleaser.yml``/``.yaml`` (PyYAML's safe loader) and returns the linux builds' main
packages, ldflags, tags and flags with goreleaser's template fields filled in from the
source: ``{{.Version}}`` from the release tag, ``{{.Commit}}`` from the commit and
``{{.Date}}`` from the commit time (goreleaser's is the wall clock, which no rebuild can
match; its own docs advise ``{{.CommitDate}}`` for reproducible builds). Every field it
fills, and everything it cannot do (hooks, secrets from ``{{.Env}}``, other template
functions), becomes a note in the report. Pure: no Docker, no network.

Main packages and tags reach ``go build``'s command line as words
(``$REPROBUILD_GO_MAINS`` is split into packages), so each must be one package path or one
build tag; the ldflags are one argument but must be one line. Anything else is refused
naming the value (a repository's file must not add arguments to a command).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from reprobuild.ecosystems.interface import files_of, join, load_yaml
from reprobuild.errors import RecipeError
from reprobuild.source import SourceTree

__all__ = ["CONFIG_FILES", "GoRelease", "read_goreleaser", "render"]

CONFIG_FILES = (".goreleaser.yaml", ".goreleaser.yml")
_FIELD = re.compile(r"\{\{-?\s*(?P<expr>[^{}]*?)\s*-?\}\}")
_TAG_VERSION = re.compile(r"v?(?P<version>\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?)")
_BUILD_FLAGS_KEPT = {"-trimpath"}  # already set by the go recipe's GOFLAGS
_PACKAGE = re.compile(r"\.\.?(?:/[A-Za-z0-9._~+@-]+)*/?")
"""A relative package path (``./cmd/x``, ``./...``): one word, no glob, no option."""
_TAG = re.compile(r"[A-Za-z0-9_.]+")
"""A Go build tag (a build constraint identifier)."""


def _checked(value: str, pattern: re.Pattern[str] | None, what: str, path: str) -> str:
    """``value`` when it is one ``pattern`` word (one printable line without a pattern)."""
    if (pattern.fullmatch(value) if pattern is not None else value.isprintable()):
        return value
    raise RecipeError(f"{path}: {what} {value!r} is not one {what}",
                      "goreleaser values reach go build's command line: fix the value, or "
                      "remove the file to build as plain `go build` does")


@dataclass(frozen=True)
class GoRelease:
    """The goreleaser builds as the go recipe applies them (``options``) and what it said."""

    mains: tuple[str, ...]
    ldflags: str
    tags: str
    notes: tuple[str, ...]

    @property
    def options(self) -> tuple[tuple[str, str], ...]:
        """The plan options the go ecosystem's build environment turns into variables."""
        return (("mains", " ".join(self.mains)), ("ldflags", self.ldflags), ("tags", self.tags))


def _fields(tree: SourceTree) -> tuple[dict[str, str], list[str]]:
    """goreleaser's template fields for this source, and how each was chosen."""
    notes: list[str] = []
    commit = tree.commit or ""
    tag = tree.ref or ""
    m = _TAG_VERSION.fullmatch(tag)
    if m is not None:
        version = m["version"]
    else:
        version = f"0.0.0-SNAPSHOT-{commit[:7] or 'none'}"
        notes.append(f"goreleaser: {tag or 'the source'} is not a release tag: "
                     f"{{{{.Version}}}} stamped as {version} (pass --ref vX.Y.Z)")
    when = tree.commit_time
    stamp = (datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
             if when is not None else "")
    fields = {".Version": version, ".RawVersion": version, ".Tag": tag or version,
              ".Commit": commit, ".FullCommit": commit, ".ShortCommit": commit[:7],
              ".Date": stamp, ".CommitDate": stamp,
              ".Timestamp": str(when or ""), ".CommitTimestamp": str(when or ""),
              ".Os": "linux", ".Major": version.split(".")[0],
              ".Minor": version.split(".")[1] if version.count(".") >= 1 else "",
              ".Patch": re.split(r"[-+]", version.split(".")[2])[0]
              if version.count(".") >= 2 else ""}
    return fields, notes


def render(template: str, fields: dict[str, str], notes: list[str], *,
           project: str = "") -> str:
    """Fill goreleaser's ``{{ .Field }}`` templates; unknown ones become empty, noted."""
    def one(m: re.Match[str]) -> str:
        expr = m["expr"].strip()
        if expr in fields:
            return fields[expr]
        if expr == ".ProjectName":
            return project
        if expr.startswith(".Env."):
            notes.append(f"goreleaser: {{{{ {expr} }}}} comes from the release job's "
                         "environment (a secret?): stamped empty, so a published binary "
                         "built with it differs")
            return ""
        notes.append(f"goreleaser: template {{{{ {expr} }}}} is not understood: stamped empty")
        return ""
    return _FIELD.sub(one, template)


def _words(value: object) -> list[str]:
    """A goreleaser string-or-list field as a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int, float))]
    return []


def read_goreleaser(tree: SourceTree) -> GoRelease | None:
    """The project's goreleaser linux builds, applied as the release applies them."""
    files = files_of(tree)
    path = next((join(tree.subdir, n) for n in CONFIG_FILES if join(tree.subdir, n) in files),
                None)
    if path is None:
        return None
    loaded = load_yaml(files[path], path,
                       "fix it, or remove it to build as plain `go build` does")
    config: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    fields, notes = _fields(tree)
    project = str(config.get("project_name") or (tree.subdir or tree.location).rsplit("/", 1)[-1])
    builds = [b for b in config.get("builds") or [{}] if isinstance(b, dict)]
    linux = [b for b in builds if b.get("skip") is not True
             and "linux" in (_words(b.get("goos")) or ["linux"])]
    if not linux:
        notes.append(f"{path}: no build for linux: built as plain `go build` does")
        return GoRelease((), "", "", tuple(notes))
    hooks = _words((config.get("before") or {}).get("hooks")
                   if isinstance(config.get("before"), dict) else None)
    if hooks:
        notes.append(f"goreleaser: before hooks not run ({'; '.join(hooks)[:200]}): the "
                     "committed tree is built as it is")
    mains: list[str] = []
    ldflags: list[str] = []
    tags: list[str] = []
    for build in linux:
        main = str(build.get("main") or ".")
        if main.endswith(".go"):
            main = main.rsplit("/", 1)[0] or "."
        main = main if main.startswith(("./", "../")) or main == "." else f"./{main}"
        main = _checked(main, _PACKAGE, "main package", path)
        if main not in mains:
            mains.append(main)
        rendered = " ".join(render(x, fields, notes, project=project)
                            for x in _words(build.get("ldflags"))).strip()
        rendered = _checked(rendered, None, "ldflags", path)
        if rendered not in ldflags:
            ldflags.append(rendered)
        for tag in _words(build.get("tags")):
            if tag not in tags:
                tags.append(_checked(render(tag, fields, notes, project=project), _TAG,
                                     "build tag", path))
        for flag in _words(build.get("flags")):
            if flag not in _BUILD_FLAGS_KEPT:
                notes.append(f"goreleaser: build flag {flag} not applied")
        for env in _words(build.get("env")):
            if env.replace(" ", "") == "CGO_ENABLED=1":
                notes.append("goreleaser builds with cgo; the go recipe builds without it")
        binary = build.get("binary")
        if isinstance(binary, str) and binary not in (main.rstrip("/").rsplit("/", 1)[-1],
                                                      "{{ .ProjectName }}", project):
            notes.append(f"goreleaser names the binary {binary}; go build names it after "
                         f"{main}")
    if len(ldflags) > 1:
        notes.append(f"goreleaser builds differ in ldflags; the first is applied: {ldflags[0]}")
    notes.insert(0, f"goreleaser: {path} applied: main {', '.join(mains)}"
                    + (f"; -ldflags {shlex.quote(ldflags[0])}" if ldflags[0] else ""))
    return GoRelease(tuple(mains), ldflags[0], ",".join(tags), tuple(dict.fromkeys(notes)))
