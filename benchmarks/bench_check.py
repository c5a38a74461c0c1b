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
import concurrent.futures
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reprobuild import images
from reprobuild.images import build as image_build
from reprobuild.progress import SilentProgress
from reprobuild.sandbox.engine import connect

ROOT = Path(__file__).resolve().parents[1]


def bare_build(image_id: str, project: Path, deps: Path, command: str,
               env: dict[str, str], deps_mode: str = "ro") -> float:
    """One plain build: the project and the fetched deps bound read-only, the recipe's
    command, nothing else."""
    started = time.monotonic()
    flags = [f"--env={k}={v}" for k, v in env.items()]
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{project}:/src:ro",
         "-v", f"{deps}:/deps:{deps_mode}", *flags, "-e", "REPROBUILD_OUT=/tmp/out", image_id,
         "sh", "-c", f"cp -r /src /tmp/p && cd /tmp/p && {command} >/dev/null 2>&1"],
        check=True)
    return time.monotonic() - started


def bare_pair(image_id: str, project: Path, deps: Path, command: str,
              env: dict[str, str]) -> float:
    """Two bare builds at once: the floor for anything that builds twice on this machine
    (on 2 cores the two compete for CPU)."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for fut in [pool.submit(bare_build, image_id, project, deps, command, env)
                    for _ in range(2)]:
            fut.result()
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
    image = image_build.ensure_image(client, "python", progress=SilentProgress())
    image_build.ensure_image(client, "diffoscope", progress=SilentProgress())
    project = (ROOT / args.source).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        # Warm the caches (fetched deps, page cache, image layers) and learn the deps.
        report_path = Path(tmp) / "r.json"
        subprocess.run([sys.executable, "-m", "reprobuild", "check", "--quiet", args.source,
                        "--json", str(report_path)], check=True, cwd=ROOT)
        report = json.loads(report_path.read_text())
        deps = Path(tmp) / "deps"
        deps.mkdir()
        fetch = report["fetch"]
        env: dict[str, str] = {}
        if fetch is not None:
            archive = images.cache_root() / "deps" / f"{fetch['key']}.tar"
            subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(deps)], check=True)
            # The build env the fetch that filled the cache recorded (build_env needs the
            # plan, which the report does not carry).
            meta = json.loads(archive.with_suffix(".json").read_text())
            env = {str(k): str(v) for k, v in meta.get("env", []) if k != "PATH"}
        command = " && ".join(report["recipe"]["commands"])
        env["SOURCE_DATE_EPOCH"] = str(report["source"]["commit_time"] or 315532800)
        # Untimed, deps writable: Python's frontend makes the prepared venv's interpreter
        # links (the cache holds none; idempotent), so the timed builds bind them read-only.
        bare_build(image.image_id, project, deps, command, env, deps_mode="rw")
        # Interleaved, so the drift of a shared machine's speed hits all alike.
        bare: list[float] = []
        pair: list[float] = []
        check: list[float] = []
        no_trap: list[float] = []
        for _ in range(args.runs):
            bare.append(bare_build(image.image_id, project, deps, command, env))
            pair.append(bare_pair(image.image_id, project, deps, command, env))
            check.append(warm_check(args.source))
            no_trap.append(warm_check(args.source, "--no-trap"))
    med = statistics.median
    b, p, c, n = med(bare), med(pair), med(check), med(no_trap)
    for label, runs in (("bare build", bare), ("two bare builds at once", pair),
                        ("warm check", check), ("warm check, --no-trap", no_trap)):
        print(f"{label:24} median {med(runs):.2f}s  runs {[round(x, 2) for x in runs]}")
    print(f"ratio check/bare         {c / b:.2f}x  (goal < 1.5x); per round "
          f"{[round(x / y, 2) for x, y in zip(check, bare, strict=True)]}")
    print(f"floor: two bare at once  {p / b:.2f}x of one; the check costs "
          f"{c - p:+.2f}s over it")
    print(f"trap cost                {c - n:+.2f}s per check")


if __name__ == "__main__":
    main()
