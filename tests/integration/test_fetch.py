"""The fetch phase against the real registries, a real engine and the real toolchain images.

Attack destinations are reserved names only (``*.example``); the proxy must refuse them
without resolving or connecting, which a host packet capture checks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path
from typing import cast

import docker
import pytest

from reprobuild import ecosystems, fetch, images
from reprobuild.archive import FileOrder, build_tar
from reprobuild.ecosystems.interface import FetchPlan
from reprobuild.ecosystems.python import frontend_source as python_frontend_source
from reprobuild.ecosystems.python.pep import parse_version
from reprobuild.errors import DependencyIntegrityError, Interrupted
from reprobuild.fetch import FetchedDeps, FetchLimits, plan_fetch, runner
from reprobuild.images import build as image_build
from reprobuild.progress import SilentProgress
from reprobuild.recipes import Recipe, builtin_recipes
from reprobuild.sandbox.engine import ROLE, RUN, RunLabels
from reprobuild.source import SourceTree, acquire

from .conftest import FIXTURES, git
from .hostcapture import HostCapture, leaks

CA = Path("/etc/ssl/certs/ca-certificates.crt")
ATTACKER = "registry.attacker.example"

HATCH_PROJECT = {
    "pyproject.toml": """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fetch-demo-server"
version = "0.1.0"

[tool.hatch.build.targets.wheel]
packages = ["src/fetch_demo"]
""",
    "src/fetch_demo/__init__.py": "VALUE = 1\n",
}
# The newest hatchling and its dependencies as of 2026-01-02 (the fixture commit's date),
# with the sha256 of the wheels PyPI serves; files on PyPI never change.
HATCH_LOCK = """hatchling==1.28.0 \\
    --hash=sha256:dc48722b68b3f4bbfa3ff618ca07cdea6750e7d03481289ffa8be1521d18a961
packaging==25.0 \\
    --hash=sha256:29572ef2b1f17581046b3a2227d5c611fb25ec70ca1ba8554b24b0e69331a484
pathspec==0.12.1 \\
    --hash=sha256:a0d503e138a4c123b27490a4f7beda6a01c6f288df0e4a8b79c7eb0dc7b4cc08
pluggy==1.6.0 \\
    --hash=sha256:e920276dd6813095e9377c0bc5566d94c932c33b27a3e3945d8389c374dd4746
trove-classifiers==2025.12.1.14 \\
    --hash=sha256:a8206978ede95937b9959c3aff3eb258bbf7b07dff391ddd4ea7e61f316635ab
