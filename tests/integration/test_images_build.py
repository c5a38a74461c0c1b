"""Building images concurrently: independent layers at once, the first failure stops the
rest, Ctrl-C too, and nothing is left on the engine.

The layers here are throwaway definitions on the shipped bookworm base (copied byte for
byte, so its tag is the engine's and it is never rebuilt): a venv with pip only and a check
that marks the image. A nonce in each check gives every run fresh tags; each test removes
the images it built.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from reprobuild import images
from reprobuild.errors import EnvironmentFailure, ExitCode
from reprobuild.images import build as image_build
from reprobuild.progress import RecordingProgress, SilentProgress

from .conftest import REPO_ROOT, managed_objects, run_cli, run_probe

pytestmark = pytest.mark.docker

CONTAINERS = REPO_ROOT / "containers"
LAYER = """\
kind = "toolchain"
description = "throwaway layer of test_images_build"
base = "base-bookworm"
python = "/usr/bin/python3"
python_version = "3.11"
lock = "pip.lock"
checks = [{check!r}]

[env]
PATH = "/opt/reprobuild/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""
MakeTree = Callable[[dict[str, str]], Path]


@pytest.fixture
def layers(client: docker.DockerClient, tmp_path: Path) -> Iterator[MakeTree]:
    """Write throwaway layer definitions (name -> check script); remove their images after."""
    image_build.ensure_image(client, "base-bookworm", progress=SilentProgress())
    tree = tmp_path / "containers"
    tree.mkdir()
    shutil.copyfile(CONTAINERS / "base-bookworm.toml", tree / "base-bookworm.toml")
    shutil.copyfile(CONTAINERS / "rust.lock", tree / "pip.lock")  # pip only
    nonce = uuid.uuid4().hex[:12]
    made: list[str] = []

    def make(checks: dict[str, str]) -> Path:
        for name, check in checks.items():
            (tree / f"{name}.toml").write_text(LAYER.format(check=f": {nonce}; {check}"))
            made.append(name)
        return tree

    yield make
    definitions = images.load_definitions(tree)
    for name in made:
        tag = images.image_tag(definitions[name], definitions)
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag)


def absent(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return True
    return False


def test_two_layers_build_at_once(client: docker.DockerClient, layers: MakeTree,
                                  no_leftovers: None) -> None:
    tree = layers({"tc-one": "sleep 3; echo one > /opt/reprobuild/marker",
                   "tc-two": "sleep 3; echo two > /opt/reprobuild/marker"})
    seen = RecordingProgress()
    result = image_build.ensure_images(client, ["tc-one", "tc-two"], progress=seen,
                                       definitions_dir=tree, jobs=2, heartbeat_s=1.0)
    # The base was found, not rebuilt; both layers were built, at the same time: each was
    # building before either was ready.
    assert [(t.name, t.state) for t in result.built] == [
        ("tc-one", image_build.ImageState.DONE), ("tc-two", image_build.ImageState.DONE)]
    assert seen.steps[0] == "building 2 images, 2 at a time: tc-one, tc-two"
    building = [i for i, line in enumerate(seen.details)
                if line.endswith(": installing its locked files offline on base-bookworm")]
    ready = [i for i, line in enumerate(seen.details) if " ready after " in line]
    assert len(building) == 2 and len(ready) == 2
    assert max(building) < min(ready), seen.details
    definitions = images.load_definitions(tree)
    for name, word in (("tc-one", "one"), ("tc-two", "two")):
        image = result.images[name]
        assert image.tag == images.image_tag(definitions[name], definitions)
        assert "pip" in dict(image.versions)
        code, output = run_probe(client, image.image_id, "cat /opt/reprobuild/marker")
        assert (code, output.strip()) == (0, word)
    again = image_build.ensure_images(client, ["tc-two", "tc-one"], progress=SilentProgress(),
                                      definitions_dir=tree)
    assert again.built == ()
    assert {n: i.image_id for n, i in again.images.items()} == \
        {n: i.image_id for n, i in result.images.items()}


def test_the_first_failure_cancels_the_rest(client: docker.DockerClient, layers: MakeTree,
                                            no_leftovers: None) -> None:
    tree = layers({"tc-bad": "sleep 2; echo 'the check broke' >&2; exit 3",
                   "tc-slow": "sleep 300"})
    definitions = images.load_definitions(tree)
    tags = {n: images.image_tag(definitions[n], definitions) for n in ("tc-bad", "tc-slow")}
    seen = RecordingProgress()
    with pytest.raises(EnvironmentFailure) as info:
        image_build.ensure_images(client, ["tc-slow", "tc-bad"], progress=seen,
                                  definitions_dir=tree, jobs=2)
    error = info.value
    assert error.exit_code == ExitCode.ENVIRONMENT
    assert f"building {tags['tc-bad']} failed (exit 3)" in error.message
    assert "the check broke" in error.message
    assert any(line.startswith("tc-bad: failed after ") for line in seen.details)
    assert any(line.startswith("tc-slow: cancelled after ") for line in seen.details), \
        seen.details
    # tc-slow's check sleeps 300 s: had it not been stopped, its image would exist by now
    # (the call returned), so cancelling is what ended it.
    assert absent(client, tags["tc-slow"]) and absent(client, tags["tc-bad"])


def test_ctrl_c_stops_every_build_and_removes_its_container(
        client: docker.DockerClient, layers: MakeTree, no_leftovers: None) -> None:
    tree = layers({"tc-slow": "sleep 300"})
    definitions = images.load_definitions(tree)
    tag = images.image_tag(definitions["tc-slow"], definitions)
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from reprobuild.images import build\nfrom reprobuild.sandbox.engine import connect\n"
        "class Say:\n"
        "    def step(self, m): print(m, flush=True)\n"
        "    def detail(self, m): print(m, flush=True)\n"
        "build.ensure_images(connect(), ['tc-slow'], progress=Say(),"
        " definitions_dir=Path(sys.argv[1]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tree)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not client.containers.list(
                all=True, filters={"label": "org.reprobuild.image=tc-slow"}):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the layer container never appeared"
            time.sleep(0.2)
        time.sleep(1)  # let it start its check
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert "tc-slow: cancelled after " in out
    assert client.containers.list(all=True,
                                  filters={"label": "org.reprobuild.image=tc-slow"}) == []
    assert managed_objects(client) == []
    assert absent(client, tag)


