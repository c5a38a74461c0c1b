"""The Go ecosystem without Docker: go.mod and go.sum planning, Go's h1 hashes, the image."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import pytest

from reprobuild import ecosystems, images
from reprobuild.ecosystems.golang.goreleaser import read_goreleaser, render
from reprobuild.ecosystems.golang.plan import (
    go_mod_hash,
    module_hash,
    parse_go_mod,
    parse_go_sum,
    plan_go,
    unescape_path,
)
from reprobuild.ecosystems.interface import FetchPlan, FetchSettings
from reprobuild.errors import RecipeError
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256

GO_MOD = b"""module example.com/demo

go 1.24.0

toolchain go1.24.4

require github.com/google/uuid v1.6.0

replace example.com/local => ./third_party/local
"""
GO_SUM = b"""github.com/google/uuid v1.6.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=
github.com/google/uuid v1.6.0/go.mod h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=
"""


def tree(files: dict[str, bytes], subdir: str = "") -> SourceTree:
    entries = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644, data=d)
                    for p, d in sorted(files.items()))
    return SourceTree(location="/r", kind=SourceKind.GIT_LOCAL, ref=None, commit="c" * 40,
                      commit_time=1, subdir=subdir, entries=entries,
                      tree_sha256=compute_tree_sha256(entries))


def test_go_sum_hashes_are_go_s_own() -> None:
    # The real go.mod of github.com/google/uuid v1.6.0 hashes to what every go.sum records.
    assert go_mod_hash(b"module github.com/google/uuid\n") == \
        "h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo="
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("m@v1.0.0/a.go", "package a\n")
        archive.writestr("m@v1.0.0/go.mod", "module m\n")
    assert module_hash(buffer.getvalue()).startswith("h1:")
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("m@v1.0.0/../../x", "x")
    with pytest.raises(ValueError, match="unsafe name"):
        module_hash(evil.getvalue())
    assert unescape_path("github.com/!azure/azure-sdk") == "github.com/Azure/azure-sdk"


def test_the_plan_takes_go_mod_go_sum_and_local_replacements() -> None:
    plan = plan_go(tree({"svc/go.mod": GO_MOD, "svc/go.sum": GO_SUM, "svc/main.go": b"x",
                         "svc/third_party/local/go.mod": b"module example.com/local\n"},
                        subdir="svc"))
    assert [p for p, _ in plan.files] == ["go.mod", "go.sum", "third_party/local/go.mod"]
    assert [(p.name, p.version, p.hashes) for p in plan.pins] == [(
        "github.com/google/uuid", "v1.6.0",
        ("go.mod h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=",
         "h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0="))]
    assert plan.notes[0] == "module example.com/demo, go 1.24.0, toolchain go1.24.4"
    assert parse_go_mod(GO_MOD.decode(), "go.mod").local_replacements == ("./third_party/local",)


def test_vendored_modules_need_no_fetch_and_a_missing_go_sum_is_an_error() -> None:
    vendored = plan_go(tree({"go.mod": GO_MOD, "vendor/modules.txt": b"# x\n"}))
    assert vendored.files == () and vendored.pin_source == "vendor:vendor/modules.txt"
    with pytest.raises(RecipeError, match=r"no go\.sum beside it"):
        plan_go(tree({"go.mod": GO_MOD}))
    with pytest.raises(RecipeError, match=r"not a go\.sum line"):
        parse_go_sum("github.com/x v1 h1:short\n", "go.sum")
    assert "go mod download" in ecosystems.get("go-mod").fetch_command(
        plan_go(tree({"go.mod": GO_MOD, "go.sum": GO_SUM})))


def test_the_go_image_must_be_new_enough_for_the_go_directive() -> None:
    go = ecosystems.get("go-mod")
    definitions = images.load_definitions()
    source = tree({"go.mod": GO_MOD, "go.sum": GO_SUM})
    assert go.choose_image(source, "go", definitions) == "go"
    future = tree({"go.mod": GO_MOD.replace(b"go 1.24.0", b"go 1.99.1"), "go.sum": GO_SUM})
    with pytest.raises(RecipeError, match=r"go\.mod asks for go 1\.99\.1"):
        go.choose_image(future, "go", definitions)
    env = dict(go.build_env(FetchPlan(strategy="go-mod", project_dir="")))
    assert env["GOPROXY"] == "file:///deps/gomod/cache/download" and env["GOSUMDB"] == "off"
    assert "-trimpath" in env["GOFLAGS"]


GORELEASER = (b"""version: 2
project_name: github-mcp-server
before:
  hooks:
    - go mod tidy
    - go generate ./...
