"""Benchmark: a warm `reprobuild check` against one bare build in the same image.

The goal (issue "reprobuild check"): a warm check of a small server costs less than
1.5x the wall time of a single bare build of it in the same image. The bare build is the
least anyone could do: one `docker run` of the recipe's command with the same fetched
build dependencies, no hardening, no trap, no second build, no comparison.

    .venv/bin/python benchmarks/bench_check.py [--runs 5] [SOURCE_DIR]

Prints the median of each, the ratio, the floor any double build has on this machine
(two bare builds at once), and what the egress trap costs (the same check with
``--no-trap``, same machine, same run). The three are interleaved round by round, so
a shared machine getting slower or faster mid-run does not favour one of them. Needs the
images built and the package byte-compiled, as ``scripts/setup.sh`` leaves them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_reprotest import Bare, bare_build, bare_from, bare_pair, compile_reprobuild, prepare_bare

from reprobuild.images import build as image_build
from reprobuild.progress import SilentProgress
from reprobuild.sandbox.engine import connect

ROOT = Path(__file__).resolve().parents[1]


def timed_bare(bare: Bare) -> float:
    """One bare build's wall seconds (a failed one ends the benchmark)."""
    started = time.monotonic()
    code, log = bare_build(bare)
    if code != 0:
        sys.exit(f"the bare build failed (exit {code}):\n{log}")
    return time.monotonic() - started


def timed_pair(bare: Bare) -> float:
    """Two bare builds at once: the floor for anything that builds twice on this machine
    (on 2 cores the two compete for CPU)."""
    seconds, code, log = bare_pair(bare)
    if code != 0:
        sys.exit(f"a bare build failed (exit {code}):\n{log}")
    return seconds


def warm_check(source: str, *extra: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "reprobuild", "check", "--quiet", source, *extra],
                   check=True, cwd=ROOT)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", nargs="?", default="examples/mcp-notes-server")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    compile_reprobuild()
    client = connect()
    image_build.ensure_image(client, "python", progress=SilentProgress())
    image_build.ensure_image(client, "diffoscope", progress=SilentProgress())
    project = (ROOT / args.source).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        # Warm the caches (fetched deps, page cache, image layers) and learn the deps.
        report_path = Path(tmp) / "r.json"
        subprocess.run([sys.executable, "-m", "reprobuild", "check", "--quiet", args.source,
                        "--json", str(report_path)], check=True, cwd=ROOT)
        report = json.loads(report_path.read_text())
        bare = bare_from(report, project, Path(tmp))
        prepare_bare(bare, args.source)
        # Interleaved, so the drift of a shared machine's speed hits all alike.
        single: list[float] = []
        pair: list[float] = []
        check: list[float] = []
        no_trap: list[float] = []
        for _ in range(args.runs):
            single.append(timed_bare(bare))
            pair.append(timed_pair(bare))
            check.append(warm_check(args.source))
            no_trap.append(warm_check(args.source, "--no-trap"))
    med = statistics.median
    b, p, c, n = med(single), med(pair), med(check), med(no_trap)
    for label, runs in (("bare build", single), ("two bare builds at once", pair),
                        ("warm check", check), ("warm check, --no-trap", no_trap)):
        print(f"{label:24} median {med(runs):.2f}s  runs {[round(x, 2) for x in runs]}")
    print(f"ratio check/bare         {c / b:.2f}x  (goal < 1.5x); per round "
          f"{[round(x / y, 2) for x, y in zip(check, single, strict=True)]}")
    print(f"floor: two bare at once  {p / b:.2f}x of one; the check costs "
          f"{c - p:+.2f}s over it")
    print(f"trap cost                {c - n:+.2f}s per check")


if __name__ == "__main__":
    main()
