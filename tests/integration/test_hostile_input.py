"""Hostile builds and careless input against a real engine: colliding artifact names, the
total diffoscope budget, two checks on one ``--out``, the engine warning shown once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobuild.compare import MIN_SHARE_BYTES, DiffoscopeLimits
from reprobuild.pipeline.check import CheckOptions, run_check

from .conftest import REPO_ROOT, run_cli

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")


def random_outputs(tmp_path: Path, names: list[str]) -> Path:
    """A project whose build writes random bytes to each of ``names`` (so they differ)."""
    project = tmp_path / "project"
    project.mkdir()
    commands = []
    for name in names:
        parent = str(Path(name).parent)
        if parent != ".":
            commands.append(f"mkdir -p \"$REPROBUILD_OUT/{parent}\"")
        commands.append(f"head -c 4096 /dev/urandom > \"$REPROBUILD_OUT/{name}\"")
    (project / ".reprobuild.toml").write_text(
        "schema = 1\n[recipe]\nname = \"random\"\nimage = \"python\"\n[build]\n"
        f"commands = {json.dumps(commands)}\noutputs = [\"*.bin\"]\n")
    return project


def test_artifacts_whose_names_collide_in_the_diffoscope_directory(tmp_path: Path) -> None:
    project = random_outputs(tmp_path, ["sub/x.bin", "sub_x.bin"])
    out = tmp_path / "out"
    result = run_cli("check", str(project), "--variations", "none", "--no-explain", "--out",
                     str(out), json_path=tmp_path / "r.json")
    assert result.code == 1, result.stderr
    assert result.report is not None
    reports = {d["path"]: d["diffoscope"] for d in result.report["differences"]}
    assert sorted(reports) == ["sub/x.bin", "sub_x.bin"]
    texts = {info["text"] for info in reports.values()}
    assert len(texts) == 2 and all((out / text).is_file() for text in texts)


def test_one_diffoscope_budget_for_the_whole_comparison(tmp_path: Path) -> None:
    project = random_outputs(tmp_path, ["a.bin", "b.bin", "c.bin"])
    # Room for one report only: the first artifact's reports spend the byte budget.
    limits = DiffoscopeLimits(total_report_bytes=MIN_SHARE_BYTES + 1)
    report = run_check(CheckOptions(source=str(project), variations=frozenset(),
                                    out_dir=tmp_path / "out", explain=False,
                                    diffoscope_limits=limits))
    infos = {d.path: d.diffoscope for d in report.differences}
    assert sorted(infos) == ["a.bin", "b.bin", "c.bin"]
    assert infos["a.bin"] is not None and infos["a.bin"].text is not None
    for name in ("b.bin", "c.bin"):
        info = infos[name]
        assert info is not None and info.text is None
        assert info.excerpt.startswith("not compared:"), info.excerpt
    assert not (tmp_path / "out" / "diffoscope" / "b.bin").exists()


def test_two_checks_on_one_out_directory(tmp_path: Path) -> None:
    project = random_outputs(tmp_path, ["a.bin"])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "reprobuild", "check", str(project), "--variations", "none",
            "--no-explain", "--no-diffoscope", "--out", str(out)]
    runs = [subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=600), run.communicate()[1]) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [1, 2], results
    refused = next(stderr for code, stderr in results if code == 2)
    assert "--out" in refused and "Traceback" not in refused
    assert json.loads((out / "report.json").read_text())["exit_code"] == 1


def test_the_engine_warning_is_shown_once_per_engine_version(tmp_path: Path) -> None:
    project = random_outputs(tmp_path, ["a.bin"])
    (project / ".reprobuild.toml").write_text(
        (project / ".reprobuild.toml").read_text().replace("urandom", "zero"))
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    import docker  # noqa: PLC0415

    version = docker.from_env().version()["Version"]
    old = tuple(int(p) for p in version.split("+")[0].split("-")[0].split(".")[:3]
                if p.isdigit()) < (29, 5, 1)
    if not old:
        pytest.skip(f"engine {version} needs no warning")

    def check(name: str) -> dict[str, object]:
        path = tmp_path / f"{name}.json"
        argv = [sys.executable, "-m", "reprobuild", "check", str(project), "--variations",
                "none", "--json", str(path)]
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr
        data: dict[str, object] = json.loads(path.read_text())
        return data

    first, second = check("first"), check("second")
    assert any("predates 29.5.1" in str(w) for w in first["warnings"])  # type: ignore[attr-defined]
    assert not any("predates" in str(w) for w in second["warnings"])  # type: ignore[attr-defined]
    doctor = subprocess.run([sys.executable, "-m", "reprobuild", "doctor"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert "predates 29.5.1" in doctor.stdout + doctor.stderr, "doctor always says it"