builds:
  - env:
      - CGO_ENABLED=0
    ldflags:
      - -s -w -X main.version={{.Version}} -X main.commit={{.Commit}} -X main.date={{.Date}}"""
              b""" -X example.com/demo/internal/buildinfo.OAuthClientID={{ .Env.OAUTH_CLIENT_ID }}
    goos: [linux, windows, darwin]
    main: ./cmd/demo
  - id: windows-only
    goos: [windows]
    main: ./cmd/other
""")


def _released(config: bytes, ref: str | None) -> SourceTree:
    source = tree({"go.mod": GO_MOD, "go.sum": GO_SUM, ".goreleaser.yaml": config,
                   "cmd/demo/main.go": b"package main\n"})
    return dataclasses.replace(source, ref=ref, commit="0123456789" * 4,
                               commit_time=1767323045)


def test_a_goreleaser_release_is_rebuilt_with_its_ldflags_stamps() -> None:
    go = ecosystems.get("go-mod")
    fetch_plan = go.plan_fetch(_released(GORELEASER, "v1.10.1"), FetchSettings(origin="r"),
                               None)
    env = dict(go.build_env(fetch_plan))
    assert env["REPROBUILD_GO_MAINS"] == "./cmd/demo"  # the windows-only build is not ours
    assert env["REPROBUILD_GO_LDFLAGS"] == (
        "-s -w -X main.version=1.10.1 -X main.commit=" + "0123456789" * 4
        + " -X main.date=2026-01-02T03:04:05Z -X "
        "example.com/demo/internal/buildinfo.OAuthClientID=")
    notes = "\n".join(fetch_plan.notes)
    assert ".goreleaser.yaml applied: main ./cmd/demo; -ldflags" in notes
    assert "{{ .Env.OAUTH_CLIENT_ID }} comes from the release job's environment" in notes
    assert "before hooks not run (go mod tidy; go generate ./...)" in notes
    # Not a release tag: a snapshot version, said so.
    snapshot = go.plan_fetch(_released(GORELEASER, "main"), FetchSettings(origin="r"), None)
    assert "main.version=0.0.0-SNAPSHOT-0123456 " in dict(go.build_env(snapshot))[
        "REPROBUILD_GO_LDFLAGS"]
    assert any("is not a release tag" in n for n in snapshot.notes)
    # No goreleaser file: every main package, nothing stamped.
    plain = go.plan_fetch(tree({"go.mod": GO_MOD, "go.sum": GO_SUM}), FetchSettings(origin="r"),
                          None)
    assert dict(go.build_env(plain))["REPROBUILD_GO_MAINS"] == ""
    assert dict(go.build_env(plain))["REPROBUILD_GO_LDFLAGS"] == ""


def test_goreleaser_templates_and_bad_files() -> None:
    notes: list[str] = []
    assert render("{{ .Version }}-{{.ShortCommit}}-{{ title .Os }}", {".Version": "1",
                  ".ShortCommit": "abc"}, notes) == "1-abc-"
    assert notes == ["goreleaser: template {{ title .Os }} is not understood: stamped empty"]
    with pytest.raises(RecipeError, match=r"\.goreleaser\.yaml is not valid YAML"):
        read_goreleaser(_released(b"builds: [\n", "v1.0.0"))
