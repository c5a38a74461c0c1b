"""``reprobuild batch`` and ``merge`` for real: a batch of fixture targets with mixed
outcomes, its exit code and reports, and shards 1/3..3/3 merged back to the same result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from .conftest import git, make_repo

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")

SCHEMA = Path(__file__).parents[1] / "data" / "sarif-2.1.0-rtm.5.json"
EXPECTED = {"ok": ("reproducible", 0), "unrepro": ("unreproducible", 1),
            "fails": ("build-failed", 4), "net": ("egress", 3), "bad": ("error", 2)}


def batch_file(tmp_path: Path) -> Path:
    repos = {"ok": make_repo(tmp_path, "probe", probe="none", name="ok"),
             "unrepro": make_repo(tmp_path, "probe", probe="hostname", name="unrepro"),
             "fails": make_repo(tmp_path, "probe", probe="fail", name="fails"),
             "net": make_repo(tmp_path, "egress", name="net")}
    (repos["net"] / "ATTACK").write_text("http-https\n")
    git(repos["net"], "commit", "-qam", "attack")
    lines = ["schema = 1"]
    for name, repo in repos.items():
        variations = "hostname" if name in ("ok", "unrepro") else "none"
        lines += ["", "[[target]]", f'name = "{name}"', f'source = "{repo}"',
                  f'variations = "{variations}"']
    lines += ["", "[[target]]", 'name = "bad"', f'source = "{tmp_path / "missing"}"']
    path = tmp_path / "batch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def reprobuild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprobuild", *args], capture_output=True,
                          text=True, timeout=1800, check=False)


def verdicts(report: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {t["name"]: (t["verdict"], t["exit_code"]) for t in report["targets"]}


def test_a_mixed_batch_its_reports_and_its_shards_merged(tmp_path: Path) -> None:
    batch = batch_file(tmp_path)
    whole = reprobuild("batch", str(batch), "--json", str(tmp_path / "all.json"),
                       "--junit", str(tmp_path / "all.xml"), "--sarif",
                       str(tmp_path / "all.sarif"), "--markdown", str(tmp_path / "all.md"))
    assert whole.returncode == 3, whole.stdout + whole.stderr  # egress is the most severe
    report = json.loads((tmp_path / "all.json").read_text())
    assert report["schema"] == "reprobuild.batch/v1" and report["exit_code"] == 3
    assert verdicts(report) == EXPECTED
    assert [t["name"] for t in report["targets"]] == list(EXPECTED)  # batch-file order
    # Reports CI tools accept: schema-valid SARIF with one run per target, strict JUnit.
    sarif = json.loads((tmp_path / "all.sarif").read_text())
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(sarif)
    assert {r["automationDetails"]["id"] for r in sarif["runs"]} >= {
        "reprobuild/unrepro/", "reprobuild/net/", "reprobuild/fails/"}
    suites = ET.parse(tmp_path / "all.xml").getroot().findall("testsuite")
    assert {s.attrib["name"] for s in suites} == {f"reprobuild {n}" for n in EXPECTED}
    assert all(c.attrib["classname"].startswith("reprobuild.") and "time" in c.attrib
               for s in suites for c in s.findall("testcase"))
    markdown = (tmp_path / "all.md").read_text()
    assert "| unrepro | ❌ unreproducible | 1 |" in markdown

    # Three shards cover every target exactly once and merge back to the same result.
    shard_reports = []
    for index in (1, 2, 3):
        path = tmp_path / f"shard{index}.json"
        shard = reprobuild("batch", str(batch), "--shard", f"{index}/3", "--json", str(path),
                           "--jobs", "2", "-q")
        assert shard.returncode in (0, 1, 2, 3, 4), shard.stderr
        shard_reports.append(path)
    names = [t["name"] for p in shard_reports for t in json.loads(p.read_text())["targets"]]
    assert sorted(names) == sorted(EXPECTED)
    merged = reprobuild("merge", *map(str, shard_reports), "--json",
                        str(tmp_path / "merged.json"), "--sarif", str(tmp_path / "m.sarif"))
    assert merged.returncode == 3, merged.stderr
    again = json.loads((tmp_path / "merged.json").read_text())
    assert verdicts(again) == verdicts(report)
    assert [t["name"] for t in again["targets"]] == [t["name"] for t in report["targets"]]
    # The same findings keep the same fingerprints across runs (two "nights").
    def prints(log: dict[str, Any]) -> set[str]:
        return {r["partialFingerprints"]["reprobuild/v1"] for run in log["runs"]
                for r in run["results"]}
    assert prints(json.loads((tmp_path / "m.sarif").read_text())) == prints(sarif)
    # Merging a shard twice is refused.
    busy = next(p for p in shard_reports if json.loads(p.read_text())["targets"])
    twice = reprobuild("merge", str(busy), str(busy))
    assert twice.returncode == 2 and "more than one report" in twice.stderr


def test_the_history_flags_a_regression_on_the_second_night(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="none", name="srv")
    batch = tmp_path / "nightly.toml"
    batch.write_text(f'[[target]]\nname = "srv"\nsource = "{repo}"\nvariations = "hostname"\n')
    history = tmp_path / "history"
    first = reprobuild("batch", str(batch), "--history", str(history), "-q",
                       "--json", str(tmp_path / "night1.json"))
    assert first.returncode == 0, first.stderr
    # Overnight, a commit makes the build depend on the host name.
    (repo / "PROBE").write_text("hostname\n")
    git(repo, "commit", "-qam", "leak")
    second = reprobuild("batch", str(batch), "--history", str(history), "--markdown",
                        str(tmp_path / "night2.md"), "--json", str(tmp_path / "night2.json"))
    assert second.returncode == 1, second.stderr
    entry = json.loads((tmp_path / "night2.json").read_text())["history"][0]
    assert entry["change"].startswith("regression: reproducible on ")
    assert "unreproducible now" in entry["change"] and "commit " in entry["change"]
    markdown = (tmp_path / "night2.md").read_text()
    assert markdown.index("regression") < markdown.index("| target |")  # leads the summary
    assert "regression" in second.stdout
    assert len(list((history / "srv").glob("*.json"))) == 2  # append-only, one per night
    shown = reprobuild("history", "show", str(history), "srv")
    assert shown.returncode == 0 and "unreproducible" in shown.stdout, shown.stderr


def _workflow_script(job: str, step: str) -> str:
    import yaml  # noqa: PLC0415

    workflow = yaml.safe_load((Path(__file__).parents[2] / "ci" / "github" /
                               "reprobuild-nightly.yml").read_text())
    return str(next(s for s in workflow["jobs"][job]["steps"] if s.get("id") == step)["run"])


def test_the_shipped_workflow_s_shard_and_merge_steps_run_for_real(tmp_path: Path) -> None:
    """The scripts of ci/github/reprobuild-nightly.yml, run as the runner would (matrix and
    strategy values filled in, artifacts laid out as download-artifact merges them)."""
    ok = make_repo(tmp_path, "probe", probe="none", name="ok")
    batch = tmp_path / "reprobuild.toml"
    batch.write_text(f'[[target]]\nname = "ok"\nsource = "{ok}"\nvariations = "none"\n\n'
                     f'[[target]]\nname = "gone"\nsource = "{tmp_path / "missing"}"\n')
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
           "REPROBUILD_BATCH": str(batch), "HOME": str(Path.home())}
    env.update({k: v for k, v in __import__("os").environ.items()
                if k in ("REPROBUILD_CA_CERT", "XDG_CACHE_HOME", "DOCKER_HOST")})
    shards = tmp_path / "shards"
    shards.mkdir()
    total = 2
    for index in range(1, total + 1):
        job = tmp_path / f"job{index}"
        job.mkdir()
        script = _workflow_script("check", "batch").replace(
            "${{ matrix.shard }}", str(index)).replace("${{ strategy.job-total }}", str(total))
        output = job / "github-output"
        subprocess.run(["bash", "-e", "-c", script], cwd=job, check=True, timeout=900,
                       env={**env, "GITHUB_OUTPUT": str(output)})
        assert output.read_text().startswith("exit=")
        assert (job / "history").is_dir()
        (shards / f"shard-{index}.json").write_bytes((job / f"shard-{index}.json").read_bytes())
    merge = tmp_path / "merge"
    merge.mkdir()
    (merge / "shards").symlink_to(shards)
    output = merge / "github-output"
    subprocess.run(["bash", "-e", "-c", _workflow_script("merge", "merge")], cwd=merge,
                   check=True, timeout=300, env={**env, "GITHUB_OUTPUT": str(output)})
    assert output.read_text().strip() == "exit=2"  # the missing source is the worst outcome
    merged = json.loads((merge / "merged.json").read_text())
    assert verdicts(merged) == {"ok": ("reproducible", 0), "gone": ("error", 2)}
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(
        json.loads((merge / "merged.sarif").read_text()))
    assert ET.parse(merge / "merged.xml").getroot().tag == "testsuites"
    assert "| gone |" in (merge / "merged.md").read_text()
