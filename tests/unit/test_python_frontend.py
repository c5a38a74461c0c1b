"""The Python recipe's PEP 517 frontend, run for real on this host (no Docker).

A project with an in-tree backend (``backend-path``) needs nothing installed, so a bare
venv stands in for the prepared env at ``/deps/env``. The backend records which process
and directory served each hook, which is what the frontend's shared backend process
changes: the hooks of one distribution share a process, the sdist's and the wheel's do not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

FRONTEND = Path(__file__).resolve().parents[2] / "reprobuild" / "ecosystems" / "python" / \
    "frontend.py"

BACKEND = r'''
import json, os, sys, tarfile, zipfile, io

LOG = os.environ["HOOK_LOG"]
# As poetry-core does: vendored packages go on sys.path when the backend is imported, and
# every hook must still find them (the backend is imported once per process).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor"))
os.environ["DEMO_IMPORTED"] = "yes"


def _note(hook, **extra):
    with open(LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps({"hook": hook, "pid": os.getpid(), "cwd": os.getcwd(),
                              "meta_path": len(sys.meta_path), "path": sys.path,
                              "marker": os.environ.get("LEAK"), **extra}) + "\n")
    os.environ["LEAK"] = hook  # a hook that changes the environment must not leak it


def get_requires_for_build_sdist(config_settings=None):
    _note("get_requires_for_build_sdist")
    if os.environ.get("WANT_EXTRA"):
        return ["definitely-not-installed>=1"]
    return []


def get_requires_for_build_wheel(config_settings=None):
    _note("get_requires_for_build_wheel")
    return []


def build_sdist(sdist_directory, config_settings=None):
    import vendored  # from _vendor, put on sys.path at import
    _note("build_sdist", vendored=vendored.VALUE, imported=os.environ.get("DEMO_IMPORTED"))
    if os.environ.get("CRASH") == "sdist":
        os._exit(7)
    name = "demo-1.0.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for path in ("pyproject.toml", "demo_backend.py", "demo.py", "_vendor/vendored.py"):
            tar.add(path, arcname="demo-1.0/" + path)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _note("build_wheel")
    if os.environ.get("CRASH") == "wheel":
        raise RuntimeError("the backend broke")
    name = "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
        whl.write("demo.py")
    return name
'''

PYPROJECT = '''[build-system]
requires = []
build-backend = "demo_backend"
backend-path = ["."]
'''


@pytest.fixture(scope="module")
def prepared_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("env") / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    return root


def _project(where: Path) -> Path:
    where.mkdir()
    (where / "pyproject.toml").write_text(PYPROJECT)
    (where / "demo_backend.py").write_text(BACKEND)
    (where / "demo.py").write_text("VALUE = 1\n")
    (where / "_vendor").mkdir()
    (where / "_vendor" / "vendored.py").write_text("VALUE = 'vendored'\n")
    return where


def _frontend(project: Path, env: Path, out: Path, log: Path, *args: str,
              **environ: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FRONTEND), "--env", str(env), "--outdir", str(out), *args, "."],
        cwd=project, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "HOOK_LOG": str(log), **environ})


def _hooks(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_one_backend_process_per_distribution(tmp_path: Path, prepared_env: Path) -> None:
    project = _project(tmp_path / "p")
    log = tmp_path / "hooks.log"
    done = _frontend(project, prepared_env, tmp_path / "out", log)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully built demo-1.0.tar.gz and demo-1.0-py3-none-any.whl" in done.stdout
    hooks = _hooks(log)
    assert [h["hook"] for h in hooks] == ["get_requires_for_build_sdist", "build_sdist",
                                          "get_requires_for_build_wheel", "build_wheel"]
    sdist, wheel = hooks[:2], hooks[2:]
    # A distribution's two hooks share a process; the wheel's is another (from the sdist).
    assert sdist[0]["pid"] == sdist[1]["pid"] != wheel[0]["pid"] == wheel[1]["pid"]
    assert {h["cwd"] for h in sdist} == {str(project)}
    assert {h["cwd"] for h in wheel} != {str(project)}, "the wheel is built from the sdist"
    # Each hook starts from the state the backend's import left, not the last hook's: what
    # the import put on sys.path and in the environment stays, what a hook changed does not.
    assert all(h["marker"] is None for h in hooks)
    assert sdist[0]["meta_path"] == sdist[1]["meta_path"]
    assert (sdist[1]["vendored"], sdist[1]["imported"]) == ("vendored", "yes")
    with zipfile.ZipFile(tmp_path / "out" / "demo-1.0-py3-none-any.whl") as whl:
        assert whl.namelist() == ["demo.py"]
    with tarfile.open(tmp_path / "out" / "demo-1.0.tar.gz") as tar:
        assert "demo-1.0/demo.py" in tar.getnames()


@pytest.mark.parametrize("safe_path", ["", "1"])
def test_fresh_hooks_gives_every_hook_its_own_process_and_the_same_sys_path(
        tmp_path: Path, prepared_env: Path, safe_path: str) -> None:
    environ = {"PYTHONSAFEPATH": safe_path} if safe_path else {}
    runs: dict[str, list[dict[str, Any]]] = {}
    for mode in ("shared", "--fresh-hooks"):
        project = _project(tmp_path / mode)
        log = tmp_path / f"{mode}.log"
        done = _frontend(project, prepared_env, tmp_path / f"out-{mode}", log,
                         *([mode] if mode.startswith("--") else []), **environ)
        assert done.returncode == 0, done.stdout + done.stderr
        runs[mode] = _hooks(log)
    assert len({h["pid"] for h in runs["--fresh-hooks"]}) == 4
    # The backend sees the same sys.path either way: the env's, its vendored directory, and
    # neither the working directory nor the hook script's.
    for shared, fresh in zip(runs["shared"], runs["--fresh-hooks"], strict=True):
        assert [Path(p).name for p in shared["path"]] == [Path(p).name for p in fresh["path"]]
        assert "" not in shared["path"] and shared["cwd"] not in shared["path"]


def test_an_unmet_dynamic_requirement_fails_before_the_build(tmp_path: Path,
                                                              prepared_env: Path) -> None:
    project = _project(tmp_path / "p")
    log = tmp_path / "hooks.log"
    done = _frontend(project, prepared_env, tmp_path / "out", log, WANT_EXTRA="1")
    assert done.returncode != 0
    assert "do not satisfy definitely-not-installed>=1 (needed to build the sdist)" in \
        done.stdout + done.stderr
    assert [h["hook"] for h in _hooks(log)] == ["get_requires_for_build_sdist"]


@pytest.mark.parametrize(("crash", "last_hook"), [("sdist", "build_sdist"),
                                                  ("wheel", "build_wheel")])
def test_a_backend_that_dies_or_raises_fails_the_build(tmp_path: Path, prepared_env: Path,
                                                       crash: str, last_hook: str) -> None:
    project = _project(tmp_path / "p")
    log = tmp_path / "hooks.log"
    done = _frontend(project, prepared_env, tmp_path / "out", log, CRASH=crash)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ERROR: Backend subprocess exited when trying to invoke" in done.stderr, done.stderr
    assert _hooks(log)[-1]["hook"] == last_hook
    if crash == "wheel":
        assert "RuntimeError: the backend broke" in done.stderr