"""
IS_NUMBER_REAL = ("sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cG"
                  "vNp6NZWZUBlbGXYxxng==")
IS_NUMBER_CLAIMED = ("sha512-rXu0IiqJ9mCR7Pq3IzkOSjbmAznp9sdZBP0ywKffcMqNZQRuOj4jGhAC5SGjT6OmFo"
                     "U3Az3nHkpNjhtyU/U0qw==")


@pytest.fixture(scope="session")
def python_image(client: docker.DockerClient) -> images.ToolchainImage:
    return image_build.ensure_image(client, "python", progress=SilentProgress())


@pytest.fixture(scope="session")
def node_image(client: docker.DockerClient) -> images.ToolchainImage:
    return image_build.ensure_image(client, "node", progress=SilentProgress())


def commit(repo: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fixture")
    return repo


def source(repo: Path, tmp_path: Path, subdir: str | None = None) -> SourceTree:
    return acquire(str(repo), ref=None, subdir=subdir, workdir=tmp_path)


def recipe(strategy: str, *, image: str, lock: str | None = None) -> Recipe:
    base = builtin_recipes()["python"]
    return Recipe(**{**base.__dict__, "image": image, "fetch_strategy": strategy,
                     "fetch_lock": lock})


def run_fetch(client: docker.DockerClient, tree: SourceTree, rec: Recipe,
              toolchain: images.ToolchainImage, cache: Path, *,
              cancel: threading.Event | None = None,
              limits: FetchLimits | None = None) -> FetchedDeps:
    return fetch.fetch(client, RunLabels.new(), plan=plan_of(tree, rec, toolchain),
                       toolchain=toolchain, ca_cert=CA, cache_dir=cache,
                       progress=SilentProgress(), cancel=cancel or threading.Event(),
                       limits=limits)


def plan_of(tree: SourceTree, rec: Recipe, toolchain: images.ToolchainImage) -> FetchPlan:
    return plan_fetch(tree, strategy=rec.fetch_strategy, origin=rec.origin,
                      lock=rec.fetch_lock, toolchain=toolchain)


def run_offline(client: docker.DockerClient, toolchain: images.ToolchainImage, stdin: bytes,
                script: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``script`` like a build: no network, non-root, read-only, stdin = tar stream."""
    api = client.api
    opts = "exec,nosuid,nodev,uid=1000,gid=1000,mode=0755"
    host_config = api.create_host_config(
        network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        read_only=True,
        tmpfs=dict.fromkeys(("/w", "/deps", "/tmp", "/home/builder"), f"size=1024m,{opts}"))
    config = api.create_container_config(
        toolchain.image_id, ["/bin/sh", "-euc", script], user="1000:1000", stdin_open=True,
        environment={"HOME": "/home/builder", "PATH": toolchain.path_env, **env},
        labels=RunLabels.new().for_role("fetch-test-build"), host_config=host_config)
    config["StdinOnce"] = True
    cid: str = api.create_container_from_config(config)["Id"]  # type: ignore[no-untyped-call]
    try:
        sock = api.attach_socket(cid, params={"stdin": 1, "stream": 1})
        api.start(cid)
        raw: socket.socket = sock._sock
        with contextlib.suppress(OSError):
            raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)
        sock.close()
        raw.close()
        code = int(api.wait(cid, timeout=600)["StatusCode"])
        return code, api.logs(cid).decode("utf-8", "replace")
    finally:
        api.remove_container(cid, force=True, v=True)


def explode() -> docker.DockerClient:
    """A client that fails on any use: a cache hit must not touch Docker at all."""
    return cast(docker.DockerClient, object())


def wheels_in(archive: Path) -> dict[str, str]:
    with tarfile.open(archive) as tar:
        found = {}
        for member in tar:
            assert member.isfile() or member.isdir(), member.name
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                found[member.name] = hashlib.sha256(handle.read()).hexdigest()
    return found


# --------------------------------------------------------------------------- python


