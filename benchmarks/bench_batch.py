"""Benchmark: batch throughput, targets per hour, with ``--jobs 1`` and the default.

    .venv/bin/python benchmarks/bench_batch.py [--rounds 2]

The batch is every bundled fixture server that builds (Python, npm workspace, pnpm
workspace, Go, Rust, and the probe under all variations), each a fresh git repository.
A warm-up batch fills the dependency cache first, so the rounds measure checks, not
downloads; ``--jobs 1`` and the default alternate round by round. For each it prints the
wall time, targets per hour and where the time went (the targets' own ``timings``,
summed: source, image, fetch, builds, compare).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TARGETS = [("python", "probe", None, {"PROBE": "none\n"}), ("npm", "monorepo", "src/notes-ts", {}),
           ("pnpm", "pnpm-server", "packages/notes-mcp", {}), ("go", "go-server", None, {}),
           ("rust", "rust-server", None, {}), ("python-ws", "monorepo", "src/weather-py", {})]
GIT = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b.invalid", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b.invalid", "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
       "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z", "PATH": "/usr/bin:/bin"}


def make_batch(work: Path) -> Path:
    lines = ["schema = 1"]
    for name, fixture, subdir, extra in TARGETS:
        repo = work / name
        shutil.copytree(FIXTURES / fixture, repo)
        for path, text in extra.items():
            (repo / path).write_text(text)
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", name]):
            subprocess.run(["git", "-C", str(repo), *args], check=True, env=GIT)
        lines += ["", "[[target]]", f'name = "{name}"', f'source = "{repo}"']
        if subdir:
            lines.append(f'subdir = "{subdir}"')
    path = work / "batch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(batch: Path, jobs: int | None, report: Path) -> float:
    args = [sys.executable, "-m", "reprobuild", "batch", str(batch), "-q", "--json", str(report)]
    if jobs is not None:
        args += ["--jobs", str(jobs)]
    started = time.monotonic()
    subprocess.run(args, check=False)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    from reprobuild.pipeline.batch import default_jobs  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        work = Path(scratch)
        batch = make_batch(work)
        run(batch, None, work / "warm.json")  # fill the dependency cache
        warm = json.loads((work / "warm.json").read_text())
        print("warm-up verdicts:", {t["name"]: t["verdict"] for t in warm["targets"]})
        modes = [("--jobs 1", 1), (f"default ({default_jobs()})", None), ("--jobs 2", 2)]
        results: dict[str, list[float]] = {label: [] for label, _ in modes}
        phases: dict[str, Counter[str]] = {k: Counter() for k in results}
        slowest: Counter[str] = Counter()
        for round_ in range(options.rounds):
            for label, jobs in modes:
                report = work / f"r{round_}-{jobs}.json"
                results[label].append(run(batch, jobs, report))
                for target in json.loads(report.read_text())["targets"]:
                    phases[label].update(target["report"].get("timings", {}))
                    slowest[target["name"]] += target["seconds"]
        for label, times in results.items():
            best = min(times)
            print(f"{label:14} wall {best:6.1f} s (of {', '.join(f'{t:.1f}' for t in times)}) "
                  f"-> {len(TARGETS) * 3600 / best:6.0f} targets/hour")
            spent = phases[label]
            total = sum(v for k, v in spent.items() if k != "total_s") or 1.0
            print("   where the time goes (targets' own timings, all rounds): " + ", ".join(
                f"{k.removesuffix('_s')} {100 * v / total:.1f}%" for k, v in spent.most_common()
                if k != "total_s"))
        runs = options.rounds * len(modes)
        print("per target (mean over every run): " + ", ".join(
            f"{name} {seconds / runs:.1f} s" for name, seconds in slowest.most_common()))


if __name__ == "__main__":
    main()
