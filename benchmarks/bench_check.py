"""Benchmark: a warm `reprobuild check` against one bare build in the same image.

The goal (issue "reprobuild check"): a warm check of a small server costs less than
1.5x the wall time of a single bare build of it in the same image. The bare build is the
least anyone could do: one `docker run` of the recipe's command, no hardening, no second
build, no comparison.

    .venv/bin/python benchmarks/bench_check.py [--runs 5] [SOURCE_DIR]

Prints the median of each, the ratio, and what the egress trap costs (the same check
with ``--no-trap``, same machine, same run). Needs the images built (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reprobuild import images
from reprobuild.engine import connect
from reprobuild.progress import SilentProgress

ROOT = Path(__file__).resolve().parents[1]


def bare_build(image_id: str, project: Path) -> float:
    """One plain build: bind the project read-only, copy it, build sdist+wheel."""
    started = time.monotonic()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{project}:/src:ro", image_id,
         "sh", "-c", "cp -r /src /tmp/p && cd /tmp/p && "
                     "python -m build --no-isolation --outdir /tmp/out . >/dev/null"],
        check=True)
    return time.monotonic() - started


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
    client = connect()
    image = images.ensure_image(client, "python", progress=SilentProgress())
    images.ensure_image(client, "diffoscope", progress=SilentProgress())
    project = (ROOT / args.source).resolve()
    warm_check(args.source)  # warm caches (page cache, image layers)
    bare = [bare_build(image.image_id, project) for _ in range(args.runs)]
    check = [warm_check(args.source) for _ in range(args.runs)]
    no_trap = [warm_check(args.source, "--no-trap") for _ in range(args.runs)]
    b, c, n = statistics.median(bare), statistics.median(check), statistics.median(no_trap)
    print(f"bare build        median {b:.2f}s  runs {[round(x, 2) for x in bare]}")
    print(f"warm check        median {c:.2f}s  runs {[round(x, 2) for x in check]}")
    print(f"warm check, no trap median {n:.2f}s  runs {[round(x, 2) for x in no_trap]}")
    print(f"ratio check/bare  {c / b:.2f}x  (goal < 1.5x)")
    print(f"trap cost         {c - n:+.2f}s per check")


if __name__ == "__main__":
    main()
