"""verify without Docker: release specs and registry documents, inferred conditions, the
verdict, overrides, source archives as trees, and the attestation."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from reprobuild import attestation
from reprobuild.ecosystems.interface import ReleaseConditions
from reprobuild.ecosystems.node.release import NPM_PACK_TIME, NpmReleases
from reprobuild.ecosystems.python.release import HATCHLING_DEFAULT_TIME, PyPIReleases
from reprobuild.errors import InputError, UnsafeArchiveError
from reprobuild.forensics import Comparison, Equivalence
from reprobuild.pipeline.verify import (
    apply_env,
    headline,
    judge,
    merge_conditions,
    release_of,
    tree_from_archive,
)
from reprobuild.recipes import builtin_recipes
from reprobuild.report import (
    ArtifactInfo,
    ConditionsInfo,
    PublishedInfo,
    RecipeInfo,
    Report,
    SourceInfo,
    ToolchainInfo,
    Verdict,
    VerifyInfo,
)
from reprobuild.source import EntryKind, SourceEntry, SourceKind, SourceTree, compute_tree_sha256

PYPROJECT = b"""[build-system]
requires = ["hatchling>=1.26"]
build-backend = "hatchling.build"
[project]
name = "Demo_Server"
version = "1.2.0"
"""


def tree(files: dict[str, bytes]) -> SourceTree:
    entries = tuple(SourceEntry(path=p, kind=EntryKind.FILE, mode=0o644, data=d)
                    for p, d in sorted(files.items()))
    return SourceTree(location="/r", kind=SourceKind.GIT_LOCAL, ref=None, commit="c" * 40,
                      commit_time=1767323045, subdir="", entries=entries,
                      tree_sha256=compute_tree_sha256(entries))


def wheel(path: Path, *, generator: str, stamp: tuple[int, ...]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (("demo/__init__.py", b""), ("demo-1.2.0.dist-info/WHEEL",
                           f"Wheel-Version: 1.0\nGenerator: {generator}\n".encode())):
            archive.writestr(zipfile.ZipInfo(name, stamp), data)  # type: ignore[arg-type]
    return path


def sdist(path: Path, *, mtime: int) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("demo-1.2.0/pyproject.toml", PYPROJECT),
                           ("demo-1.2.0/src/demo/__init__.py", b"x = 1\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def test_release_specs_name_their_registry() -> None:
    found = release_of("pypi:Demo_Server==1.2.0")
    assert found is not None
    ref, releases, strategy = found
    assert (ref.registry, ref.name, ref.version, strategy) == ("pypi", "demo-server", "1.2.0",
                                                              "python-build")
    assert releases.metadata_url(ref).endswith("/pypi/demo-server/json")
    npm = release_of("npm:@scope/pkg@2.0.1")
    assert npm is not None and npm[0].name == "@scope/pkg" and npm[2] == "npm"
    assert release_of("./dist/x.whl") is None
    with pytest.raises(InputError, match="is not a PyPI release") as info:
        release_of("pypi:demo>=1")
    assert info.value.hint == "write pypi:NAME==VERSION"
    with pytest.raises(InputError, match="is not an npm release") as info:
        release_of("npm:Bad Name@1")
    assert info.value.hint == "write npm:NAME@VERSION"


def test_the_project_names_its_own_release() -> None:
    ref = PyPIReleases().of_project(tree({"pyproject.toml": PYPROJECT}))
    assert ref is not None and ref.spec == "pypi:Demo_Server==1.2.0"
    dynamic = PYPROJECT.replace(b'version = "1.2.0"', b'dynamic = ["version"]')
    with pytest.raises(InputError, match="dynamic version"):
        PyPIReleases().of_project(tree({"pyproject.toml": dynamic}))
    npm = NpmReleases().of_project(tree({"package.json": b'{"name": "@s/p", "version": "3.1.0"}'}))
    assert npm is not None and npm.spec == "npm:@s/p@3.1.0"


def test_registry_documents_become_files_with_digests() -> None:
    releases = PyPIReleases()
    ref = releases.parse("pypi:demo==1.2.0")
    assert ref is not None
    document = {"releases": {"1.2.0": [
        {"filename": "demo-1.2.0.tar.gz", "url": "../../packages/d/demo-1.2.0.tar.gz",
         "digests": {"sha256": "A" * 64}, "packagetype": "sdist",
         "upload_time_iso_8601": "2026-01-03T04:05:06.000000Z"},
        {"filename": "../evil", "url": "https://x.invalid/e", "digests": {"sha256": "b" * 64}},
    ]}}
    files = releases.files(ref, json.dumps(document).encode())
    assert [(f.name, f.digest, f.uploaded, f.source) for f in files] == [
        ("demo-1.2.0.tar.gz", "sha256:" + "a" * 64, 1767413106, True)]
    assert files[0].url.startswith("https://pypi.org/packages/d/"), "relative URLs resolved"
    with pytest.raises(InputError, match=r"no release 9\.9"):
        releases.files(releases.parse("pypi:demo==9.9"),  # type: ignore[arg-type]
                       json.dumps(document).encode())
    npm = NpmReleases()
    nref = npm.parse("npm:@scope/pkg@2.0.1")
    assert nref is not None
    digest = hashlib.sha512(b"tarball").digest()
    (tgz,) = npm.files(nref, json.dumps({"dist": {
        "tarball": "https://registry.npmjs.org/@scope/pkg/-/pkg-2.0.1.tgz",
        "integrity": "sha512-" + base64.b64encode(digest).decode()}}).encode())
    assert (tgz.name, tgz.digest) == ("scope-pkg-2.0.1.tgz", "sha512:" + digest.hex())


def test_conditions_are_read_off_the_artifacts(tmp_path: Path) -> None:
    source = tree({"pyproject.toml": PYPROJECT})
    unset = PyPIReleases().conditions({
        "demo-1.2.0-py3-none-any.whl": wheel(tmp_path / "a.whl", generator="hatchling 1.27.0",
                                             stamp=(2020, 2, 2, 0, 0, 0)),
        "demo-1.2.0.tar.gz": sdist(tmp_path / "a.tar.gz", mtime=HATCHLING_DEFAULT_TIME)},
        source)
    assert unset.pins == ("hatchling==1.27.0",)
    assert unset.env == (("SOURCE_DATE_EPOCH", None),)
    assert dict(unset.details) == {"backend": "hatchling", "backend_version": "1.27.0",
                                   "source_date_epoch": "unset"}
    assert any("WHEEL Generator hatchling 1.27.0" in f for f in unset.facts)
    stamped = PyPIReleases().conditions({
        "demo-1.2.0-py3-none-any.whl": wheel(tmp_path / "b.whl",
                                             generator="setuptools (80.9.0)",
                                             stamp=(2026, 1, 2, 3, 4, 4)),
        "demo-1.2.0.tar.gz": sdist(tmp_path / "b.tar.gz", mtime=1767323045)}, source)
    assert stamped.env == (("SOURCE_DATE_EPOCH", "1767323045"),), "the sdist's exact time"
    assert stamped.pins == (), "setuptools is not among the build requirements"
    assert any("not among the project's build requirements" in f for f in stamped.facts)
    with tarfile.open(tmp_path / "p.tgz", "w:gz") as archive:
        info = tarfile.TarInfo("package/package.json")
        info.size, info.mtime = 2, NPM_PACK_TIME
        archive.addfile(info, io.BytesIO(b"{}"))
    packed = NpmReleases().conditions({"p.tgz": tmp_path / "p.tgz"}, source)
    assert dict(packed.details) == {"packer": "npm"} and packed.pins == ()


def test_overrides_win_and_are_recorded() -> None:
    inferred = ReleaseConditions(pins=("hatchling==1.27.0",),
                                 env=(("SOURCE_DATE_EPOCH", None),), cutoff=None)
    merged, overrides = merge_conditions(inferred, pins=("Hatchling==1.28.0",),
                                         env=(("SOURCE_DATE_EPOCH", "5"), ("A", None)),
                                         cutoff=1767413106)
    assert merged.pins == ("Hatchling==1.28.0",)
    assert dict(merged.env) == {"SOURCE_DATE_EPOCH": "5", "A": None}
    assert merged.cutoff == 1767413106
    assert overrides == ("--pin Hatchling==1.28.0", "--env SOURCE_DATE_EPOCH=5", "--env A=")
    recipe = apply_env(builtin_recipes()["python"], (("SOURCE_DATE_EPOCH", None),
                                                     ("EXTRA", "1")))
    assert "SOURCE_DATE_EPOCH" not in dict(recipe.env) and dict(recipe.env)["EXTRA"] == "1"
    with pytest.raises(InputError, match="the sandbox sets HOME itself"):
        apply_env(recipe, (("HOME", "/x"),))


@pytest.mark.parametrize(("equivalences", "missing", "verdict"), [
    ((Equivalence.IDENTICAL, Equivalence.IDENTICAL), 0, Verdict.REPRODUCIBLE),
    ((Equivalence.IDENTICAL, Equivalence.CONTENT_EQUAL), 0, Verdict.REPACKED),
    ((Equivalence.CONTENT_EQUAL, Equivalence.CONTENT_DIFFERS), 0, Verdict.UNREPRODUCIBLE),
    ((Equivalence.IDENTICAL,), 1, Verdict.UNREPRODUCIBLE),
])
def test_the_verdict(equivalences: tuple[Equivalence, ...], missing: int,
                     verdict: Verdict) -> None:
    comparisons = [Comparison(name=f"f{i}", equivalence=e) for i, e in enumerate(equivalences)]
    assert judge(comparisons, missing=missing, egress=False, built=True,
                 twice_differs=False) is verdict
    assert judge(comparisons, missing=missing, egress=True, built=False,
                 twice_differs=False) is Verdict.EGRESS
    assert judge(comparisons, missing=0, egress=False, built=False,
                 twice_differs=False) is Verdict.BUILD_FAILED


def artifact(name: str, equivalence: str, **found: tuple[str, ...]) -> ArtifactInfo:
    return ArtifactInfo(name=name, equivalence=equivalence, published_sha256="1" * 64,
                        rebuilt_sha256="2" * 64, only_published=found.get("only", ()),
                        only_rebuilt=found.get("rebuilt", ()), changed=found.get("changed", ()),
                        packaging=found.get("packaging", ()), diffoscope=None)


def test_the_headline_leads_with_a_file_only_in_the_published_artifact() -> None:
    assert headline([artifact("x.whl", "content-differs", changed=("x/a.py",)),
                     artifact("y.whl", "content-differs", only=("y/config.py",))]) == \
        "published y.whl contains y/config.py, which the source does not"
    assert headline([artifact("x.whl", "content-differs", changed=("x/a.py",))]) == \
        "published x.whl differs from the rebuild in x/a.py"
    assert headline([artifact("x.whl", "identical")]) is None
    assert headline([artifact("x.whl", "identical"),
                     artifact("y.tgz", "content-equal", packaging=("gzip header: mtime 0 vs 9",))]
                    ) == "same content, packed differently: y.tgz (gzip header: mtime 0 vs 9)"


def test_source_archives_become_trees_and_links_are_refused(tmp_path: Path) -> None:
    archive = sdist(tmp_path / "demo-1.2.0.tar.gz", mtime=0)
    made = tree_from_archive(archive, location="pypi:demo==1.2.0")
    assert [e.path for e in made.entries] == ["pyproject.toml", "src/demo/__init__.py"]
    assert made.kind is SourceKind.ARCHIVE and made.commit is None
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as evil:
        link = tarfile.TarInfo("demo-1.2.0/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        evil.addfile(link)
    with pytest.raises(UnsafeArchiveError):
        tree_from_archive(tmp_path / "evil.tar.gz", location="evil")


def test_an_attestation_names_the_proven_files_and_only_a_match_gets_one() -> None:
    info = VerifyInfo(
        release="pypi:demo==1.2.0", found_from="--against", source_sha256=None,
        published=(PublishedInfo(name="demo.whl", url=None, sha256="1" * 64,
                                 registry_digest=None, uploaded=None, size=1),),
        conditions=ConditionsInfo(facts=("f",), pins=("hatchling==1.27.0",),
                                  env={"SOURCE_DATE_EPOCH": None}, cutoff=None, details={},
                                  overrides=()),
        artifacts=(artifact("demo.whl", "identical"),), rebuilt_only=())
    report = Report(
        verdict=Verdict.REPRODUCIBLE,
        source=SourceInfo(url="/r", kind="git-local", ref="v1", commit="c" * 40,
                          commit_time=1, subdir="", tree_sha256="t" * 64, files=3),
        recipe=RecipeInfo(name="python", origin="x", commands=("build",), outputs=("*.whl",)),
        toolchain=ToolchainInfo(image="reprobuild/python:1", image_id="sha256:" + "9" * 64,
                                definition_sha256="d" * 64, versions={"hatchling": "1.27.0"}),
        variations=(), builds=(), differences=(), timings={}, out_dir=None, verify=info)
    statement = attestation.statement(report, started="2026-12-01T00:00:00Z",
                                      finished="2026-12-01T00:00:09Z")
    assert statement["subject"] == [{"name": "demo.whl", "digest": {"sha256": "1" * 64}}]
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps[0] == {"uri": "/r", "digest": {"gitCommit": "c" * 40}}
    assert deps[1]["digest"] == {"sha256": "9" * 64}
    byproduct = statement["predicate"]["runDetails"]["byproducts"][0]
    assert byproduct["digest"]["sha256"] == hashlib.sha256(b"[]").hexdigest()
    json.loads(attestation.render(statement))
    with pytest.raises(ValueError, match="only written when every published file matched"):
        attestation.statement(Report(**{**report.__dict__, "verdict": Verdict.REPACKED}),
                              started="", finished="")
