"""Benchmark: what the explanation costs, in extra builds and seconds, per fixture.

    .venv/bin/python benchmarks/bench_explain.py [--rounds 1] [REPO ...]

For every probe fixture (each embeds one environment fact, plus ``random`` and
``build_time``), the setuptools fixture, and any local repositories given, one
``reprobuild check`` with all variations; prints the culprits found, the extra builds
against the search's bound and against reprotest's one-variation-at-a-time
(``--auto-build``: one build per variation plus the control), and the explanation's
seconds against the A/B builds'. Run it on an otherwise idle machine with warm caches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PROBES = ["build_path", "hostname", "user", "umask", "timezone", "locale", "home", "clock",
          "cpus", "env_order", "file_order", "random", "build_time"]
GIT = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b.invalid", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b.invalid", "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
       "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z", "PATH": "/usr/bin:/bin"}


def fixture(work: Path, name: str, source: str, probe: str | None) -> Path:
    repo = work / name
    shutil.copytree(FIXTURES / source, repo)
    if probe is not None:
        (repo / "PROBE").write_text(probe + "\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", name]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=GIT)
    return repo


def measure(name: str, source: str, work: Path) -> str:
    out = work / f"out-{name}"
    subprocess.run([sys.executable, "-m", "reprobuild", "check", source, "--out", str(out),
                    "-q"], cwd=ROOT, check=False)
    report = json.loads((out / "report.json").read_text())
    explanation = report.get("explanation")
    if explanation is None:
        return f"{name:<22} {report['verdict']}: nothing to explain"
    culprits = sorted({c for d in report["differences"] for f in d["findings"]
                       for c in f["culprits"] or [f["attribution"]]})
    builds = len(explanation["builds"])
    pair = max(b["duration_s"] for b in report["builds"])
    one_at_a_time = len(report["variations"]) + 1
    return (f"{name:<22} {','.join(culprits):<28} {builds:>3} builds (bound "
            f"{explanation['bound']:>2}, one at a time {one_at_a_time:>2})  "
            f"{explanation['seconds']:6.1f}s  (A/B build {pair:5.1f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repos", nargs="*", help="local repositories to explain as well")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp:
        work = Path(tmp)
        targets = [(p, str(fixture(work, p, "probe", p))) for p in PROBES]
        targets.append(("setuptools", str(fixture(work, "setuptools", "setuptools-server",
                                                  None))))
        targets += [(Path(r).name, r) for r in args.repos]
        for round_ in range(args.rounds):
            for name, source in targets:
                print(measure(f"{name}#{round_ + 1}" if args.rounds > 1 else name, source,
                              work / str(round_)), flush=True)


if __name__ == "__main__":
    main()