def test_python_build_fetch_resolves_as_of_the_commit_and_builds_offline(
        tmp_path: Path, client: docker.DockerClient, python_image: images.ToolchainImage,
        no_leftovers: None) -> None:
    repo = commit(tmp_path / "repo", HATCH_PROJECT)
    tree = source(repo, tmp_path / "work")
    cache = tmp_path / "cache"
    rec = recipe("python-build", image="python")

    cold = run_fetch(client, tree, rec, python_image, cache)
    assert cold.failure is None and not cold.cache_hit and cold.archive is not None
    pins = dict(cold.pins)
    assert {"hatchling", "packaging", "pathspec", "pluggy", "trove-classifiers"} <= set(pins)
    # Resolved as of 2026-01-02: older than the hatchling the toolchain image locked later.
    newest = dict(python_image.versions)["hatchling"]
    assert parse_version(pins["hatchling"]) < parse_version(newest)
    members = wheels_in(cold.archive)
    files = {n: h for n, h in members.items() if n.startswith("wheels/")}
    assert files and all(n.endswith(".whl") for n in files)
    # The prepared environment: those wheels installed into a venv, and the frontend.
    frontend = "frontend/reprobuild-pep517.py"
    assert set(members) - set(files) - {frontend} == {n for n in members
                                                      if n.startswith("env/")}
    assert members[frontend] == hashlib.sha256(python_frontend_source()).hexdigest()
    site = "env/lib/python3.11/site-packages"
    assert "env/pyvenv.cfg" in members
    assert f"{site}/hatchling-{pins['hatchling']}.dist-info/RECORD" in members
    hashes = dict(cold.hashes)
    assert len(hashes) == len(files) == len(pins)
    assert sorted(f"sha256:{h}" for h in files.values()) == sorted(hashes.values())
    assert cold.env == ecosystems.get("python-build").build_env(plan_of(tree, rec, python_image))
    assert ("PIP_FIND_LINKS", "/deps/wheels") in cold.env
    allowed = {h for h, _ in ecosystems.get("python-build").allow_list}
    assert cold.requests and all(r.allowed and r.status == 200 and r.host in allowed
                                 for r in cold.requests)
    assert fetch.replay_lock(cold).count("--hash=sha256:") == len(files)

    warm = run_fetch(explode(), tree, rec, python_image, cache)
    assert warm.cache_hit and warm.requests == () and warm.failure is None
    assert warm.archive == cold.archive and warm.pins == cold.pins and warm.key == cold.key

    # The build phase's contract: source tar, then the deps tar, on one stdin; offline.
    assert tree.commit_time is not None
    stream = build_tar(tree.entries, order=FileOrder.SORTED, mtime=tree.commit_time)
    stream += cold.archive.read_bytes()
    code, log = run_offline(
        client, python_image, stream,
        "tar -x -f - -C /w; tar -x -f - -C /deps; cd /w; "
        "python -m build --outdir /tmp/out . && ls /tmp/out && "
        "python /deps/frontend/reprobuild-pep517.py --outdir /tmp/out2 . && "
        "sha256sum /tmp/out/* /tmp/out2/* && /deps/env/bin/python -c "
        "'import sys; print(\"PATH\", sys.path)'", dict(cold.env))
    assert code == 0, log
    assert "Successfully built fetch_demo_server-0.1.0.tar.gz and fetch_demo_server-0.1.0-" \
        in log, log
    assert f"hatchling=={pins['hatchling']}" in log, log
    # The frontend builds the same bytes in the prepared env, which sees only the pins.
    digests = {path: digest for digest, path in (line.split() for line in log.splitlines()
                                                 if re.fullmatch(r"[0-9a-f]{64}  \S+", line))}
    built = {p.removeprefix("/tmp/out/"): d for p, d in digests.items()
             if p.startswith("/tmp/out/")}
    assert len(built) == 2 and any(n.endswith(".whl") for n in built), log
    assert {p.removeprefix("/tmp/out2/"): d for p, d in digests.items()
            if p.startswith("/tmp/out2/")} == built, log
    path_line = next(line for line in log.splitlines() if line.startswith("PATH "))
    assert "/deps/env/lib/python3.11/site-packages" in path_line
    assert "/opt/reprobuild" not in path_line and "dist-packages" not in path_line


def test_python_hashed_lock_is_honoured_and_a_tampered_hash_is_caught(
        tmp_path: Path, client: docker.DockerClient, python_image: images.ToolchainImage,
        no_leftovers: None) -> None:
    repo = commit(tmp_path / "repo", {**HATCH_PROJECT, "build.lock": HATCH_LOCK})
    rec = recipe("python-build", image="python", lock="build.lock")
    good = run_fetch(client, source(repo, tmp_path / "w1"), rec, python_image,
                     tmp_path / "cache")
    assert good.failure is None and dict(good.pins)["hatchling"] == "1.28.0"
    assert good.archive is not None
    assert "dc48722b68b3f4bbfa3ff618ca07cdea6750e7d03481289ffa8be1521d18a961" in \
        wheels_in(good.archive).values()

    tampered = HATCH_LOCK.replace("sha256:a0d503e1", "sha256:b0d503e1")
    commit(repo, {"build.lock": tampered})
    with pytest.raises(DependencyIntegrityError) as info:
        run_fetch(client, source(repo, tmp_path / "w2"), rec, python_image, tmp_path / "cache")
    error = info.value
    assert error.package == "pathspec==0.12.1"
    assert error.expected.startswith("sha256:b0d503e1")
    assert error.actual.startswith("sha256:a0d503e1")
    assert "pathspec==0.12.1 does not match build.lock" in error.message