def test_cli_builds_nothing_when_warm_and_refuses_unknown_names() -> None:
    result = run_cli("images", "build", "python", "diffoscope", "python")
    assert result.code == 0, result.stderr
    definitions = images.load_definitions()
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["python", images.image_tag(definitions["python"], definitions)],
        ["diffoscope", images.image_tag(definitions["diffoscope"], definitions)]]
    assert "building" not in result.stderr
    wrong = run_cli("images", "build", "pyhton")
    assert wrong.code == ExitCode.BAD_INPUT
    assert "no image definition named 'pyhton'" in wrong.stderr
    assert "python" in wrong.stderr


def test_a_failure_stops_a_bootstrap_in_progress(
        client: docker.DockerClient, layers: MakeTree, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, no_leftovers: None) -> None:
    """mmdebstrap only waits for its children on SIGTERM; its whole process group is
    stopped, so it ends before its tarball and removes its chroot and mounts."""
    tree = layers({"tc-bad": "exit 4"})
    text = (CONTAINERS / "base-bookworm.toml").read_text()
    (tree / "base-throwaway.toml").write_text(
        text.replace("customize = [\n", f"customize = [\n    ': {uuid.uuid4().hex}',\n", 1))
    chroots = tmp_path / "chroots"
    chroots.mkdir()
    monkeypatch.setenv("TMPDIR", str(chroots))  # mmdebstrap's chroot goes here, not /dev/shm
    definitions = images.load_definitions(tree)
    base_tag = images.image_tag(definitions["base-throwaway"], definitions)
    seen = RecordingProgress()
    with pytest.raises(EnvironmentFailure, match=r"tc-bad:[0-9a-f]{16} failed \(exit 4\)"):
        image_build.ensure_images(client, ["base-throwaway", "tc-bad"], progress=seen,
                                  definitions_dir=tree, jobs=2)
    said = [line for line in seen.details if line.startswith("base-throwaway: ")]
    assert any(line.startswith("base-throwaway: cancelled after ") for line in said), said
    assert not any("I: creating tarball" in line for line in said), said
    assert list(chroots.iterdir()) == []
    assert str(chroots) not in Path("/proc/self/mounts").read_text()
    assert absent(client, base_tag)
