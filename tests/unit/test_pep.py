"""reprobuild.ecosystems.python.pep: PEP 440/508 and wheel tags, checked against the PEPs."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from reprobuild.ecosystems.python import pep
from reprobuild.ecosystems.python.pep import (
    MARKER_VARIABLES,
    Requirement,
    Unsupported,
    WheelTarget,
    evaluate_marker,
    marker_environment,
    normalise_name,
    parse_requirement,
    parse_version,
    parse_wheel_name,
    pinned_version,
    same_version,
    specifier_contains,
    supported_tags,
    wheel_fits,
)

ROOT = Path(__file__).resolve().parents[2]
PEP_PY = ROOT / "reprobuild" / "ecosystems" / "python" / "pep.py"

# --------------------------------------------------------------------------- specifier grid

VERSIONS = [
    "0.9", "0.9.post1", "1.0", "1.0.0", "1.0.1", "1.0.post1", "1.0.post1.dev2", "1.0a1",
    "1.0.a1", "1.0b2.post3.dev4", "1.0rc1", "1.0.dev0", "1.0_dev0", "1.0+local",
    "1.0+local.7", "1.0.0+other", "1.0-1", "v1.0", "1!1.0", "1!0.1", "1.1", "1.1.dev1",
    "1.9.9", "2", "2.0", "2.0rc1", "10.0",
]
SPECIFIERS = [
    ">1.0", ">=1.0", "<2", "<1.0", "<=1.0", "~=1.0", "~=1.0.0", "==1.0", "==1.0.*",
    "!=1.0", "!=1.0.*", "==1.0+local", ">1.0.dev0", ">=1.0a1", "===1.0", "==1!1.0",
    ">=0.9,<2", ">1.0.post1", "<2.0rc2,>=1.0",
]
GRID = list(itertools.product(SPECIFIERS, VERSIONS))
assert len(GRID) >= 300


def _oracle(specifier: str, version: str) -> bool:
    """packaging's SpecifierSet with PEP 440's pre-release rule spelled out: pre-releases
    are accepted only when a clause (other than ``!=`` and wildcards) names one."""
    specs = SpecifierSet(specifier)
    allow_pre = any(
        spec.operator != "!=" and not spec.version.endswith(".*")
        and Version(spec.version).is_prerelease
        for spec in specs)
    return bool(list(specs.filter([version], prereleases=allow_pre)))


@pytest.mark.parametrize(("specifier", "version"), GRID)
def test_specifier_grid_matches_packaging(specifier: str, version: str) -> None:
    assert specifier_contains(specifier, version) is _oracle(specifier, version)


def test_grid_is_not_trivial() -> None:
    # A grid where everything matched (or nothing did) would check nothing.
    results = [_oracle(s, v) for s, v in GRID]
    assert 50 < sum(results) < len(results) - 50


# --------------------------------------------------------------------------- hand-written rules

# Expected values written out from PEP 440 ("Version specifiers" section), not computed.
SPECIFIER_TABLE: list[tuple[str, str, bool]] = [
    # ">V MUST NOT allow a post-release of the given version unless V itself is a post
    # release" (the old evaluator accepted this).
    (">1.0", "1.0.post1", False),
    (">1.0.post1", "1.0.post2", True),
    (">1.0", "1.0.1", True),
    # ">V MUST NOT match a local version of the specified version".
    (">1.0", "1.0+local", False),
    # "<V MUST NOT allow a pre-release of the specified version unless the specified
    # version is itself a pre-release".
    ("<2", "2.0rc1", False),
    ("<2.0rc2", "2.0rc1", True),
    ("<1.0", "1.0.dev1", False),
    # "If the specified version identifier is a public version identifier (no local
    # version label), then the local version label of any candidate versions MUST be
    # ignored"; with a local label in the specifier, strict matching applies (the old
    # evaluator matched 1.0 against ==1.0+local).
    ("==1.0", "1.0+local", True),
    ("==1.0+local", "1.0", False),
    ("==1.0+local", "1.0+local", True),
    ("==1.0+local", "1.0+other", False),
    ("<=1.0", "1.0+local", True),
    # Zero padding: "1.0" and "1.0.0" are the same release.
    ("==1.0", "1.0.0", True),
    ("==1.0.0", "1", True),
    # Prefix matching: "version == 1.1.* ... Would match 1.1.post1"; pre-releases of the
    # prefix still need opting in.
    ("==1.0.*", "1.0.post1", True),
    ("==1.0.*", "1.0.5", True),
    ("==1.0.*", "1.1", False),
    ("!=1.0.*", "1.0.5", False),
    ("==1.0.*", "1.0a1", False),
    # Compatible release: "~= 2.2.post3 ... >= 2.2.post3, == 2.*"; "~= 1.4.5 ... == 1.4.*".
    ("~=1.4.2", "1.4.9", True),
    ("~=1.4.2", "1.5.0", False),
    ("~=1.4", "1.9", True),
    ("~=1.4", "2.0", False),
    ("~=2.2.post3", "2.9", True),
    # Arbitrary equality is a plain string comparison: no normalisation, no padding.
    ("===1.0", "1.0", True),
    ("===1.0", "1.0.0", False),
    ("===1.0", "v1.0", False),
    # Epochs dominate: 1!1.0 sorts after every epoch-0 version.
    (">=2", "1!1.0", True),
    ("<2", "1!1.0", False),
    # "Pre-releases ... are implicitly excluded from all version specifiers, unless ...
    # explicitly requested": a clause naming a pre-release requests them, != does not.
    (">=1.0", "2.0rc1", False),
    (">=1.0", "1.1.dev1", False),
    (">=1.0rc1", "2.0rc1", True),
    (">1.0.dev0", "1.0a1", True),
    (">=1.0a1,<2", "1.5b1", True),
    ("!=1.0a1", "1.0a2", False),
    # An empty set constrains nothing.
    ("", "0.1", True),
    ("", "1.0a1", True),
    # Old-style requirements wrap the set in parentheses (PEP 508 still accepts it).
    ("(>=1.0,<2)", "1.5", True),
    ("(>=1.0,<2)", "2.0", False),
    (" >=1.0 , <2 ", "1.5", True),
]


@pytest.mark.parametrize(("specifier", "version", "expected"), SPECIFIER_TABLE)
def test_specifier_rules(specifier: str, version: str, expected: bool) -> None:
    assert specifier_contains(specifier, version) is expected


@pytest.mark.parametrize("specifier", [
    ">1.0+local",   # "Local version identifiers are NOT permitted in this version specifier"
    "<=1.0+local",
    "~=1",          # "This operator MUST NOT be used with a single segment version number"
    ">=1.0.*",      # prefix matching only with == and !=
    "==1.0.*+local",
    "=>1.0",
    "1.0",
    ">=1.0,,<2",    # PEP 508 has no empty clauses (packaging's SpecifierSet skips them)
    ">=1.0,",
    ",",
    "(>=1.0",
])
def test_invalid_specifiers_are_unsupported(specifier: str) -> None:
    with pytest.raises(Unsupported):
        specifier_contains(specifier, "1.0")


@pytest.mark.parametrize("version", ["", "1.0-foo", "one", "1.0+", "1..0"])
def test_invalid_versions_are_unsupported(version: str) -> None:
    with pytest.raises(Unsupported):
        specifier_contains(">=0", version)
    with pytest.raises(Unsupported):
        parse_version(version)


def test_unsupported_is_a_value_error() -> None:
    assert issubclass(Unsupported, ValueError)


def test_parse_version_normalises() -> None:
    assert str(parse_version(" v1.0-1 ")) == "1.0.post1"
    assert parse_version("1.0a1").is_prerelease
    assert parse_version("1!2.0").epoch == 1


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("1.0", "1.0.0", True), ("1.0.post1", "1.0-1", True), ("1.0a1", "1.0.alpha1", True),
    ("1.0", "1.0+local", False), ("1.0", "1.0.post1", False), ("1!1.0", "1.0", False),
    ("not-a-version", "not-a-version", True), ("not-a-version", "1.0", False),
])
def test_same_version(a: str, b: str, expected: bool) -> None:
    assert same_version(a, b) is expected


@pytest.mark.parametrize(("name", "normal"), [
    ("Foo_Bar", "foo-bar"), ("foo.bar", "foo-bar"), ("FOO--._bar", "foo-bar"),
    ("zope.interface", "zope-interface"), ("simple", "simple"),
])
def test_normalise_name(name: str, normal: str) -> None:
    assert normalise_name(name) == normal


# --------------------------------------------------------------------------- requirements


def test_parse_requirement_fields() -> None:
    req = parse_requirement("  Foo_Bar[Zed,a_b] (>=1.0,<2) ; python_version < '3.12'  ")
    assert req == Requirement(name="Foo_Bar", extras=("a-b", "zed"), specifier="<2,>=1.0",
                              marker='python_version < "3.12"', url=None,
                              text="Foo_Bar[Zed,a_b] (>=1.0,<2) ; python_version < '3.12'")
    assert req.key == "foo-bar"


def test_parse_requirement_url() -> None:
    req = parse_requirement("pkg @ https://example.org/pkg-1.0-py3-none-any.whl")
    assert req.url == "https://example.org/pkg-1.0-py3-none-any.whl"
    assert req.specifier == ""
    assert req.marker is None
    assert pinned_version(req) is None


def test_parse_requirement_without_specifier() -> None:
    req = parse_requirement("setuptools")
    assert (req.name, req.extras, req.specifier, req.marker, req.url) == (
        "setuptools", (), "", None, None)


@pytest.mark.parametrize("text", [
    "name~=1",                 # ~= needs two release segments (PEP 440)
    "name>1.0+local",          # no local label in ordered comparisons (PEP 440)
    "name==1.0 ; foo == 'x'",  # foo is not a PEP 508 marker variable
    "name==1.0 ; python_version <",
    "name[extra",
    "-e .",
    "",
    "name==",
])
def test_invalid_requirements_are_unsupported(text: str) -> None:
    with pytest.raises(Unsupported):
        parse_requirement(text)


@pytest.mark.parametrize(("text", "pin"), [
    ("name==1.0", "1.0"),
    ("name == 1.0.post1 ; python_version < '3.12'", "1.0.post1"),
    ("name===1.0-weird", "1.0-weird"),
    ("name==1.0+local", "1.0+local"),
    ("name==1.*", None),
    ("name>=1", None),
    ("name~=1.4", None),
    ("name==1.0,<2", None),
    ("name!=1.0", None),
    ("name", None),
])
def test_pinned_version(text: str, pin: str | None) -> None:
    assert pinned_version(parse_requirement(text)) == pin


# --------------------------------------------------------------------------- markers


def _env(**overrides: str) -> dict[str, str]:
    env = marker_environment(python_full_version="3.11.2", machine="x86_64", release="6.1.0")
    env.update(overrides)
    return env


def test_marker_environment_is_complete() -> None:
    env = marker_environment(python_full_version="3.11.2", machine="aarch64")
    assert env == {
        "implementation_name": "cpython",
        "implementation_version": "3.11.2",
        "os_name": "posix",
        "platform_machine": "aarch64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": "3.11.2",
        "python_version": "3.11",
        "sys_platform": "linux",
        "extra": "",
    }
    assert set(env) == {*MARKER_VARIABLES, "extra"}


def test_marker_variables_cover_packaging_default_environment() -> None:
    # Every key packaging would otherwise take from the host must be ours.
    assert set(default_environment()) <= set(MARKER_VARIABLES)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"python_full_version": "3.11", "machine": "x86_64"}, "X.Y.Z"),
    ({"python_full_version": "3.11.2", "machine": "x86_64", "implementation": "pypy"},
     "CPython"),
])
def test_marker_environment_refuses_what_it_cannot_describe(kwargs: dict[str, str],
                                                            message: str) -> None:
    with pytest.raises(Unsupported, match=message):
        marker_environment(**kwargs)


@pytest.mark.parametrize(("marker", "release", "expected"), [
    ('platform_release >= "6.0"', "6.1.0", True),
    ('platform_release < "6.0"', "6.1.0", False),
    ('platform_release == "6.1.0"', "6.1.0", True),
    ('platform_release == ""', "", True),
    ('platform_release == "6.1.0-18-amd64"', "6.1.0-18-amd64", True),
    ('platform_release != "6.1.0-18-amd64"', "6.1.0-18-amd64", False),
    # packaging (26.x) quirk, kept on purpose as a canary: a release that is not PEP 440
    # never satisfies a valid version specifier, where PEP 508 would fall back to string
    # comparison ("6.1.0-18-amd64" >= "6.0" as strings).
    ('platform_release >= "6.0"', "6.1.0-18-amd64", False),
])
def test_platform_release_comes_from_env(marker: str, release: str, expected: bool) -> None:
    assert evaluate_marker(marker, _env(platform_release=release)) is expected


@pytest.mark.parametrize(("python", "machine", "expected"), [
    ("3.11.2", "x86_64", True),
    ("3.12.1", "x86_64", False),
    ("3.11.2", "aarch64", False),
    ("3.10.0", "x86_64", True),
])
def test_python_version_and_machine(python: str, machine: str, expected: bool) -> None:
    env = marker_environment(python_full_version=python, machine=machine)
    marker = 'python_version < "3.12" and platform_machine == "x86_64"'
    assert evaluate_marker(marker, env) is expected


@pytest.mark.parametrize(("marker", "expected"), [
    ('python_full_version >= "3.11.0"', True),
    ("python_version > '3.9' or sys_platform == 'win32'", True),
    ("(os_name == 'nt' or os_name == 'posix') and implementation_name == 'cpython'", True),
    ("platform_python_implementation != 'PyPy' and python_version >= '3.8'", True),
    ("platform_system == 'Linux' and implementation_version >= '3.11'", True),
    ("'linux' in sys_platform", True),
    ("'win' not in sys_platform", True),
    ("sys_platform == 'darwin'", False),
    ('platform_version == ""', True),
])
def test_markers(marker: str, expected: bool) -> None:
    assert evaluate_marker(marker, _env()) is expected


def test_no_host_defaults_leak_in() -> None:
    # This host is not aarch64; the image is. packaging would use the host's value for a
    # variable missing from the environment, so the image's must win.
    env = marker_environment(python_full_version="3.11.2", machine="aarch64")
    assert evaluate_marker('platform_machine == "aarch64"', env) is True
    assert evaluate_marker('platform_machine == "x86_64"', env) is False
    # The host's kernel release (platform.release()) is never "", the image's unknown is.
    assert evaluate_marker('platform_release == ""', env) is True
    env = _env(python_full_version="3.9.1", python_version="3.9")
    assert evaluate_marker('python_version >= "3.10"', env) is False


@pytest.mark.parametrize("missing", MARKER_VARIABLES)
def test_missing_variable_is_unsupported(missing: str) -> None:
    env = _env()
    del env[missing]
    with pytest.raises(Unsupported, match=missing):
        evaluate_marker(f'{missing} == "x"', env)


@pytest.mark.parametrize("marker", [
    'platform_foo == "x"',          # not a PEP 508 variable
    'python_version < "3.12" and',  # incomplete
    "python_version <",
    '"a" in extras',                # lock-file variable, not in the environment
    'os_name ~= "posix"',           # ~= is undefined on a non-version string
])
def test_unknown_or_invalid_markers_are_unsupported(marker: str) -> None:
    with pytest.raises(Unsupported):
        evaluate_marker(marker, _env())


@pytest.mark.parametrize(("marker", "extra", "expected"), [
    ('extra == "x"', None, False),
    ('extra == "x"', "", False),
    ('extra == "x"', "x", True),
    ('extra == "Fancy_Feature"', "fancy.feature", True),  # PEP 685 normalises both sides
    ('extra != "x"', None, True),
    ('extra == ""', None, True),
])
def test_extra(marker: str, extra: str | None, expected: bool) -> None:
    env = _env()
    del env["extra"]
    if extra is not None:
        env["extra"] = extra
    assert evaluate_marker(marker, env) is expected


# --------------------------------------------------------------------------- wheel tags

BOOKWORM = WheelTarget(python=(3, 11), glibc=(2, 36), machine="x86_64")
ARM = WheelTarget(python=(3, 11), glibc=(2, 36), machine="aarch64")


@pytest.mark.parametrize(("filename", "target", "expected"), [
    ("numpy-2.1.0-cp311-cp311-manylinux_2_39_x86_64.whl", BOOKWORM, False),  # glibc too new
    ("numpy-2.1.0-cp311-cp311-manylinux_2_37_x86_64.whl", BOOKWORM, False),
    ("numpy-2.1.0-cp311-cp311-manylinux_2_36_x86_64.whl", BOOKWORM, True),
    ("numpy-1.26.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", BOOKWORM,
     True),
    ("x-1.0-cp311-cp311-manylinux2014_x86_64.whl", BOOKWORM, True),
    ("x-1.0-cp311-cp311-manylinux2010_x86_64.whl", BOOKWORM, True),
    ("x-1.0-cp311-cp311-manylinux1_x86_64.whl", BOOKWORM, True),
    ("x-1.0-cp311-cp311-manylinux_2_5_x86_64.whl", BOOKWORM, True),
    ("x-1.0-cp311-cp311-linux_x86_64.whl", BOOKWORM, True),
    ("x-1.0-cp311-cp311-musllinux_1_1_x86_64.whl", BOOKWORM, False),
    ("x-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", BOOKWORM, False),
    ("x-1.0-cp311-cp311-win_amd64.whl", BOOKWORM, False),
    ("x-1.0-cp311-cp311-macosx_11_0_arm64.whl", BOOKWORM, False),
    ("x-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", BOOKWORM, False),  # other Python
    ("x-1.0-cp310-cp310-manylinux_2_17_x86_64.whl", BOOKWORM, False),  # other ABI
    ("x-1.0-cp311-cp311d-manylinux_2_17_x86_64.whl", BOOKWORM, False),  # debug ABI
    ("x-1.0-cp38-abi3-manylinux_2_17_x86_64.whl", BOOKWORM, True),  # stable ABI, older
    ("x-1.0-cp311-abi3-manylinux_2_17_x86_64.whl", BOOKWORM, True),
    ("x-1.0-cp312-abi3-manylinux_2_17_x86_64.whl", BOOKWORM, False),  # stable ABI, newer
    ("x-1.0-py3-none-any.whl", BOOKWORM, True),
    ("x-1.0-py2.py3-none-any.whl", BOOKWORM, True),
    ("x-1.0-py311-none-any.whl", BOOKWORM, True),
    ("x-1.0-py312-none-any.whl", BOOKWORM, False),
    ("x-1.0-py2-none-any.whl", BOOKWORM, False),
    ("x-1.0-cp311-none-any.whl", BOOKWORM, True),
    ("x-1.0-py3-none-manylinux_2_17_x86_64.whl", BOOKWORM, True),
    ("x-1.0-1build-py3-none-any.whl", BOOKWORM, True),
    ("x-1.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl", BOOKWORM, False),
    ("x-1.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", ARM, True),
    ("x-1.0-cp311-cp311-manylinux2014_aarch64.whl", ARM, True),
    # Older policies exist for x86_64/i686 only; aarch64 starts at glibc 2.17.
    ("x-1.0-cp311-cp311-manylinux_2_12_aarch64.whl", ARM, False),
    ("x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", ARM, False),
    # Not wheel file names at all.
    ("x-1.0.tar.gz", BOOKWORM, False),
    ("x-1.0-py3-none.whl", BOOKWORM, False),
    ("x-notaversion-py3-none-any.whl", BOOKWORM, False),
    ("", BOOKWORM, False),
])
def test_wheel_fits(filename: str, target: WheelTarget, expected: bool) -> None:
    assert wheel_fits(filename, target) is expected


def test_supported_tags_describe_the_target_not_the_host() -> None:
    old = WheelTarget(python=(3, 9), glibc=(2, 17), machine="x86_64")
    tags = {str(t) for t in supported_tags(old)}
    assert "cp39-cp39-manylinux_2_17_x86_64" in tags
    assert "cp39-cp39-manylinux2014_x86_64" in tags
    assert "cp39-cp39-manylinux_2_18_x86_64" not in tags
    assert not any(t.startswith("cp311") for t in tags)
    assert BOOKWORM.supported_tags() == supported_tags(BOOKWORM)
    assert {str(t) for t in BOOKWORM.supported_tags()} >= {
        "cp311-cp311-manylinux_2_36_x86_64", "cp311-abi3-manylinux_2_17_x86_64",
        "cp32-abi3-linux_x86_64", "py3-none-any", "cp311-none-any"}


def test_wheel_target_needs_glibc_2() -> None:
    with pytest.raises(Unsupported):
        supported_tags(WheelTarget(python=(3, 11), glibc=(3, 1), machine="x86_64"))


@pytest.mark.parametrize(("filename", "parsed"), [
    ("Foo_Bar-1.0_post1-py3-none-any.whl", ("foo-bar", "1.0.post1")),
    ("numpy-1.26.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     ("numpy", "1.26.0")),
    ("zope.interface-6.0-1-cp311-cp311-linux_x86_64.whl", ("zope-interface", "6.0")),
    ("x-1.0.tar.gz", None),
    ("x-1.0-py3-none.whl", None),
    ("x-notaversion-py3-none-any.whl", None),
])
def test_parse_wheel_name(filename: str, parsed: tuple[str, str] | None) -> None:
    assert parse_wheel_name(filename) == parsed


# --------------------------------------------------------------------------- start-up cost

_NO_PACKAGING = (
    "import sys\n"
    "{load}\n"
    "assert callable(pep.specifier_contains)\n"
    "loaded = sorted(m for m in sys.modules if m == 'packaging' or m.startswith('packaging.'))\n"
    "print(','.join(loaded))\n"
)


def _run(load: str) -> str:
    result = subprocess.run([sys.executable, "-c", _NO_PACKAGING.format(load=load)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_module_itself_does_not_import_packaging() -> None:
    # Loaded from its file, so only pep.py's own imports count.
    load = ("import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('pep_alone', {str(PEP_PY)!r})\n"
            "pep = importlib.util.module_from_spec(spec)\n"
            "sys.modules['pep_alone'] = pep\n"
            "spec.loader.exec_module(pep)")
    assert _run(load) == ""


def test_importing_the_module_does_not_import_packaging() -> None:
    assert _run("import reprobuild.ecosystems.python.pep as pep") == ""


# The table the old hand-written evaluator was tested with, now against packaging; it had
# `>1.0` accept `1.0.post1`, which PEP 440 forbids ("exclusive ordered comparison").
@pytest.mark.parametrize(("spec", "version", "ok"), [
    (">=1.27", "1.28.0", True), (">=1.27", "1.26.9", False), ("==1.28", "1.28.0", True),
    ("==1.*", "1.9", True), ("!=1.*", "1.9", False), ("~=1.4.2", "1.4.9", True),
    ("~=1.4.2", "1.5.0", False), ("<2,>=1", "1.5", True), (">=1", "2.0rc1", False),
    (">=2.0rc1", "2.0rc2", True), (">1.0", "1.0.post1", False), ("<1.0", "1.0.dev1", False),
    ("===1.0", "1.0", True), ("(>=3)", "3", True), ("", "0.1", True),
])
def test_former_evaluator_table(spec: str, version: str, ok: bool) -> None:
    assert pep.specifier_contains(spec, version) is ok


@pytest.mark.parametrize(("marker", "ok"), [
    ("python_version < '3.11'", False), ('python_full_version >= "3.11.0"', True),
    ("sys_platform == 'win32' or platform_machine == 'x86_64'", True),
    ("(os_name == 'nt' or os_name == 'posix') and implementation_name == 'cpython'", True),
    ("platform_python_implementation != 'PyPy' and python_version >= '3.8'", True),
    ("'linux' in sys_platform", True), ("'win' not in sys_platform", True),
    ("extra == 'test'", False),
])
def test_former_marker_table(marker: str, ok: bool) -> None:
    env = pep.marker_environment(python_full_version="3.11.2", machine="x86_64")
    assert pep.evaluate_marker(marker, env) is ok
