"""pnpm without Docker: the plan from pnpm-lock.yaml, packageManager, recipe choice, the
fetch script, the check of what the fetch left, and pnpm's error messages."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from reprobuild import ecosystems
from reprobuild.archive import ExtractedFile
from reprobuild.ecosystems.interface import DEPS_BIN, FetchSettings
from reprobuild.ecosystems.node.pnpm import DEFAULT_PNPM, package_manager, plan_pnpm
from reprobuild.errors import DependencyIntegrityError, EnvironmentFailure, RecipeError
from reprobuild.images import ToolchainImage
from reprobuild.pipeline.plan import build_spec, select_with_reason
from reprobuild.sandbox.spec import SandboxLimits
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256
from reprobuild.variations import plan_pair

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pnpm-server"
PNPM = ecosystems.get("pnpm")
MS = ("sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/"
      "tXtF3WRTlA==")


def _tree(files: Mapping[str, bytes], subdir: str = "") -> SourceTree:
    entries = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644, data=d)
                    for p, d in sorted(files.items()))
    return SourceTree(location="/m", kind=SourceKind.GIT_LOCAL, ref=None, commit="c" * 40,
                      commit_time=0, subdir=subdir, entries=entries,
                      tree_sha256=compute_tree_sha256(entries))


def fixture(subdir: str = "packages/notes-mcp",
            changes: Mapping[str, bytes] | None = None) -> SourceTree:
    """The pnpm fixture's files, with ``changes`` (path: content) applied."""
    files = {p.relative_to(FIXTURE).as_posix(): p.read_bytes()
             for p in FIXTURE.rglob("*") if p.is_file()}
    files.update(changes or {})
    return _tree(files, subdir)


def test_a_workspace_member_is_planned_from_the_root_lockfile() -> None:
    plan = plan_pnpm(fixture())
    assert plan.strategy == "pnpm" and plan.lock_root == ""
    assert [path for path, _ in plan.files] == ["package.json", "pnpm-lock.yaml",
                                                "pnpm-workspace.yaml"]
    assert [(p.name, p.version, p.hashes) for p in plan.pins] == [("ms", "2.1.3", (MS,))]
    assert plan.requirements == ("pnpm@11.8.0",)
    assert plan.pin_source == "pnpm-lock:pnpm-lock.yaml"
    assert any("without a hash" in note for note in plan.notes)
    # The source never goes to the fetch: only manifests and the lockfile.
    assert not any(path.endswith(".js") for path, _ in plan.files)


def test_a_member_outside_the_lockfile_is_refused_naming_the_workspace() -> None:
    with pytest.raises(RecipeError, match="packages/stray is not a project of the pnpm "
                                          "workspace at the repository root"):
        plan_pnpm(fixture("packages/stray", {"packages/stray/package.json": b'{"name": "s"}'}))


def test_lockfiles_older_than_pnpm_9_are_refused() -> None:
    with pytest.raises(RecipeError, match=r"lockfileVersion 6\.0; the fetch reads lockfile 9\.x"):
        plan_pnpm(fixture(changes={"pnpm-lock.yaml": b"lockfileVersion: '6.0'\n"}))
    with pytest.raises(RecipeError, match="not valid YAML"):
        plan_pnpm(fixture(changes={"pnpm-lock.yaml": b"lockfileVersion: [\n"}))


