"""Integration tests: a real Docker engine, the real toolchain images, the real CLI.

Every test here is marked ``docker``. They fail (not skip) when no engine is reachable:
CI starts one in ``.ci/run``, and a silently skipped suite would prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from reprobuild import images
from reprobuild.images import build as image_build
from reprobuild.progress import SilentProgress
from reprobuild.sandbox.engine import MANAGED, ROLE, RUN

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fixture",
    "GIT_AUTHOR_EMAIL": "fixture@reprobuild.invalid",
    "GIT_COMMITTER_NAME": "Fixture",
    "GIT_COMMITTER_EMAIL": "fixture@reprobuild.invalid",
    "GIT_AUTHOR_DATE": "2026-01-02T03:04:05+00:00",
    "GIT_COMMITTER_DATE": "2026-01-02T03:04:05+00:00",
}


SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="session", autouse=True)
def _fetch_phase_trusts_the_system_store() -> None:
    """Hand the host's trust store to the fetch phase, as scripts/setup.sh does.

    Registries may sit behind an intercepting proxy (this workplace's do); containers
    trust only what reprobuild hands them (--ca-cert / REPROBUILD_CA_CERT).
    """
    if "REPROBUILD_CA_CERT" not in os.environ and SYSTEM_CA.is_file():
        os.environ["REPROBUILD_CA_CERT"] = str(SYSTEM_CA)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def client() -> docker.DockerClient:
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"integration tests need a Docker engine ({exc}); run ./scripts/setup.sh")
    return engine


@pytest.fixture(scope="session")
def toolchains(client: docker.DockerClient) -> dict[str, images.ToolchainImage]:
    """Build (or find cached) the images the checks use, once per session."""
    return {name: image_build.ensure_image(client, name, progress=SilentProgress())
            for name in ("python", "diffoscope")}


def managed_objects(client: docker.DockerClient) -> list[str]:
    """Containers, volumes and networks that reprobuild runs created and did not remove."""
    wanted: dict[str, str | list[str] | bool] = {"label": [f"{MANAGED}=true", RUN]}
    found = [f"container {c.attrs['Names'][0].lstrip('/')}"
             for c in client.containers.list(all=True, filters=wanted, sparse=True)
             if (c.attrs.get("Labels") or {}).get(RUN)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=wanted)
              if (v.attrs.get("Labels") or {}).get(RUN)]
    found += [f"network {n.name}" for n in client.networks.list(filters=wanted)
              if (n.attrs.get("Labels") or {}).get(RUN)]
    return found


@pytest.fixture
def no_leftovers(client: docker.DockerClient) -> Iterator[None]:
    """Fail the test if it leaves any reprobuild container or volume behind."""
    yield
    deadline = time.monotonic() + 10
    while managed_objects(client) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert managed_objects(client) == []


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


def make_repo(tmp_path: Path, fixture: str, *, probe: str | None = None,
              name: str = "repo") -> Path:
    """Copy a fixture into a fresh git repository with a fixed commit date."""
    repo = tmp_path / name
    shutil.copytree(FIXTURES / fixture, repo)
    if probe is not None:
        (repo / "PROBE").write_text(probe + "\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"fixture {fixture} {probe or ''}")
    return repo


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str
    seconds: float
    report: dict[str, Any] | None


def run_cli(*args: str, json_path: Path | None = None, timeout: float = 900) -> CliResult:
    """Run the real CLI in a subprocess, as a user or a CI job would."""
    argv = [sys.executable, "-m", "reprobuild", *args]
    if json_path is not None:
        argv += ["--json", str(json_path)]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT, check=False)
    seconds = time.monotonic() - started
    report = None
    if json_path is not None and json_path.exists():
        report = json.loads(json_path.read_text())
    return CliResult(proc.returncode, proc.stdout, proc.stderr, seconds, report)


def run_probe(client: docker.DockerClient, image_id: str, script: str, *, uid: int = 1000,
              env: dict[str, str] | None = None, tmpfs: dict[str, str] | None = None,
              labels: dict[str, str] | None = None,
              timeout: float = 180) -> tuple[int, str]:
    """Run ``sh -c script`` in a throwaway container hardened like a build (no network,
    read-only root, no capabilities); return (exit code, output); always remove it."""
    container = None
    try:
        container = client.containers.create(
            image_id, command=["/bin/sh", "-c", script], user=f"{uid}:{uid}",
            network_mode="none", read_only=True, cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"], environment=env or {},
            tmpfs=tmpfs or {"/tmp": "size=64m,exec"},
            labels=labels or {"org.reprobuild.role": "test-probe"}, detach=True)
        container.start()
        deadline = time.monotonic() + timeout
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                break
            assert time.monotonic() < deadline, f"probe timed out: {script}"
            time.sleep(0.2)
        code = int(container.attrs["State"]["ExitCode"])
        output = container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
        return code, output
    finally:
        if container is not None:
            container.remove(force=True)


def wait_for_build_b(client: docker.DockerClient, *, timeout: float,
                     log: str | None = None) -> None:
    """Return once build B's sandbox runs (and its agent's log holds ``log``); fail the
    test if that does not happen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = client.containers.list(filters={"label": [f"{MANAGED}=true",
                                                            f"{ROLE}=build-b"]})
        if running and (log is None or log.encode()
                        in running[0].logs(stdout=True, stderr=False)):
            return
        time.sleep(0.2)
    pytest.fail("the build never started")


def check_on_small_tmpfs(small: Path, size: str, args: str,
                         env: str = "") -> subprocess.CompletedProcess[str]:
    """``reprobuild check ARGS`` in a private mount namespace where ``small`` (made here)
    is a tmpfs of ``size``, so a test can fill a disk without touching the host's; ``env``
    is ``NAME=value`` words for the command."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("this test needs root and unshare(1) to mount a small tmpfs")
    small.mkdir()
    script = (f"mount -t tmpfs -o size={size} tmpfs {small} && "
              f"{env + ' ' if env else ''}exec {sys.executable} -m reprobuild check {args}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
