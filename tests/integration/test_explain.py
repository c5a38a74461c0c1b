"""The explanation against a real engine: every probe is blamed on its own variation and
classified, nondeterminism is told apart, a setuptools server is explained without the
user rerunning anything, and the last screen says where the evidence is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reprobuild.explain.search import bound

from .conftest import make_repo, run_cli

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")

EXPECTED = {
    "build_path": "build-path", "hostname": "host-user", "user": "host-user",
    "umask": "archive-metadata", "timezone": "locale-timezone", "locale": "locale-timezone",
    "home": "build-path", "clock": "embedded-timestamp", "cpus": "cpu-count",
    "env_order": "environment-order", "file_order": "file-order",
}
ARTIFACTS = ["probe_mcp_server-1.0.0-py3-none-any.whl", "probe_mcp_server-1.0.0.tar.gz"]


def _findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for d in report["differences"] for f in d["findings"]]


def _last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize("variation", list(EXPECTED))
def test_each_probe_is_blamed_on_its_own_variation_within_the_bound(tmp_path: Path,
                                                                    variation: str) -> None:
    repo = make_repo(tmp_path, "probe", probe=variation)
    out = tmp_path / "out"
    result = run_cli("check", str(repo), "--out", str(out), json_path=tmp_path / "r.json")
    assert result.code == 1, result.stdout + result.stderr
    report = result.report
    assert report is not None
    assert sorted(d["path"] for d in report["differences"]) == ARTIFACTS
    explanation = report["explanation"]
    assert explanation["status"] == "complete", explanation
    builds = explanation["builds"]
    assert 1 <= len(builds) <= explanation["bound"] <= bound(11, 11, 1)
    for diff in report["differences"]:
        assert diff["findings"], diff
        for finding in diff["findings"]:
            assert finding["culprits"] == [variation], finding
            assert finding["attribution"] == "variation"
            assert finding["cause"] == EXPECTED[variation]
            assert any(m.endswith("_probe.txt") for m in finding["members"])
            assert finding["hint"]
    # The evidence: a build that varied the culprit alone, or without any other suspect,
    # and whose artifacts differ from A's.
    evidence = {b["name"]: b for b in builds}
    shown = [evidence[n] for f in _findings(report) for n in f["evidence"] if n in evidence]
    assert shown and all(variation in b["variations"] and b["differs"] for b in shown)
    assert all((out / b["log"]).is_file() for b in builds)
    last = _last_line(result.stdout)
    assert last.startswith("UNREPRODUCIBLE · 2 of 2 artifact(s) differ · causes: ")
    assert f"({variation})" in last
    assert last.endswith(f"evidence: {out / 'summary.md'}")


def test_a_difference_between_identical_builds_is_nondeterministic(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="random")
    result = run_cli("check", str(repo), json_path=tmp_path / "r.json")
    assert result.code == 1, result.stdout + result.stderr
    assert result.report is not None
    found = _findings(result.report)
    assert found and all((f["attribution"], f["culprits"], f["cause"]) ==
                         ("nondeterministic", [], "randomness") for f in found), found
    control = result.report["explanation"]["builds"][0]
    assert control["variations"] == [] and control["differs"] == ARTIFACTS
    assert "randomness (nondeterministic)" in _last_line(result.stdout)


def test_the_time_of_the_build_is_blamed_on_the_clock(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="build_time")
    result = run_cli("check", str(repo), json_path=tmp_path / "r.json")
    assert result.code == 1, result.stdout + result.stderr
    assert result.report is not None
    found = _findings(result.report)
    assert found and all((f["attribution"], f["culprits"], f["cause"]) ==
                         ("build-time", ["clock"], "embedded-timestamp") for f in found), found


def test_without_variations_nothing_is_rebuilt_to_call_it_nondeterministic(
        tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="random")
    result = run_cli("check", str(repo), "--variations", "none", json_path=tmp_path / "r.json")
    assert result.code == 1, result.stdout + result.stderr
    assert result.report is not None
    assert result.report["explanation"]["builds"] == []
    assert {f["attribution"] for f in _findings(result.report)} == {"nondeterministic"}


def test_a_setuptools_server_is_explained_without_rerunning_anything(tmp_path: Path) -> None:
    """The issue's case: build time in the sdist, modes that follow the umask."""
    repo = make_repo(tmp_path, "setuptools-server")
    out = tmp_path / "out"
    result = run_cli("check", str(repo), "--out", str(out), json_path=tmp_path / "r.json")
    assert result.code == 1, result.stdout + result.stderr
    report = result.report
    assert report is not None
    causes = {(f["cause"], tuple(f["culprits"])) for f in _findings(report)}
    assert ("embedded-timestamp", ("clock",)) in causes
    assert ("archive-metadata", ("umask",)) in causes
    assert ("archive-metadata", ("user",)) in causes
    sdist = next(d for d in report["differences"] if d["path"].endswith(".tar.gz"))
    stamps = [f for f in sdist["findings"] if f["cause"] == "embedded-timestamp"]
    assert any(m.endswith("PKG-INFO") for f in stamps for m in f["members"]), stamps
    assert all("setuptools" in f["hint"] and "SOURCE_DATE_EPOCH" in f["hint"] for f in stamps)
    modes = [f for f in _findings(report) if f["culprits"] == ["umask"]]
    assert modes and all(f["aspect"] == "mode" for f in modes)
    assert set(report["explanation"]["causes"]) == {"embedded-timestamp", "archive-metadata"}
    assert len(report["explanation"]["builds"]) <= report["explanation"]["bound"]

    # The last screen: the verdict, the causes and where the evidence is.
    last = _last_line(result.stdout)
    assert last.startswith("UNREPRODUCIBLE")
    assert "embedded timestamp (clock)" in last and "archive metadata (umask, user)" in last
    index = (out / "summary.md").read_text()
    for diff in report["differences"]:
        for kind in ("html", "text", "json"):
            assert (out / diff["diffoscope"][kind]).is_file()
            assert diff["diffoscope"][kind].replace(" ", "%20") in index
    assert "[report.json](<report.json>)" in index
    assert "| archive metadata | umask |" in index
    # The excerpt shows changed lines, not diffoscope's whole listing.
    assert "Zip file size" not in result.stdout

    # A CI artifact read later, elsewhere: the same recap, nothing rebuilt, no Docker.
    again = run_cli("explain", str(out))
    assert again.code == 0, again.stdout + again.stderr
    assert _last_line(again.stdout) == last
    assert "fix (archive metadata):" in again.stdout


def test_the_budget_cuts_the_search_and_says_what_is_left(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "setuptools-server")
    result = run_cli("check", str(repo), "--explain-budget", "1",
                     json_path=tmp_path / "r.json")
    assert result.code == 1, result.stdout + result.stderr
    assert result.report is not None
    explanation = result.report["explanation"]
    assert explanation["status"] == "partial" and "budget" in explanation["reason"]
    assert [b["variations"] for b in explanation["builds"]] == [[]]  # the control only
    modes = [f for f in _findings(result.report) if f["aspect"] == "mode"]
    assert modes and all(f["attribution"] == "undecided" and "umask" in f["culprits"]
                         and len(f["culprits"]) > 1 for f in modes), modes
    assert "one of" in result.stdout


def test_no_explain_runs_no_extra_build(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "probe", probe="hostname")
    result = run_cli("check", str(repo), "--no-explain", json_path=tmp_path / "r.json")
    assert result.code == 1, result.stdout + result.stderr
    assert result.report is not None
    assert "explanation" not in result.report
    assert _findings(result.report) == []
    assert "causes not explained (--explain)" in _last_line(result.stdout)
