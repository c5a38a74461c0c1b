"""Image definitions are the cache key of every toolchain: they must load strictly and hash
exactly when (and only when) the image would change. No Docker here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from reprobuild import images
from reprobuild.archive import files_tar
from reprobuild.errors import EnvironmentFailure, ExitCode, InputError
from reprobuild.images import build as image_build
from reprobuild.progress import RecordingProgress

REPO_CONTAINERS = Path(__file__).resolve().parents[2] / "containers"
DIGEST = "sha256:" + "ab" * 32

BASE = """\
kind = "mmdebstrap"
suite = "bookworm"
architecture = "amd64"
variant = "essential"
source_date_epoch = 1
mirrors = ["deb http://deb.debian.org/debian bookworm main"]
packages = ["tzdata=1", "locales=2", "libfaketime=3", "python3=4"]
"""

TOOLCHAIN = """\
kind = "toolchain"
base = "base"
python = "/usr/bin/python3"
python_version = "3.11"
lock = "tc.lock"
"""

LOCK = """\
# a comment
pip==26.3 \\
    --hash=sha256:{a}
demo-pkg==1.0 --hash=sha256:{b}  # trailing comment
""".format(a="a" * 64, b="b" * 64)


def write_tree(tmp_path: Path, *, base: str = BASE, toolchain: str = TOOLCHAIN,
               lock: str = LOCK) -> Path:
    (tmp_path / "base.toml").write_text(base)
    (tmp_path / "tc.toml").write_text(toolchain)
    (tmp_path / "tc.lock").write_text(lock)
    return tmp_path


def copy_repo(tmp_path: Path) -> Path:
    target = tmp_path / "containers"
    shutil.copytree(REPO_CONTAINERS, target)
    return target


def tags(directory: Path) -> dict[str, str]:
    defs = images.load_definitions(directory)
    return {name: images.definition_hash(d, defs) for name, d in defs.items()}


def rejects(tmp_path: Path, pattern: str, **files: str) -> InputError:
    write_tree(tmp_path, **files)
    with pytest.raises(InputError) as info:
        images.load_definitions(tmp_path)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert re.search(pattern, info.value.message), info.value.message
    return info.value


# --------------------------------------------------------------------------- shipped ones


def test_shipped_definitions_load() -> None:
    defs = images.load_definitions()
    assert images.containers_dir() == REPO_CONTAINERS
    assert {"base-bookworm", "python", "diffoscope"} <= set(defs)
    assert defs["base-bookworm"].kind == "mmdebstrap"
    assert defs["python"].base == defs["diffoscope"].base == "base-bookworm"
    assert images.toolchain_names() == sorted(images.toolchain_names())
    assert {"diffoscope", "node", "python"} <= set(images.toolchain_names())
    assert "base-bookworm" not in images.toolchain_names()


def test_shipped_pins_are_exact() -> None:
    defs = images.load_definitions()
    base = defs["base-bookworm"]
    assert base.source_date_epoch is not None
    assert len(base.mirrors) == 3
    names = {p.split("=", 1)[0] for p in base.packages}
    assert {"python3", "tzdata", "locales", "libfaketime", "file", "libmagic1",
            "libarchive13", "unzip", "xxd"} <= names
    python = {r.key: r for r in defs["python"].requirements}
    assert {"pip", "build", "pyproject-hooks", "packaging", "hatchling", "pathspec", "pluggy",
            "trove-classifiers", "setuptools", "wheel", "flit-core", "pdm-backend",
            "poetry-core"} <= set(python)
    diffoscope = {r.key for r in defs["diffoscope"].requirements}
    assert {"pip", "diffoscope", "python-magic", "libarchive-c"} <= diffoscope
    for defn in (defs["python"], defs["diffoscope"]):
        for requirement in defn.requirements:
            assert requirement.hashes and all(len(h) == 64 for h in requirement.hashes)
        assert dict(defn.env)["PATH"].startswith("/opt/reprobuild/venv/bin:")


def test_tags_name_the_image_and_the_hash() -> None:
    defs = images.load_definitions()
    tag = images.image_tag(defs["python"], defs)
    assert re.fullmatch(r"reprobuild/python:[0-9a-f]{16}", tag)
    assert tag.endswith(images.definition_hash(defs["python"], defs)[:16])


# --------------------------------------------------------------------------- hashing


def test_hash_is_stable(tmp_path: Path) -> None:
    first = tags(REPO_CONTAINERS)
    assert first == tags(copy_repo(tmp_path))
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in first.values())
    assert len(set(first.values())) == len(first)


def test_hash_ignores_comments_and_description(tmp_path: Path) -> None:
    before = tags(REPO_CONTAINERS)
    tree = copy_repo(tmp_path)
    path = tree / "python.toml"
    text = path.read_text().replace('description = "', 'description = "reworded ')
    path.write_text("# a new comment\n" + text)
    assert tags(tree) == before


def test_hash_changes_with_a_debian_pin(tmp_path: Path) -> None:
    before = tags(REPO_CONTAINERS)
    tree = copy_repo(tmp_path)
    path = tree / "base-bookworm.toml"
    path.write_text(path.read_text().replace('"unzip=6.0-28+deb12u1"', '"unzip=6.0-28+deb12u2"'))
    after = tags(tree)
    assert all(after[name] != before[name] for name in ("base-bookworm", "python", "diffoscope"))


def test_hash_changes_with_the_lock_only_for_its_image(tmp_path: Path) -> None:
    before = tags(REPO_CONTAINERS)
    tree = copy_repo(tmp_path)
    lock = tree / "python-build.lock"
    lock.write_text(lock.read_text().replace("hatchling==1.33.0", "hatchling==1.33.1"))
    after = tags(tree)
    assert after["python"] != before["python"]
    assert after["base-bookworm"] == before["base-bookworm"]
    assert after["diffoscope"] == before["diffoscope"]


def test_hash_changes_with_the_base(tmp_path: Path) -> None:
    write_tree(tmp_path)
    before = tags(tmp_path)
    (tmp_path / "base.toml").write_text(BASE.replace("source_date_epoch = 1",
                                                     "source_date_epoch = 2"))
    after = tags(tmp_path)
    assert after["base"] != before["base"]
    assert after["tc"] != before["tc"]


def test_hash_changes_with_checks_and_env(tmp_path: Path) -> None:
    write_tree(tmp_path)
    before = tags(tmp_path)["tc"]
    write_tree(tmp_path, toolchain=TOOLCHAIN + 'checks = ["true"]\n')
    with_check = tags(tmp_path)["tc"]
    write_tree(tmp_path, toolchain=TOOLCHAIN + '[env]\nPATH = "/x"\n')
    with_env = tags(tmp_path)["tc"]
    assert len({before, with_check, with_env}) == 3


def test_hash_is_pure(tmp_path: Path) -> None:
    """Loading reads the lock; hashing afterwards must not touch the disk again."""
    write_tree(tmp_path)
    defs = images.load_definitions(tmp_path)
    expected = images.definition_hash(defs["tc"], defs)
    shutil.rmtree(tmp_path)
    assert images.definition_hash(defs["tc"], defs) == expected


# --------------------------------------------------------------------------- validation


def test_minimal_tree_loads(tmp_path: Path) -> None:
    defs = images.load_definitions(write_tree(tmp_path))
    assert [r.name for r in defs["tc"].requirements] == ["pip", "demo-pkg"]
    assert defs["tc"].requirements[1].hashes == ("b" * 64,)


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    error = rejects(tmp_path, r"base\.toml: packges: unknown key",
                    base=BASE + 'packges = ["x=1"]\n')
    assert error.hint is not None and "packages" in error.hint


def test_missing_required_key(tmp_path: Path) -> None:
    rejects(tmp_path, r"tc\.toml: python_version: missing",
            toolchain=TOOLCHAIN.replace('python_version = "3.11"\n', ""))


def test_unknown_kind(tmp_path: Path) -> None:
    rejects(tmp_path, r"base\.toml: kind: must be one of",
            base=BASE.replace('kind = "mmdebstrap"', 'kind = "dockerfile"'))


def test_wrong_type(tmp_path: Path) -> None:
    rejects(tmp_path, r"base\.toml: source_date_epoch: must be a non-negative integer",
            base=BASE.replace("source_date_epoch = 1", 'source_date_epoch = "1"'))
    rejects(tmp_path, r"base\.toml: packages: must be a list of strings",
            base=BASE.replace('"python3=4"]', "4]"))


def test_invalid_toml(tmp_path: Path) -> None:
    rejects(tmp_path, r"base\.toml: not valid TOML", base="kind = ")


def test_unpinned_package(tmp_path: Path) -> None:
    error = rejects(tmp_path, r"base\.toml: packages\[3\]: 'python3' is not pinned",
                    base=BASE.replace('"python3=4"', '"python3"'))
    assert "apt-cache policy" in error.message


def test_contract_packages_required(tmp_path: Path) -> None:
    rejects(tmp_path, r"packages: must install libfaketime",
            base=BASE.replace('"libfaketime=3", ', ""))
    rejects(tmp_path, r"packages: must install locales or locales-all",
            base=BASE.replace('"locales=2", ', ""))


def test_bad_mirror_and_architecture(tmp_path: Path) -> None:
    rejects(tmp_path, r"mirrors\[0\]: 'http://x' is not",
            base=BASE.replace('"deb http://deb.debian.org/debian bookworm main"', '"http://x"'))
    rejects(tmp_path, r"architecture: 's390x' is not supported",
            base=BASE.replace('"amd64"', '"s390x"'))


def test_bad_variant_and_hook(tmp_path: Path) -> None:
    rejects(tmp_path, r"variant: 'essentials' is not an mmdebstrap variant",
            base=BASE.replace('"essential"', '"essentials"'))
    rejects(tmp_path, r"hooks\[0\]: '../evil' is not",
            base=BASE + 'hooks = ["../evil"]\n')


def test_bad_env_name(tmp_path: Path) -> None:
    rejects(tmp_path, r"tc\.toml: env\.BAD-NAME: not a valid variable name",
            toolchain=TOOLCHAIN + '[env]\n"BAD-NAME" = "x"\n')


def test_missing_or_wrong_base(tmp_path: Path) -> None:
    error = rejects(tmp_path, r"tc\.toml: base: no definition named 'bsae'",
                    toolchain=TOOLCHAIN.replace('base = "base"', 'base = "bsae"'))
    assert error.hint is not None and "base" in error.hint
    (tmp_path / "other.toml").write_text(TOOLCHAIN.replace('base = "base"', 'base = "tc"'))
    with pytest.raises(InputError, match=r"other\.toml: base: 'tc' is a toolchain"):
        images.load_definitions(tmp_path)


def test_lock_must_be_a_sibling_file(tmp_path: Path) -> None:
    rejects(tmp_path, r"lock: must be a file name next to the definition",
            toolchain=TOOLCHAIN.replace('"tc.lock"', '"../tc.lock"'))
    rejects(tmp_path, r"lock: cannot read",
            toolchain=TOOLCHAIN.replace('"tc.lock"', '"missing.lock"'))


@pytest.mark.parametrize(("lock", "pattern"), [
    ("pip>=26 --hash=sha256:" + "a" * 64, r"tc\.lock:1: 'pip>=26' is not pinned"),
    ("pip==26.3", r"tc\.lock:1: pip==26\.3 has no --hash"),
    ("pip==26.3 --hash=md5:abc", r"tc\.lock:1: only --hash options may follow"),
    ("pip==26.3 --hash=sha512:" + "a" * 128, r"tc\.lock:1: --hash=sha512:a+\.\.\. is not "
     "accepted here"),
    ("pip==26.3 --index-url=http://x --hash=sha256:" + "a" * 64,
     r"tc\.lock:1: only --hash options may follow"),
    ("--index-url=http://x\npip==26.3 --hash=sha256:" + "a" * 64,
     r"tc\.lock:1: option --index-url is not allowed"),
    ("pip[extra]==26.3 --hash=sha256:" + "a" * 64, r"names extras"),
    ("pip==26.3 ; python_version < '3.12' --hash=sha256:" + "a" * 64,
     r"has an environment marker"),
    ("pip==1 --hash=sha256:" + "a" * 64 + "\nPip==2 --hash=sha256:" + "b" * 64,
     r"tc\.lock:2: Pip is pinned twice \(also on line 1\)"),
    ("demo==1 --hash=sha256:" + "a" * 64, r"tc\.lock: must pin pip"),
    ("# nothing\n", r"tc\.lock: the lock pins nothing"),
])
def test_lock_is_strict(tmp_path: Path, lock: str, pattern: str) -> None:
    rejects(tmp_path, pattern, lock=lock)


def test_continuation_lines_report_their_first_line(tmp_path: Path) -> None:
    lock = "# header\n\npip==26.3 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --bogus\n"
    rejects(tmp_path, r"tc\.lock:3: only --hash options may follow", lock=lock)


def test_sdists_must_be_locked(tmp_path: Path) -> None:
    rejects(tmp_path, r"sdists\[0\]: 'nope' is not in tc\.lock",
            toolchain=TOOLCHAIN + 'sdists = ["nope"]\n')
    rejects(tmp_path, r"sdists\[0\]: pip must come as a wheel",
            toolchain=TOOLCHAIN + 'sdists = ["pip"]\n')


def test_file_name_must_be_an_image_name(tmp_path: Path) -> None:
    write_tree(tmp_path)
    (tmp_path / "Bad Name.toml").write_text(BASE)
    with pytest.raises(InputError, match="file name must be a lowercase image name"):
        images.load_definitions(tmp_path)


# --------------------------------------------------------------------------- registry bases


def registry(reference: str) -> str:
    return BASE.replace('kind = "mmdebstrap"', 'kind = "registry"').replace(
        'suite = "bookworm"\n', "").replace('variant = "essential"\n', "").replace(
        "source_date_epoch = 1\n", f'reference = "{reference}"\n')


def test_registry_reference_must_be_a_digest(tmp_path: Path) -> None:
    error = rejects(tmp_path, r"reference: 'docker\.io/library/debian:bookworm' is not pinned",
                    base=registry("docker.io/library/debian:bookworm"))
    assert error.hint is not None and "sha256" in error.hint
    rejects(tmp_path, r"carries a tag as well as a digest",
            base=registry(f"docker.io/library/debian:bookworm@{DIGEST}"))
    rejects(tmp_path, r"is not pinned by digest",
            base=registry("docker.io/library/debian@sha256:abc"))


def test_registry_reference_may_name_a_port(tmp_path: Path) -> None:
    write_tree(tmp_path, base=registry(f"registry.local:5000/debian@{DIGEST}"))
    assert images.load_definitions(tmp_path)["base"].reference.endswith(DIGEST)


def test_registry_plan(tmp_path: Path) -> None:
    base = registry(f"docker.io/library/debian@{DIGEST}") + (
        'apt_options = [\'Acquire::Check-Valid-Until "false"\']\n'
        'dpkg_options = ["path-exclude=/usr/share/man/*"]\n'
        "customize = ['touch \"$ROOT/marker\"']\n")
    write_tree(tmp_path, base=base)
    defs = images.load_definitions(tmp_path)
    plan = images.registry_base_plan(defs["base"])
    assert (plan.repository, plan.digest) == ("docker.io/library/debian", DIGEST)
    assert plan.network_mode == "bridge"
    script = plan.script
    assert "apt-get install -y --no-install-recommends tzdata=1 locales=2 libfaketime=3 " \
           "python3=4" in script
    assert "'deb http://deb.debian.org/debian bookworm main' > /etc/apt/sources.list" in script
    assert "Acquire::Check-Valid-Until \"false\";" in script
    assert "path-exclude=/usr/share/man/*" in script
    assert "Acquire::https::CAInfo" in script
    # The contract comes before the definition's own steps, and lists are cleaned up.
    assert script.index("add_account builder 1000") < script.index("marker")
    assert script.index("marker") < script.index("rm -rf /var/lib/apt/lists/*")
    with pytest.raises(InputError):
        images.registry_base_plan(defs["tc"])


def test_registry_hash_covers_the_digest(tmp_path: Path) -> None:
    write_tree(tmp_path, base=registry(f"docker.io/library/debian@{DIGEST}"))
    one = tags(tmp_path)
    write_tree(tmp_path, base=registry("docker.io/library/debian@sha256:" + "cd" * 32))
    assert tags(tmp_path)["base"] != one["base"]


# --------------------------------------------------------------------------- plans


def test_mmdebstrap_command() -> None:
    defs = images.load_definitions()
    base = defs["base-bookworm"]
    argv = images.mmdebstrap_command(base, Path("/tmp/out.tar"))
    assert argv[0] == "mmdebstrap"
    assert "--variant=essential" in argv and "--architectures=amd64" in argv
    assert "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert include.removeprefix("--include=").split(",") == list(base.packages)
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert "add_account builder 1000" in hooks[0]
    assert hooks[0].startswith('--customize-hook=ROOT="$1" sh -euc ')
    assert len(hooks) == 1 + len(base.customize)
    assert argv[-4:] == ["/tmp/out.tar", *base.mirrors]


def test_pip_download_command() -> None:
    defs = images.load_definitions()
    argv = images.pip_download_command(defs["diffoscope"], defs, Path("l.lock"), Path("d"),
                                       ["pip"])
    for flag in ("--no-deps", "--require-hashes", "--only-binary=:all:",
                 "--no-binary=diffoscope"):
        assert flag in argv
    assert argv[argv.index("--python-version") + 1] == "3.11"
    assert argv[argv.index("--platform") + 1].endswith("_x86_64")
    assert argv[-4:] == ["-r", "l.lock", "-d", "d"]
    python = images.pip_download_command(defs["python"], defs, Path("l"), Path("d"), ["pip"])
    assert not any(a.startswith("--no-binary") for a in python)


def test_layer_script_is_offline_and_checked() -> None:
    defs = images.load_definitions()
    script = images.layer_script(defs["python"], "pip-26.3-py3-none-any.whl")
    assert "/usr/bin/python3 -m venv --without-pip /opt/reprobuild/venv" in script
    assert "--no-index" in script and "--require-hashes" in script
    assert "pip-26.3-py3-none-any.whl/pip" in script
    assert "runtime contract broken" in script
    assert script.index("python -m build --version") < script.index("@@reprobuild-versions@@")


# --------------------------------------------------------------------------- helpers


def test_versions_block_parsing() -> None:
    out = ("noise\n@@reprobuild-versions@@\ndeb\tlibc6\t2.36\ndeb\tfile\t1:5.44-3\n"
           "pypi\tHatchling\t1.33.0\npypi\tfile\t9\n@@reprobuild-versions-end@@\n")
    versions = image_build._parse_versions(out)
    assert versions == {"libc6": "2.36", "file": "1:5.44-3", "hatchling": "1.33.0",
                        "pypi:file": "9"}
    assert json.loads(json.dumps(versions)) == versions
    with pytest.raises(EnvironmentFailure):
        image_build._parse_versions("nothing")


def test_apt_failure_names_the_package() -> None:
    lines = ["I: downloading", "E: Version '6.0-27' for 'unzip' was not found",
             "E: apt-get --yes install failed"]
    key, hint = image_build._apt_failure(lines)
    assert key == "E: Version '6.0-27' for 'unzip' was not found"
    assert "apt-cache policy unzip" in hint and "snapshot" in hint
    key, hint = image_build._apt_failure(["E: Unable to locate package nope"])
    assert "apt-cache policy nope" in hint


def test_upload_tar_is_deterministic() -> None:
    files = {"stage/b.whl": b"b", "stage/a.whl": b"a"}
    assert files_tar(files) == files_tar(dict(reversed(files.items())))


# --------------------------------------------------------------------------- build plans


def test_cold_plan_builds_the_bases_first_then_every_layer_at_once() -> None:
    defs = images.load_definitions()
    steps = images.plan_builds(defs, images.toolchain_names())
    assert [s.name for s in steps[:2]] == ["base-bookworm", "base-trixie"]
    assert {s.name for s in steps} == set(defs)
    for step in steps:
        defn = defs[step.name]
        assert step.tag == images.image_tag(defn, defs)
        assert step.base == ("" if defn.is_base else defn.base)
        assert step.downloads == len(defn.requirements)
    waves = images.build_waves(steps)
    assert waves == (("base-bookworm", "base-trixie"),
                     tuple(sorted(images.toolchain_names())))
    # rust waits only for base-trixie, every other layer for base-bookworm
    assert {s.name for s in steps if s.base == "base-trixie"} == {"rust"}


def test_plan_skips_what_is_ready() -> None:
    defs = images.load_definitions()
    one = images.plan_builds(defs, ["python"])
    assert [(s.name, s.base) for s in one] == [("base-bookworm", ""),
                                               ("python", "base-bookworm")]
    assert images.build_waves(one) == (("base-bookworm",), ("python",))
    warm_base = images.plan_builds(defs, ["python", "node", "rust"], ready={"base-bookworm"})
    assert [s.name for s in warm_base] == ["base-trixie", "node", "python", "rust"]
    assert images.build_waves(warm_base) == (("base-trixie", "node", "python"), ("rust",))
    assert images.plan_builds(defs, ["python"], ready={"python"}) == ()
    # asking twice, or for a base by name, plans it once
    assert [s.name for s in images.plan_builds(defs, ["python", "python", "base-bookworm"])] \
        == ["base-bookworm", "python"]


def test_plan_of_an_unknown_image_suggests_one() -> None:
    with pytest.raises(InputError) as info:
        images.plan_builds(images.load_definitions(), ["pyhton"])
    assert "no image definition named 'pyhton'" in info.value.message
    assert info.value.hint is not None and "python" in info.value.hint


def test_waves_of_a_throwaway_tree(tmp_path: Path) -> None:
    write_tree(tmp_path)
    (tmp_path / "tc2.toml").write_text(TOOLCHAIN + 'checks = ["true"]\n')
    defs = images.load_definitions(tmp_path)
    steps = images.plan_builds(defs, ["tc2", "tc"])
    assert images.build_waves(steps) == (("base",), ("tc", "tc2"))
    assert images.build_waves(images.plan_builds(defs, ["tc2", "tc"], ready={"base"})) \
        == (("tc", "tc2"),)


@pytest.mark.parametrize(("cpus", "jobs"), [(0, 1), (1, 1), (2, 2), (3, 3), (64, 3)])
def test_default_jobs(cpus: int, jobs: int) -> None:
    assert images.default_jobs(cpus) == jobs


def test_lock_text_round_trips() -> None:
    defs = images.load_definitions()
    for name in ("python", "diffoscope", "node"):
        requirements = defs[name].requirements
        text = images.lock_text(requirements)
        assert images.parse_lock(text.decode(), Path("x.lock")) == requirements
        assert images.parse_lock(images.lock_text(requirements[1:]).decode(),
                                 Path("x.lock")) == requirements[1:]
    assert images.lock_text([]) == b""


def test_board_says_each_state_and_what_each_image_waits_for() -> None:
    defs = images.load_definitions()
    steps = images.plan_builds(defs, ["python", "rust"])
    seen = RecordingProgress()
    board = image_build._Board(seen, steps, jobs=1)
    board.start()
    assert seen.steps == ["building 4 images, 1 at a time: base-bookworm, base-trixie, "
                          "python, rust"]
    board.set("base-bookworm", image_build.ImageState.BUILDING, "bootstrapping")
    board.set("python", image_build.ImageState.DOWNLOADING, "downloading 15 of 15")
    board.heartbeat(0.0)
    summary = seen.steps[-1]
    assert summary.startswith("images 0/4 built · building base-bookworm 0s · "
                              "downloading python 0s · waiting ")
    assert "base-trixie (for a slot)" in summary and "rust (for base-trixie)" in summary
    board.set("python", image_build.ImageState.WAITING, "downloaded")
    board.set("base-bookworm", image_build.ImageState.DONE, "ready")
    board.heartbeat(0.0)
    assert "python (for a slot)" in seen.steps[-1]
    assert seen.steps[-1].startswith("images 1/4 built")
    board.cancel_waiting()
    assert seen.details[0] == "base-bookworm: bootstrapping"
    assert re.fullmatch(r"python: downloaded in \d+\.\d s", seen.details[2])
    assert re.fullmatch(r"base-bookworm: ready after \d+\.\d s \(build \d+\.\d s\)",
                        seen.details[3])
    assert seen.details[-3:] == [d for d in seen.details if "not started" in d]
    assert {d.split(":")[0] for d in seen.details[-3:]} == {"base-trixie", "python", "rust"}
    timings = {t.name: t for t in board.timings()}
    assert timings["base-bookworm"].state is image_build.ImageState.DONE
    assert timings["base-bookworm"].download_s is None
    assert timings["python"].download_s is not None
    assert timings["rust"].state is image_build.ImageState.CANCELLED
    board.heartbeat(3600.0)  # not due: no new summary
    assert seen.steps[-1].startswith("images 1/4 built")


def test_rootfs_goes_to_memory_only_with_room_and_no_tmpdir(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert image_build._rootfs_tmpdir({"TMPDIR": "/somewhere"}) is None
    monkeypatch.setattr(image_build, "_ROOTFS_TMPFS", tmp_path / "absent")
    assert image_build._rootfs_tmpdir({}) is None
    monkeypatch.setattr(image_build, "_ROOTFS_TMPFS", tmp_path)
    monkeypatch.setattr(image_build, "_ROOTFS_TMPFS_NEEDS", 1)
    assert image_build._rootfs_tmpdir({}) == str(tmp_path)
    monkeypatch.setattr(image_build, "_ROOTFS_TMPFS_NEEDS", 1 << 62)
    assert image_build._rootfs_tmpdir({}) is None
