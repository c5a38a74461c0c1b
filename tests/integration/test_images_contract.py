"""The toolchain images really satisfy the runtime contract the sandbox relies on.

Each probe runs in a throwaway container hardened like a build (no network, uid 1000,
read-only root, no capabilities), so what passes here is what a build will see.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from reprobuild import images
from reprobuild.images import build as image_build
from reprobuild.progress import SilentProgress

from .conftest import run_probe

pytestmark = pytest.mark.docker

PROBE_LABELS = {"org.reprobuild.role": "test-probe"}
ZIPS = """
import zipfile
for tag, body in (("a", "one\\n"), ("b", "two\\n")):
    with zipfile.ZipFile(f"/tmp/demo-{tag}.zip", "w") as z:
        z.writestr("demo/same.txt", "same\\n")
        z.writestr("demo/changed.txt", body)
"""


@pytest.fixture(scope="module")
def python_image(client: docker.DockerClient) -> images.ToolchainImage:
    return image_build.ensure_image(client, "python", progress=SilentProgress())


@pytest.fixture(scope="module")
def diffoscope_image(client: docker.DockerClient) -> images.ToolchainImage:
    return image_build.ensure_image(client, "diffoscope", progress=SilentProgress())


def run(client: docker.DockerClient, image: images.ToolchainImage, script: str, *,
        env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    """Run ``sh -c script`` like a build would run, and always remove the container."""
    return run_probe(client, image.image_id, script, env=env, timeout=timeout,
                     tmpfs={"/tmp": "size=64m,exec", "/home/builder": "size=16m"},
                     labels=PROBE_LABELS)


def ok(client: docker.DockerClient, image: images.ToolchainImage, script: str, *,
       env: dict[str, str] | None = None) -> str:
    code, output = run(client, image, script, env=env)
    assert code == 0, output
    return output


@pytest.fixture(autouse=True)
def _no_probe_left(client: docker.DockerClient) -> Iterator[None]:
    yield
    left = client.containers.list(all=True, filters={"label": "org.reprobuild.role=test-probe"})
    assert left == []


def test_python_resolves_to_the_venv(client: docker.DockerClient,
                                     python_image: images.ToolchainImage) -> None:
    assert python_image.path_env.startswith("/opt/reprobuild/venv/bin:")
    out = ok(client, python_image, "command -v python; command -v python3; "
             "python -c 'import sys; print(sys.prefix, sys.version_info[:2])'")
    assert out.splitlines() == ["/opt/reprobuild/venv/bin/python",
                                "/opt/reprobuild/venv/bin/python3",
                                "/opt/reprobuild/venv (3, 11)"]


def test_build_tools_are_there(client: docker.DockerClient,
                               python_image: images.ToolchainImage) -> None:
    versions = dict(python_image.versions)
    out = ok(client, python_image, "python -m build --version")
    assert versions["build"] in out
    out = ok(client, python_image, "python -c 'import hatchling, importlib.metadata as m; "
             "print(m.version(\"hatchling\"))'")
    assert out.strip() == versions["hatchling"]


def test_users_exist(client: docker.DockerClient, python_image: images.ToolchainImage) -> None:
    out = ok(client, python_image, "getent passwd builder rebuilder; getent group builder "
             "rebuilder; id -u; id -un")
    lines = out.splitlines()
    fields = [line.split(":") for line in lines[:2]]
    assert [(f[0], f[2], f[3], f[5]) for f in fields] == [
        ("builder", "1000", "1000", "/home/builder"),
        ("rebuilder", "2000", "2000", "/home/rebuilder")]
    assert [line.split(":")[2] for line in lines[2:4]] == ["1000", "2000"]
    assert lines[4:] == ["1000", "builder"]


def test_locales_and_timezone(client: docker.DockerClient,
                              python_image: images.ToolchainImage) -> None:
    ok(client, python_image, "python -c \"import locale; "
       "locale.setlocale(locale.LC_ALL, 'et_EE.UTF-8'); "
       "assert sorted(['t', 'z', 's'], key=locale.strxfrm) == ['s', 'z', 't']\"")
    for name in ("C.UTF-8", "en_US.UTF-8"):
        ok(client, python_image, f"python -c \"import locale; "
           f"locale.setlocale(locale.LC_ALL, '{name}')\"")
    out = ok(client, python_image, "date +%z", env={"TZ": "Etc/GMT-14"})
    assert out.strip() == "+1400"


def test_faketime_shifts_the_clock(client: docker.DockerClient,
                                   python_image: images.ToolchainImage) -> None:
    out = ok(client, python_image, "date +%s; LD_PRELOAD=/opt/reprobuild/lib/libfaketime.so.1 "
             "FAKETIME=+398d date +%s; readlink /opt/reprobuild/lib/libfaketime.so.1")
    real, shifted, target = out.split()
    assert abs(int(shifted) - int(real) - 398 * 86400) < 60
    assert target.endswith("/faketime/libfaketime.so.1")


def test_labels_carry_versions(client: docker.DockerClient,
                               python_image: images.ToolchainImage) -> None:
    labels = client.images.get(python_image.image_id).labels
    assert labels["org.reprobuild.managed"] == "true"
    assert labels["org.reprobuild.image"] == "python"
    assert labels["org.reprobuild.definition"] == python_image.definition_sha256
    versions = json.loads(labels["org.reprobuild.versions"])
    assert versions == dict(python_image.versions)
    assert versions["python3.11"].startswith("3.11.")
    for name in ("libc6", "tzdata", "libfaketime", "pip", "build", "hatchling", "setuptools"):
        assert versions[name], name
    defs = images.load_definitions()
    assert python_image.tag == images.image_tag(defs["python"], defs)


def test_second_ensure_is_a_no_op(client: docker.DockerClient,
                                  python_image: images.ToolchainImage) -> None:
    started = time.monotonic()
    again = image_build.ensure_image(client, "python", progress=SilentProgress())
    elapsed = time.monotonic() - started
    assert again == python_image
    assert elapsed < 1.0, f"warm ensure_image took {elapsed:.2f} s"


def test_listed_as_current(client: docker.DockerClient,
                           python_image: images.ToolchainImage) -> None:
    listed = {info.tag: info for info in image_build.list_images(client)}
    info = listed[python_image.tag]
    assert info.current and info.image_id == python_image.image_id and info.size > 0


def test_diffoscope_names_the_differing_member(client: docker.DockerClient,
                                               diffoscope_image: images.ToolchainImage) -> None:
    code, out = run(client, diffoscope_image,
                    f"python3 -c '{ZIPS}' && diffoscope --text - /tmp/demo-a.zip /tmp/demo-b.zip")
    assert code == 1, out  # diffoscope: 1 means "differences found"
    assert "demo/changed.txt" in out
    assert "-one" in out and "+two" in out
    assert "├── demo/same.txt" not in out