@pytest.mark.parametrize(("value", "message"), [
    ("pnpm@^10", "not an exact pnpm version"),
    ("yarn@4.5.0", "packageManager is 'yarn@4.5.0' but the project is locked by pnpm-lock"),
    ("pnpm@8.15.9", "writes lockfiles older than 9.0"),
])
def test_package_manager_must_name_an_exact_modern_pnpm(value: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        package_manager(value, "package.json")


def test_package_manager_as_corepack_reads_it() -> None:
    digest = "ab" * 64
    tool = package_manager(f"pnpm@11.8.0+sha512.{digest}", "package.json")
    assert (tool.version, tool.algo, tool.hexdigest) == ("11.8.0", "sha512", digest)
    assert tool.spec == f"pnpm@11.8.0+sha512.{digest}"
    assert package_manager(None, "package.json") is DEFAULT_PNPM
    assert DEFAULT_PNPM.hexdigest is not None and len(DEFAULT_PNPM.hexdigest) == 128


def test_the_fetch_checks_a_pinned_pnpm_before_running_it() -> None:
    digest = "cd" * 64
    manifest = b'{"private": true, "packageManager": "pnpm@11.8.0+sha512.' + \
        digest.encode() + b'"}'
    plan = plan_pnpm(fixture(changes={"package.json": manifest}))
    script = PNPM.fetch_command(plan)
    check = script.index(f'!= {digest} ]')
    assert script.index("npm pack pnpm@11.8.0") < check < script.index("pnpm.mjs fetch")
    assert "--frozen-lockfile --ignore-scripts" in script and "/deps/pnpm-store" in script
    # The member's own packageManager wins (corepack reads the nearest package.json), and
    # its manifest is then part of the fetch input, so the cache key follows it.
    member = b'{"name": "@notes/mcp", "packageManager": "pnpm@10.20.0"}'
    plan = plan_pnpm(fixture(changes={"packages/notes-mcp/package.json": member}))
    assert plan.requirements == ("pnpm@10.20.0",)
    assert ("packages/notes-mcp/package.json", member) in plan.files


def test_pnpm_projects_choose_the_pnpm_recipe_and_npm_projects_keep_node() -> None:
    recipe, reason = select_with_reason(fixture(), None)
    assert recipe.name == "pnpm" and recipe.image == "node" and reason is None
    npm = _tree({"package.json": b'{"name": "a"}', "package-lock.json": b"{}"})
    assert select_with_reason(npm, None)[0].name == "node"
    # No lockfile at all stays npm's (whose plan then asks for package-lock.json).
    assert select_with_reason(_tree({"package.json": b'{"name": "a"}'}), None)[0].name == "node"
    # Both managers' lockfiles side by side: a tie, never a silent pick.
    both = _tree({"package.json": b'{"name": "a"}', "package-lock.json": b"{}",
                  "pnpm-lock.yaml": b"lockfileVersion: '9.0'\n"})
    with pytest.raises(RecipeError, match="more than one recipe fits and 2 of them"):
        select_with_reason(both, None)
    assert select_with_reason(both, "pnpm")[0].name == "pnpm"


def test_builds_run_the_fetched_pnpm_offline() -> None:
    env = dict(PNPM.build_env(plan_pnpm(fixture())))
    assert env["PATH"] == DEPS_BIN and env["pnpm_config_offline"] == "true"
    assert env["pnpm_config_minimum_release_age"] == "0"  # it asks the registry
    recipe, _ = select_with_reason(fixture(), None)
    toolchain = ToolchainImage(name="node", tag="reprobuild/node:x", image_id="sha256:" + "1" * 64,
                               definition_sha256="2" * 64, versions=(),
                               path_env="/opt/node/bin:/usr/bin")
    a, _ = plan_pair(set(), host_cpus=2)
    spec = build_spec(a, tree=fixture(), recipe=recipe, toolchain=toolchain,
                      limits=SandboxLimits(), deps=None,
                      deps_env=PNPM.build_env(plan_pnpm(fixture())))
    assert f"PATH={DEPS_BIN}:/opt/node/bin:/usr/bin" in spec.script


def _pnpm_tgz(members: Mapping[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _staged(tmp_path: Path, tgz: bytes, store: Mapping[str, bytes]) -> list[ExtractedFile]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pnpm.tgz").write_bytes(tgz)
    files = [ExtractedFile("pnpm.tgz", len(tgz), hashlib.sha256(tgz).hexdigest())]
    for path, data in store.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
        files.append(ExtractedFile(path, len(data), hashlib.sha256(data).hexdigest()))
    return files


def test_verify_unpacks_pnpm_itself_and_checks_the_store_by_name(tmp_path: Path) -> None:
    tgz = _pnpm_tgz({"package/bin/pnpm.mjs": b"// pnpm\n", "package/package.json": b"{}"})
    content = b"module.exports = 1\n"
    hexdigest = hashlib.sha512(content).hexdigest()
    store = {f"pnpm-store/v11/files/{hexdigest[:2]}/{hexdigest[2:]}": content,
             f"pnpm-store/v11/files/{hexdigest[:2]}/{hexdigest[2:]}-exec": content,
             "pnpm-store/v11/index.db": b"sqlite", "pnpm-store/v11/tmp/x": b"scratch"}
    files = _staged(tmp_path, tgz, store)
    plan = plan_pnpm(fixture())
    verified = PNPM.verify(plan, files, tmp_path)
    kept = {f.path for f in verified.files}
    assert {"pnpm/bin/pnpm.mjs", "pnpm/package.json", "bin/pnpm",
            "pnpm-store/v11/index.db"} <= kept
    assert "pnpm.tgz" not in kept and "pnpm-store/v11/tmp/x" not in kept
    assert (tmp_path / "bin" / "pnpm").read_text().endswith('pnpm.mjs "$@"\n')
    assert "bin/pnpm" in verified.executables
    assert any(p.endswith("-exec") for p in verified.executables)
    sri = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    assert verified.hashes == (("pnpm@11.8.0", sri),)
    assert verified.pins == (("ms", "2.1.3"),)


def test_verify_refuses_a_store_file_that_is_not_what_its_name_says(tmp_path: Path) -> None:
    tgz = _pnpm_tgz({"package/bin/pnpm.mjs": b"// pnpm\n"})
    files = _staged(tmp_path, tgz, {"pnpm-store/v11/files/00/" + "0" * 126: b"evil"})
    with pytest.raises(DependencyIntegrityError, match="its pnpm store name"):
        PNPM.verify(plan_pnpm(fixture()), files, tmp_path)


def test_verify_refuses_a_pnpm_that_is_not_the_pinned_one_or_unsafe(tmp_path: Path) -> None:
    manifest = b'{"private": true, "packageManager": "pnpm@11.8.0+sha512.' + b"ab" * 64 + b'"}'
    plan = plan_pnpm(fixture(changes={"package.json": manifest}))
    files = _staged(tmp_path / "a", _pnpm_tgz({"package/bin/pnpm.mjs": b"x"}), {})
    with pytest.raises(DependencyIntegrityError, match=r"pnpm@11\.8\.0 does not match "
                                                       r"packageManager"):
        PNPM.verify(plan, files, tmp_path / "a")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        link = tarfile.TarInfo("package/bin/pnpm.mjs")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    files = _staged(tmp_path / "b", gzip.compress(raw.getvalue()), {})
    with pytest.raises(EnvironmentFailure, match="could not be unpacked"):
        PNPM.verify(plan_pnpm(fixture()), files, tmp_path / "b")


def test_pnpm_errors_name_the_package_and_the_lockfile() -> None:
    plan = plan_pnpm(fixture())
    log = ('[ERR_PNPM_TARBALL_INTEGRITY] Got unexpected checksum for "https://registry.npmjs'
           f'.org/ms/-/ms-2.1.3.tgz". Wanted "{MS}". Got "sha512-AAAA".\n')
    error = PNPM.diagnose(plan, log)
    assert isinstance(error, DependencyIntegrityError)
    assert error.package == "ms@2.1.3" and "pnpm-lock.yaml" in error.message
    tool = PNPM.diagnose(plan, f"reprobuild: pnpm@11.8.0 tarball sha512 is {'1' * 128}, "
                               f"packageManager pins {'2' * 128}\n")
    assert isinstance(tool, DependencyIntegrityError) and tool.package == "pnpm@11.8.0"
    assert PNPM.diagnose(plan, "something else\n") is None
    assert PNPM.failure_line("noise\n[ERR_PNPM_FETCH_404] GET x: Not Found\n") == \
        "[ERR_PNPM_FETCH_404] GET x: Not Found"
    assert PNPM.failure_hint("UNABLE_TO_GET_ISSUER_CERT_LOCALLY") is not None
    # A lockfile pinning packages the registry no longer serves (seen on a real server).
    gone = ("[ERR_PNPM_MINIMUM_RELEASE_AGE_VIOLATION] 2 lockfile entries failed verification:\n"
            "  @lg-mcp/hooks@0.2.0 could not be checked against minimumReleaseAge (GET "
            "https://registry.npmjs.org/@lg-mcp%2Fhooks: Not Found - 404)\n"
            "  @lg-mcp/ui@0.1.0 could not be checked (GET x: Not Found - 404)\n\nThe lockfile")
    assert PNPM.failure_line(gone) == (
        "[ERR_PNPM_MINIMUM_RELEASE_AGE_VIOLATION] 2 lockfile entries failed verification: 2 "
        "lockfile entries are not on the registry (404): @lg-mcp/hooks@0.2.0, @lg-mcp/ui@0.1.0")


def test_pins_are_refused_for_pnpm() -> None:
    settings = FetchSettings(origin="r.toml", pins=("ms==2.1.2",))
    with pytest.raises(RecipeError, match="a pnpm build takes exactly what its lockfile"):
        PNPM.plan_fetch(fixture(), settings, None)
