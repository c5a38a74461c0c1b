"""What each ecosystem says a project in a subdirectory reads from above it (what the
builds get besides the project: see ``plan.acquire_source``)."""

from __future__ import annotations

from reprobuild.ecosystems import golang, node, python, rust
from reprobuild.ecosystems.interface import levels_above, outside
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree


def tree(subdir: str, files: dict[str, str]) -> SourceTree:
    entries = tuple(SourceEntry(path, EntryKind.FILE, 0o644, text.encode())
                    for path, text in sorted(files.items()))
    return SourceTree(location="t", kind=SourceKind.DIRECTORY, ref=None, commit=None,
                      commit_time=None, subdir=subdir, entries=entries, tree_sha256="")


def paths(found: tuple[tuple[str, str], ...]) -> list[str]:
    return [path for path, _ in found]


def test_levels_and_outside() -> None:
    assert levels_above("a/b/c") == ["a/b", "a", ""]
    assert levels_above("") == []
    assert outside("a/b", "../c") == "a/c"
    assert outside("a/b", "../../README.md") == "README.md"
    assert outside("a/b", "./src") is None  # inside the project
    assert outside("a/b", "../../../x") is None  # above the repository: not in the tree
    assert outside("a/b", "/etc/passwd") is None


def test_go_workspace_and_local_replace() -> None:
    files = {"svc/api/go.mod": "module x\n\nreplace example.com/shared => ../shared\n"
                               "replace example.com/up => ../../tools/up\n"
                               "replace example.com/in => ./internal/in\n",
             "svc/shared/go.mod": "module shared\n"}
    assert paths(golang.ECOSYSTEM.reads_above(tree("svc/api", files))) == ["svc/shared",
                                                                            "tools/up"]
    files["go.work"] = "go 1.22\nuse ./svc/api\n"
    assert paths(golang.ECOSYSTEM.reads_above(tree("svc/api", files)))[0] == ""
    assert golang.ECOSYSTEM.reads_above(tree("svc", files)) == ()  # not a Go project


def test_cargo_workspace_root_and_path_dependencies() -> None:
    member = {"crates/srv/Cargo.toml": '[package]\nname = "srv"\n[dependencies]\n'
                                       'util = { path = "../../libs/util" }\n'}
    assert paths(rust.ECOSYSTEM.reads_above(tree("crates/srv", member))) == ["libs/util"]
    workspace = {**member, "Cargo.toml": '[workspace]\nmembers = ["crates/*"]\n'}
    assert paths(rust.ECOSYSTEM.reads_above(tree("crates/srv", workspace))) == ["",
                                                                                 "libs/util"]


def test_python_reads_the_quoted_paths_above_or_everything() -> None:
    quoted = {"servers/a/pyproject.toml": '[project]\nname = "a"\nreadme = "../../README.md"\n'}
    assert paths(python.ECOSYSTEM.reads_above(tree("servers/a", quoted))) == ["README.md"]
    unquoted = {"servers/a/setup.py": "# copied from ../b\nsetup()\n"}
    assert paths(python.ECOSYSTEM.reads_above(tree("servers/a", unquoted))) == [""]
    plain = {"servers/a/pyproject.toml": '[project]\nname = "a"\n'}
    assert python.ECOSYSTEM.reads_above(tree("servers/a", plain)) == ()


def test_npm_member_with_its_own_lockfile_reads_the_nvmrc_and_root_manifest() -> None:
    files = {".nvmrc": "22\n",
             "package.json": '{"private": true, "workspaces": ["src/*"]}',
             "src/a/package.json": '{"name": "a", "version": "1.0.0"}',
             "src/a/package-lock.json": '{"lockfileVersion": 3, "packages": {"": {}}}'}
    assert set(paths(node.ECOSYSTEM.reads_above(tree("src/a", files)))) == {".nvmrc",
                                                                           "package.json"}
    alone = {k: v for k, v in files.items() if k.startswith("src/")}
    assert node.ECOSYSTEM.reads_above(tree("src/a", alone)) == ()


def test_npm_member_reads_the_tsconfig_chain_it_extends() -> None:
    """modelcontextprotocol/servers' members extend ``../../tsconfig.json``: without it
    tsc fails (TS1259, esModuleInterop) when only the member is sent."""
    files = {"tsconfig.json": '{\n  // shared\n  "extends": ["./tsconfig.base", '
                              '"@tsconfig/node20"],\n}',
             "tsconfig.base.json": '{"compilerOptions": {"strict": true}}',
             "tsconfig.unused.json": "{}",
             "src/a/package.json": '{"name": "a", "version": "1.0.0"}',
             "src/a/package-lock.json": '{"lockfileVersion": 3, "packages": {"": {}}}',
             "src/a/tsconfig.json": '{"extends": "../../tsconfig.json", "include": ["*.ts"]}',
             "src/a/tsconfig.build.json": '{"extends": "./tsconfig.json"}',
             "src/b/tsconfig.json": '{"extends": "../../tsconfig.unused.json"}'}
    assert paths(node.ECOSYSTEM.reads_above(tree("src/a", files))) == [
        "tsconfig.json", "tsconfig.base.json"]
    escaping = {"src/a/package.json": files["src/a/package.json"],
                "src/a/tsconfig.json": '{"extends": "../../../../etc/tsconfig.json"}'}
    assert node.ECOSYSTEM.reads_above(tree("src/a", escaping)) == ()


def test_pnpm_names_only_the_projects_of_its_lockfile() -> None:
    files = {"package.json": "{}", "pnpm-workspace.yaml": "packages: ['p/*']\n",
             "pnpm-lock.yaml": "lockfileVersion: '9.0'\nimporters:\n  .: {}\n  p/a: {}\n"
                               "  p/b: {}\n  ../escape: {}\n",
             "p/a/package.json": '{"name": "a"}'}
    assert paths(node.PNPM.reads_above(tree("p/a", files))) == [
        "package.json", "pnpm-lock.yaml", "pnpm-workspace.yaml", "p/b"]
    assert node.PNPM.reads_above(tree("", files)) == ()  # the root itself