def test_an_index_off_the_allow_list_is_refused_without_any_packet(
        tmp_path: Path, client: docker.DockerClient, python_image: images.ToolchainImage,
        no_leftovers: None) -> None:
    lock = f"--index-url https://{ATTACKER}/simple\n" + HATCH_LOCK
    repo = commit(tmp_path / "repo", {**HATCH_PROJECT, "build.lock": lock})
    rec = recipe("python-build", image="python", lock="build.lock")
    capture = HostCapture(tmp_path / "host.pcap", [])
    try:
        result = run_fetch(client, source(repo, tmp_path / "w"), rec, python_image,
                           tmp_path / "cache")
    finally:
        packets = capture.stop()
    assert result.archive is None and result.failure is not None
    assert f"{ATTACKER}:443" in result.failure and "allow-list" in result.failure
    refused = [r for r in result.requests if not r.allowed]
    assert refused and all(r.host == ATTACKER and r.status == 403 and r.method == "CONNECT"
                           for r in refused)
    assert leaks(packets, [], ["attacker"]) == [], "the name was never even resolved"
    assert not (tmp_path / "cache" / "deps").exists() or \
        not list((tmp_path / "cache" / "deps").glob("*.tar")), "a failed fetch is not cached"


# --------------------------------------------------------------------------- npm


