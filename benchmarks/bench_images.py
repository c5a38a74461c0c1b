"""Benchmark: building every toolchain image from scratch (the cold part of setup).

    flock /tmp/reprobuild-docker.lock .venv/bin/python benchmarks/bench_images.py \
        [--jobs N] [--warm-wheels] [--runs 1] [NAME ...]

Builds into throwaway tags, so the images in use are never touched: the definitions are
copied and each base gets one extra no-op customize step (``: bench <nonce>``), which gives
every image a new tag and changes nothing else. The host's wheel cache is a fresh directory
unless ``--warm-wheels`` (then only the PyPI downloads are skipped). Prints, per image, how
long it waited (for its downloads, its base, a slot), its host-side PyPI download, its
build (bootstrap or offline layer, commit and tag), and for bases the part of the bootstrap
that is apt talking to the mirror (``apt-get update`` and the essential set's download; the
remaining packages' download inside ``installing remaining packages`` is not separated),
then the wall time. The throwaway images are removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from reprobuild import images
from reprobuild.images import build as image_build
from reprobuild.sandbox.engine import connect

_APT_START = "I: running apt-get update..."
_APT_END = "I: extracting archives..."


class Clock:
    """A Progress that prints each line with the time since the start and keeps when
    each base's apt phase started and ended."""

    def __init__(self, quiet: bool) -> None:
        self.started = time.monotonic()
        self.quiet = quiet
        self.apt: dict[str, dict[str, float]] = {}

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:7.1f}s] {line}", file=sys.stderr,
                  flush=True)

    def step(self, message: str) -> None:
        self._say(message)

    def detail(self, message: str) -> None:
        name, _, rest = message.partition(": ")
        for key, marker in (("start", _APT_START), ("end", _APT_END)):
            if rest == marker:
                self.apt.setdefault(name, {})[key] = time.monotonic()
        self._say(f"  {message}")

    def apt_s(self, name: str) -> float | None:
        times = self.apt.get(name, {})
        if "start" in times and "end" in times:
            return times["end"] - times["start"]
        return None


def throwaway_tree(where: Path, nonce: str) -> Path:
    tree = where / "containers"
    shutil.copytree(images.containers_dir(), tree)
    for path in tree.glob("*.toml"):
        text = path.read_text()
        if re.search(r'^kind = "(mmdebstrap|registry)"', text, re.M):
            text, count = re.subn(r"^customize = \[\n", f"customize = [\n    ': bench {nonce}',\n",
                                  text, count=1, flags=re.M)
            if count != 1:
                text += f"\ncustomize = [': bench {nonce}']\n"
            path.write_text(text)
    return tree


def one_run(names: list[str], jobs: int | None, warm_wheels: bool, quiet: bool) -> float:
    client = connect()
    with tempfile.TemporaryDirectory(prefix="reprobuild-bench-images-") as scratch:
        tree = throwaway_tree(Path(scratch), uuid.uuid4().hex[:12])
        if not warm_wheels:
            os.environ["XDG_CACHE_HOME"] = str(Path(scratch) / "cache")
        definitions = images.load_definitions(tree)
        wanted = names or images.toolchain_names(tree)
        tags = [s.tag for s in images.plan_builds(definitions, wanted)]
        clock = Clock(quiet)
        started = time.monotonic()
        try:
            result = image_build.ensure_images(client, wanted, progress=clock,
                                               definitions_dir=tree, jobs=jobs)
            wall = time.monotonic() - started
        finally:
            for tag in sorted(tags, key=lambda t: t.startswith("reprobuild/base")):
                try:
                    client.images.remove(tag)
                except Exception as exc:  # noqa: BLE001 - report and go on removing
                    print(f"could not remove {tag}: {exc}", file=sys.stderr)
    print(f"{'image':14} {'waited':>7} {'PyPI':>6} {'build':>7} {'apt':>6}")
    for timing in result.built:
        download = f"{timing.download_s:6.1f}" if timing.download_s is not None else "     -"
        apt_s = clock.apt_s(timing.name)
        apt = f"{apt_s:6.1f}" if apt_s is not None else "     -"
        print(f"{timing.name:14} {timing.waited_s:7.1f} {download} {timing.build_s:7.1f} {apt}")
    print(f"wall {wall:.1f} s, {len(result.built)} images, jobs "
          f"{jobs or images.default_jobs(len(os.sched_getaffinity(0)))}, "
          f"{'warm' if warm_wheels else 'cold'} wheel cache")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="images to build (default: every toolchain)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--warm-wheels", action="store_true",
                        help="keep the host's wheel cache (skip the PyPI downloads)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    walls = [one_run(args.names, args.jobs, args.warm_wheels, args.quiet)
             for _ in range(args.runs)]
    if len(walls) > 1:
        print(f"median {statistics.median(walls):.1f} s, min {min(walls):.1f}, "
              f"max {max(walls):.1f} over {len(walls)} runs")


if __name__ == "__main__":
    main()