def npm_project(tmp_path: Path, integrity: str, resolved: str | None = None) -> Path:
    repo = tmp_path / "npm"
    shutil.copytree(FIXTURES / "tampered-lock", repo)
    lock = json.loads((repo / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/is-number"]
    entry["integrity"] = integrity
    if resolved:
        entry["resolved"] = resolved
    (repo / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
    return commit(repo, {})


def test_npm_fetch_caches_exactly_the_lockfile_and_installs_offline(
        tmp_path: Path, client: docker.DockerClient, node_image: images.ToolchainImage,
        no_leftovers: None) -> None:
    repo = npm_project(tmp_path, IS_NUMBER_REAL)
    tree = source(repo, tmp_path / "w")
    rec = recipe("npm", image="node")
    cold = run_fetch(client, tree, rec, node_image, tmp_path / "cache")
    assert cold.failure is None and cold.archive is not None, cold.failure
    assert cold.pins == (("is-number", "7.0.0"),)
    assert cold.requests and all(r.allowed and r.host == "registry.npmjs.org"
                                 for r in cold.requests)
    with tarfile.open(cold.archive) as tar:
        names = tar.getnames()
    digest = base64.b64decode(IS_NUMBER_REAL.removeprefix("sha512-")).hex()
    content = f"npm-cache/_cacache/content-v2/sha512/{digest[:2]}/{digest[2:4]}/"
    assert any(n.startswith(content) for n in names), names
    assert not any("_logs" in n for n in names)

    warm = run_fetch(explode(), tree, rec, node_image, tmp_path / "cache")
    assert warm.cache_hit and warm.requests == () and warm.archive == cold.archive

    assert tree.commit_time is not None
    stream = build_tar(tree.entries, order=FileOrder.SORTED, mtime=tree.commit_time)
    stream += cold.archive.read_bytes()
    code, log = run_offline(
        client, node_image, stream,
        "tar -x -f - -C /w; tar -x -f - -C /deps; cd /w; npm ci --ignore-scripts; "
        "node -e 'console.log(\"positive:\", require(\"./index.js\")(3))'", dict(cold.env))
    assert code == 0, log
    assert "positive: true" in log


def test_npm_tampered_integrity_names_the_package(
        tmp_path: Path, client: docker.DockerClient, node_image: images.ToolchainImage,
        no_leftovers: None) -> None:
    repo = tmp_path / "fixture"
    shutil.copytree(FIXTURES / "tampered-lock", repo)
    commit(repo, {})
    with pytest.raises(DependencyIntegrityError) as info:
        run_fetch(client, source(repo, tmp_path / "w"), recipe("npm", image="node"),
                  node_image, tmp_path / "cache")
    error = info.value
    assert error.package == "is-number@7.0.0"
    assert (error.expected, error.actual) == (IS_NUMBER_CLAIMED, IS_NUMBER_REAL)
    assert "is-number@7.0.0" in error.message and "package-lock.json" in error.message


def test_npm_resolved_url_off_the_allow_list_is_refused(
        tmp_path: Path, client: docker.DockerClient, node_image: images.ToolchainImage,
        no_leftovers: None) -> None:
    repo = npm_project(tmp_path, IS_NUMBER_REAL,
                       f"https://{ATTACKER}/is-number/-/is-number-7.0.0.tgz")
    capture = HostCapture(tmp_path / "host.pcap", [])
    try:
        result = run_fetch(client, source(repo, tmp_path / "w"), recipe("npm", image="node"),
                           node_image, tmp_path / "cache")
    finally:
        packets = capture.stop()
    assert result.archive is None and result.failure is not None
    assert f"{ATTACKER}:443" in result.failure
    assert [(r.host, r.allowed, r.status) for r in result.requests][:1] == [
        (ATTACKER, False, 403)]
    assert leaks(packets, [], ["attacker"]) == []


# --------------------------------------------------------------------------- isolation


PROBE = """
echo "NET $(ls /sys/class/net | tr '\\n' ' ')"
echo "ID $(id -u):$(id -g) $(grep CapEff /proc/self/status)"
python3 -I -S -c '
import socket
try:
    socket.getaddrinfo("pypi.org", 443)
    print("DNS resolved")
except OSError as exc:
    print("DNS failed", exc.errno)
try:
    socket.create_connection(("pypi.org", 443), timeout=5)
    print("DIRECT connected")
except OSError as exc:
    print("DIRECT failed")
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT pypi.org:443 HTTP/1.1\\r\\n\\r\\n")
print("RELAY", s.recv(100).split(b"\\r\\n")[0].decode())
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT 203.0.113.9:443 HTTP/1.1\\r\\n\\r\\n")
print("RAWIP", s.recv(100).split(b"\\r\\n")[0].decode())
'
touch /probe-root 2>/dev/null && echo "ROOT writable" || echo "ROOT read-only"
exit 7
"""


def test_the_fetch_container_has_no_network_but_the_proxy(
        tmp_path: Path, client: docker.DockerClient, python_image: images.ToolchainImage,
        monkeypatch: pytest.MonkeyPatch, no_leftovers: None) -> None:
    monkeypatch.setattr(runner, "fetch_script",
                        lambda _eco, _plan: runner.script_head() + PROBE)
    repo = commit(tmp_path / "repo", HATCH_PROJECT)
    result = run_fetch(client, source(repo, tmp_path / "w"),
                       recipe("python-build", image="python"), python_image,
                       tmp_path / "cache")
    assert result.failure is not None and "203.0.113.9:443" in result.failure
    out = result.log
    assert "NET lo \n" in out and "eth" not in out, out
    assert "ID 1000:1000 CapEff:\t0000000000000000" in out, out
    assert "DNS failed" in out and "DIRECT failed" in out, out
    assert "RELAY HTTP/1.1 200 Connection established" in out, out
    assert "RAWIP HTTP/1.1 403 Forbidden" in out and "ROOT read-only" in out, out
    assert [(r.host, r.allowed) for r in result.requests] == [("pypi.org", True),
                                                              ("203.0.113.9", False)]


def test_cancel_and_timeout_remove_everything(
        tmp_path: Path, client: docker.DockerClient, python_image: images.ToolchainImage,
        monkeypatch: pytest.MonkeyPatch, no_leftovers: None) -> None:
    monkeypatch.setattr(runner, "fetch_script",
                        lambda _eco, _plan: runner.script_head() + "sleep 120")
    repo = commit(tmp_path / "repo", HATCH_PROJECT)
    tree = source(repo, tmp_path / "w")
    rec = recipe("python-build", image="python")

    timed = run_fetch(client, tree, rec, python_image, tmp_path / "cache",
                      limits=FetchLimits(timeout_s=3))
    assert timed.failure == "the fetch timed out" and timed.archive is None

    cancel = threading.Event()
    labels = RunLabels.new()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fetch.fetch(client, labels, plan=plan_of(tree, rec, python_image),
                        toolchain=python_image, ca_cert=None, cache_dir=tmp_path / "cache",
                        progress=SilentProgress(), cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 60
    while not running_fetch(client, labels.run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_fetch(client, labels.run_id)
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Interrupted), errors
    assert client.containers.list(all=True, filters={"label": f"{RUN}={labels.run_id}"}) == []
    assert client.volumes.list(filters={"label": f"{RUN}={labels.run_id}"}) == []


def running_fetch(client: docker.DockerClient, run_id: str) -> bool:
    found = client.containers.list(filters={"label": [f"{RUN}={run_id}", f"{ROLE}=fetch"]})
    return bool(found)

