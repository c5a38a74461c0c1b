"""Benchmark: a warm `reprobuild check` against Debian's reprotest, side by side (issue 15).

The goal (issue 15): on the bundled example and a real PyPI server, a warm check takes at
most 0.5x reprotest's time with the same build command, and at most 0.9x reprotest's time
with the build's dependencies preinstalled (``python -m build --no-isolation``). Both tools
build twice under varied conditions and compare; reprotest builds one after the other on
the host (its default "null" testbed, in /tmp), reprobuild both at once in sandboxes.

    flock /tmp/reprobuild-docker.lock .venv/bin/python benchmarks/bench_reprotest.py \\
        [--rounds 7] [--project example,pypi,npm] [--json FILE] [--install]

Projects: ``example`` (examples/mcp-notes-server at this repository's HEAD),
``pypi`` (the sdist of the official mcp-server-time from PyPI, unpacked: a directory) and
``npm`` (one TypeScript server of the modelcontextprotocol/servers npm-workspaces
monorepo, exported from a local mirror or a clone, checked with ``--subdir``).

Configurations, run once each per round in an order that rotates round by round (so a
shared machine drifting faster or slower hits all alike), after one warm-up round that is
discarded:

* ``check``: ``reprobuild check --quiet`` (warm: images built, dependencies cached).
* ``reprotest``: reprotest 0.7.33 with the same build a user would type, on the host:
  Python ``python -m build --installer uv --outdir dist .`` (isolated build environments,
  from uv's warm cache); npm the recipe's own commands (``npm ci --offline``, ``npm run
  build --if-present``, ``npm pack``) from a warm npm cache of the bench's own, because the
  host has no fetched-dependencies sandbox and ``npm ci`` online would time the registry.
* ``reprotest-pre``: reprotest with the dependencies preinstalled: Python ``python -m
  build --no-isolation`` with reprobuild's pinned backend already in the bench venv; npm
  ``npm run build --if-present`` and ``npm pack`` in a tree whose ``node_modules`` was
  installed once beforehand (reprotest copies it into both builds).
* ``bare-pair``: two plain ``docker run`` of the recipe's commands at once in the same
  image with the same fetched dependencies (no hardening, no trap, no comparison), the
  tree copied into a tmpfs as the check's sandbox has it: the floor for anything that
  builds twice on this machine, as in bench_check.py.

reprotest runs with ``SOURCE_DATE_EPOCH`` set to what reprobuild's recipe sets (the commit
time, 1980-01-01 for a directory), so a project reproducible in one is reproducible in the
other, and with ``--no-diffoscope`` (diff -ru; diffoscope would add its start-up to every
reprotest run, identical outputs or not). A run that fails or finds the outputs differ is
reported with its exit code and excluded from the figures, never timed silently.
``UV_CACHE_DIR`` is set too: reprotest points HOME of its first build at the build tree
(Debian bug #860428) and of its second at /nonexistent/second-build, so uv would otherwise
download the backend again into the tree in every first build, and hatchling would pack
that ``.cache/uv`` into the sdist: "not reproducible", and timed with downloads.

Prints, per project, each configuration's median and min-max, the paired ratios per round
(check/reprotest and check/reprotest-pre: median and min-max) and the check's overhead over
the bare pair (median of the per-round differences and ratios); ``--json`` writes every run
as well. Setup (cached under ~/.cache/reprobuild-bench): a venv with reprotest from PyPI,
one venv per Python project with ``build``, ``uv`` and reprobuild's pins of its backend, the
sdist, and the npm cache. reprotest's null testbed needs ``faketime`` and ``disorderfs``
(FUSE): ``apt-get install -y faketime disorderfs fuse3`` (``--install`` runs it).

reprotest 0.7.33 calls ``importlib.resources.files()`` with no argument (Python >= 3.12
only) at reprotest/__init__.py line 32; on Python 3.11 it is started through a four-line
shim that names the anchor, ``reprotest``, and changes nothing else.

Run it under the Docker lock as a whole (the checks and the bare builds use the engine, and
holding the lock keeps other people's builds off the CPUs while reprotest is timed).
Set ``REPROBUILD_CA_CERT`` if a first fetch must go through an intercepting proxy.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprobuild import recipes

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reprobuild-bench"
DEPS_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reprobuild"
REPROTEST = "reprotest==0.7.33"
PYPI_SERVER = ("mcp-server-time", "2026.10.19")
NPM_REPO = "https://github.com/modelcontextprotocol/servers"
NPM_MIRROR = Path("/work/.mirror/modelcontextprotocol+servers/repo")
NPM_MEMBER = "src/sequentialthinking"
DEFAULT_EPOCH = 315532800
"""reprobuild's SOURCE_DATE_EPOCH for a directory (no commit): 1980-01-01."""
APT = "apt-get install -y faketime disorderfs fuse3"
CONFIGS = ("check", "reprotest", "reprotest-pre", "bare-pair")
LABELS = {"check": "reprobuild check", "reprotest": "reprotest, same command",
          "reprotest-pre": "reprotest, preinstalled", "bare-pair": "two bare builds at once"}
SHIM = '''\
# reprotest 0.7.33 calls importlib.resources.files() with no argument (Python >= 3.12);
# on 3.11 the anchor must be named. Nothing else is changed.
import importlib.resources, sys
_files = importlib.resources.files
importlib.resources.files = lambda anchor="reprotest": _files(anchor)
import reprotest
sys.exit(reprotest.main())
'''
_TAIL = 2000


# ------------------------------------------------------------------ pure: order and figures


def rotation(configs: Sequence[str], round_index: int) -> tuple[str, ...]:
    """The order of one round: the configurations rotated by the round's index."""
    if not configs:
        return ()
    k = round_index % len(configs)
    return (*configs[k:], *configs[:k])


@dataclass(frozen=True)
class Spread:
    """Median and range of some samples (``n`` = how many)."""

    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"median": round(self.median, 4), "min": round(self.low, 4),
                "max": round(self.high, 4), "n": self.n}


def spread(samples: Sequence[float]) -> Spread | None:
    """None when there is nothing to summarise (every run failed)."""
    if not samples:
        return None
    return Spread(statistics.median(samples), min(samples), max(samples), len(samples))


@dataclass(frozen=True)
class Run:
    """One timed run of one configuration on one project (round 0 is the warm-up)."""

    project: str
    config: str
    round: int
    seconds: float
    exit_code: int
    ok: bool
    note: str = ""


def successful(runs: Sequence[Run], config: str) -> dict[int, float]:
    """Seconds per measured round (warm-up excluded) of the runs that succeeded."""
    return {r.round: r.seconds for r in runs if r.config == config and r.ok and r.round > 0}


def paired(a: Mapping[int, float], b: Mapping[int, float], *, ratio: bool) -> list[float]:
    """Per round in which both succeeded: a/b (``ratio``) or a-b, in round order."""
    rounds = sorted(set(a) & set(b))
    return [a[r] / b[r] if ratio else a[r] - b[r] for r in rounds]


@dataclass(frozen=True)
class Summary:
    """The figures of one project."""

    project: str
    configs: dict[str, Spread | None]
    failures: dict[str, list[Run]]
    measured: dict[str, int]
    ratio_same: Spread | None
    ratio_pre: Spread | None
    overhead_s: Spread | None
    overhead_x: Spread | None

    def as_dict(self) -> dict[str, Any]:
        def opt(s: Spread | None) -> dict[str, float | int] | None:
            return None if s is None else s.as_dict()
        return {
            "configs": {c: {"seconds": opt(s), "measured": self.measured[c],
                            "failed": [dataclasses.asdict(r) for r in self.failures[c]]}
                        for c, s in self.configs.items()},
            "ratio_check_over_reprotest": opt(self.ratio_same),
            "ratio_check_over_reprotest_pre": opt(self.ratio_pre),
            "overhead_over_bare_pair_s": opt(self.overhead_s),
            "ratio_check_over_bare_pair": opt(self.overhead_x),
        }


def summarize(project: str, runs: Sequence[Run], configs: Sequence[str] = CONFIGS) -> Summary:
    """Medians and ranges per configuration, and the paired figures, from one project's runs."""
    mine = [r for r in runs if r.project == project]
    ok = {c: successful(mine, c) for c in configs}
    check = ok.get("check", {})

    def pair(other: str, *, ratio: bool) -> Spread | None:
        return spread(paired(check, ok.get(other, {}), ratio=ratio))
    return Summary(
        project=project,
        configs={c: spread([ok[c][r] for r in sorted(ok[c])]) for c in configs},
        failures={c: [r for r in mine if r.config == c and not r.ok and r.round > 0]
                  for c in configs},
        measured={c: sum(1 for r in mine if r.config == c and r.round > 0) for c in configs},
        ratio_same=pair("reprotest", ratio=True), ratio_pre=pair("reprotest-pre", ratio=True),
        overhead_s=pair("bare-pair", ratio=False), overhead_x=pair("bare-pair", ratio=True))


def _range(s: Spread | None, unit: str, fmt: str) -> str:
    if s is None:
        return "n/a"
    return f"{s.median:{fmt}}{unit}  ({s.low:{fmt}} to {s.high:{fmt}}{unit})"


def format_table(summaries: Sequence[Summary]) -> str:
    """The plain-text table the benchmark prints."""
    lines = [f"{'project':8} {'configuration':28} {'median':>8}  {'min-max':>13}  ok"]
    for s in summaries:
        first = True
        for config, sp in s.configs.items():
            name = s.project if first else ""
            first = False
            good = s.measured[config] - len(s.failures[config])
            cells = ("n/a", "") if sp is None else (f"{sp.median:.2f}s",
                                                    f"{sp.low:.2f}-{sp.high:.2f}s")
            lines.append(f"{name:8} {LABELS.get(config, config):28} {cells[0]:>8}  "
                         f"{cells[1]:>13}  {good}/{s.measured[config]}")
            for failed in s.failures[config]:
                lines.append(f"{'':8}   round {failed.round}: exit {failed.exit_code}"
                             f" {failed.note[:60]}")
        for label, sp, unit, fmt in (
                ("check / reprotest", s.ratio_same, "x", ".2f"),
                ("check / reprotest-pre", s.ratio_pre, "x", ".2f"),
                ("check - bare pair", s.overhead_s, "s", "+.2f"),
                ("check / bare pair", s.overhead_x, "x", ".2f")):
            lines.append(f"{'':8} {label:28} {_range(sp, unit, fmt)}")
    return "\n".join(lines)


# ------------------------------------------------------------------ setup (cached)


def _run(cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, text=True, **kw)


def _tail(text: str) -> str:
    return text[-_TAIL:]


def compile_reprobuild() -> None:
    """Byte-compile reprobuild as setup does: an environment with PYTHONDONTWRITEBYTECODE
    (this CI's) never caches what was edited since, and every timed check would compile it
    again (~35 ms for the trap agent alone)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reprobuild")],
                   check=True, stdout=subprocess.DEVNULL)


def need_host_tools(install: bool) -> None:
    """faketime and disorderfs for reprotest's variations, docker for the bare builds."""
    missing = [t for t in ("faketime", "disorderfs", "fusermount3") if shutil.which(t) is None]
    if missing and install:
        _run(["apt-get", "install", "-y", "faketime", "disorderfs", "fuse3"])
        missing = [t for t in missing if shutil.which(t) is None]
    if missing:
        sys.exit(f"reprotest needs {', '.join(missing)}: run `{APT}` (or pass --install)")
    for tool in ("docker", "git"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed")


def venv(path: Path, requirements: Sequence[str]) -> Path:
    """A venv with exactly these requirements, made once (a marker names them)."""
    marker = path / ".bench-requirements"
    wanted = "\n".join(requirements) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return path
    shutil.rmtree(path, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(path)])
    _run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", *requirements])
    marker.write_text(wanted)
    return path


def reprotest_command() -> list[str]:
    """reprotest from PyPI in a venv of its own, started through the 3.11 shim."""
    env = venv(CACHE / "reprotest-venv", [REPROTEST])
    shim = env / "bin" / "reprotest-py311"
    if not shim.is_file() or shim.read_text() != f"#!{env}/bin/python\n{SHIM}":
        shim.write_text(f"#!{env}/bin/python\n{SHIM}")
        shim.chmod(0o755)
    return [str(env / "bin" / "python"), str(shim)]


def warm_report(check_args: Sequence[str]) -> dict[str, Any]:
    """A first, warming check with its JSON report (what the recipe and fetch were)."""
    with tempfile.TemporaryDirectory(prefix="bench-reprotest-") as tmp:
        path = Path(tmp) / "report.json"
        done = subprocess.run([sys.executable, "-m", "reprobuild", "check", "--quiet",
                               *check_args, "--json", str(path)], cwd=ROOT, check=False)
        if not path.is_file():
            sys.exit(f"reprobuild check {' '.join(check_args)} wrote no report "
                     f"(exit {done.returncode})")
        report: dict[str, Any] = json.loads(path.read_text())
    if report["verdict"] != "reproducible":
        sys.exit(f"reprobuild check {' '.join(check_args)}: {report['verdict']}: "
                 f"{report.get('message')} (the benchmark times reproducible checks)")
    return report


@dataclass(frozen=True)
class Bare:
    """A plain build of what a check built: the recipe's commands in its image, with the
    dependencies the fetch cached (bench_check.py times these too)."""

    image_id: str
    tree: Path
    """Mounted read-only at /src and copied into a tmpfs, as the check's sandbox has it."""
    command: str
    env: tuple[tuple[str, str], ...]
    deps: Path | None


@dataclass(frozen=True)
class Project:
    """One project as each configuration sees it."""

    name: str
    check_args: tuple[str, ...]
    tree: Path
    """The exported source (the root reprotest copies; mounted for the bare builds)."""
    subdir: str
    """The project inside ``tree`` ("" for its root)."""
    same: str
    pre: str
    pre_tree: Path
    artifacts: str
    env: tuple[tuple[str, str], ...]
    """Extra environment of reprotest's builds (PATH first, SOURCE_DATE_EPOCH, caches)."""
    bare: Bare
    info: dict[str, Any] = field(default_factory=dict)


def _deps(report: Mapping[str, Any], work: Path) -> tuple[Path | None, list[tuple[str, str]]]:
    """The fetched dependencies unpacked for the bare builds, and their build env (as the
    fetch that filled the cache recorded it)."""
    fetch = report["fetch"]
    if fetch is None:
        return None, []
    key = fetch["key"]
    meta = json.loads((DEPS_CACHE / "deps" / f"{key}.json").read_text())
    deps = work / "deps"
    deps.mkdir(parents=True)
    _run(["tar", "-x", "-f", str(DEPS_CACHE / "deps" / f"{key}.tar"), "-C", str(deps)])
    return deps, [(str(k), str(v)) for k, v in meta.get("env", [])]


def _recipe_env(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    origin = Path(report["recipe"]["origin"])
    recipe = recipes.load_recipe_file(origin) if origin.is_file() else \
        recipes.builtin_recipes()[report["recipe"]["name"]]
    return list(recipes.render_env(recipe, commit=report["source"]["commit"],
                                   commit_time=report["source"]["commit_time"]))


def _epoch(report: Mapping[str, Any]) -> str:
    return str(report["source"]["commit_time"] or DEFAULT_EPOCH)


def bare_from(report: Mapping[str, Any], tree: Path, work: Path, subdir: str = "") -> Bare:
    """The bare build of the check ``report`` describes, its deps unpacked under ``work``."""
    deps, deps_env = _deps(report, work)
    command = " && ".join(report["recipe"]["commands"])
    if subdir:
        command = f"cd {subdir} && {command}"
    env = [*_recipe_env(report), *((k, v) for k, v in deps_env if k != "PATH")]
    return Bare(image_id=report["toolchain"]["image_id"], tree=tree, command=command,
                env=tuple(env), deps=deps)


def python_project(name: str, check_args: Sequence[str], tree: Path, subdir: str,
                   work: Path) -> Project:
    """A Python project: reprotest runs `python -m build` from a venv with the pinned backend."""
    report = warm_report(check_args)
    pins = sorted(f"{n}=={v}" for n, v in (report["fetch"] or {}).get("pins", {}).items())
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    env_dir = venv(CACHE / "venvs" / f"{name}-{digest}", ["build", "uv", *pins])
    return Project(
        name=name, check_args=tuple(check_args), tree=tree, subdir=subdir,
        same="python -m build --installer uv --outdir dist .",
        pre="python -m build --no-isolation --outdir dist .", pre_tree=tree,
        artifacts="dist/*",
        env=(("PATH", f"{env_dir}/bin:{os.environ.get('PATH', '')}"),
             ("SOURCE_DATE_EPOCH", _epoch(report)), ("UV_CACHE_DIR", str(CACHE / "uv-cache"))),
        bare=bare_from(report, tree, work, subdir),
        info={"source": report["source"], "pins": pins, "recipe": report["recipe"]["commands"],
              "reprotest_root": str(tree / subdir)})


def example(work: Path) -> Project:
    """examples/mcp-notes-server at HEAD, pinned so others' commits do not move it."""
    head = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True
                ).stdout.strip()
    tree = work / "example"
    tree.mkdir()
    sub = "examples/mcp-notes-server"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", head, sub], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    project = python_project("example", [str(ROOT), "--ref", head, "--subdir", sub],
                             tree / sub, "", work / "example-deps")
    return dataclasses.replace(project, info={**project.info, "commit": head})


def pypi(work: Path) -> Project:
    """The PyPI sdist of an official MCP server, downloaded once, unpacked (a directory)."""
    name, version = PYPI_SERVER
    store = CACHE / "sdists"
    store.mkdir(parents=True, exist_ok=True)
    found = sorted(store.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))
    if not found:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
              ":all:", "-d", str(store), f"{name}=={version}"])
        found = sorted(store.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))
    if not found:
        sys.exit(f"pip download left no sdist of {name}=={version} in {store}")
    with tarfile.open(found[0]) as tar:
        tar.extractall(work / "pypi", filter="data")
    tree = next((work / "pypi").iterdir())
    project = python_project("pypi", [str(tree)], tree, "", work / "pypi-deps")
    return dataclasses.replace(project, info={**project.info, "sdist": found[0].name})


def npm(work: Path, repo: str, member: str) -> Project:
    """One server of an npm-workspaces monorepo, exported whole at one commit (its
    tsconfig ``extends`` the root's, which reprobuild sends with ``--subdir`` too)."""
    git_dir = Path(repo) if Path(repo).is_dir() else CACHE / "npm-repo.git"
    if not Path(repo).is_dir() and not git_dir.is_dir():
        _run(["git", "clone", "-q", "--bare", repo, str(git_dir)])
    head = _run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
                capture_output=True).stdout.strip()
    tree = work / "npm"
    tree.mkdir()
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", head],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    report = warm_report([str(tree), "--subdir", member])
    bare = bare_from(report, tree, work / "npm-deps", member)
    flags = dict(bare.env).get("REPROBUILD_NPM_FLAGS", "")
    cache = CACHE / "npm-cache"
    npm_env = (("npm_config_cache", str(cache)), ("npm_config_audit", "false"),
               ("npm_config_fund", "false"), ("npm_config_update_notifier", "false"))
    host_env = {**os.environ, **dict(npm_env)}
    # Warm the bench's npm cache online once (in a scratch copy: the tree stays pristine),
    # then install node_modules into the preinstalled copy from it, offline.
    scratch = work / "npm-warm"
    shutil.copytree(tree, scratch, symlinks=True)
    _run(["npm", "ci", "--ignore-scripts", *flags.split()], cwd=scratch / member,
         env=host_env, capture_output=True)
    shutil.rmtree(scratch)
    pre_tree = work / "npm-pre"
    shutil.copytree(tree, pre_tree, symlinks=True)
    _run(["npm", "ci", "--offline", *flags.split()], cwd=pre_tree / member, env=host_env,
         capture_output=True)
    up = "/".join(".." for _ in member.split("/"))
    pack = (f"npm pack --offline --cache \"$PWD/{up}/.pack-cache\" "
            f"--pack-destination {up}/reprotest-out")
    return Project(
        name="npm", check_args=(str(tree), "--subdir", member), tree=tree, subdir=member,
        same=(f"mkdir -p reprotest-out && cd {member} && npm ci --offline {flags} && "
              f"npm run build --if-present && {pack}"),
        pre=(f"mkdir -p reprotest-out && cd {member} && npm run build --if-present && "
             f"{pack}"),
        pre_tree=pre_tree, artifacts="reprotest-out/*.tgz",
        env=(*npm_env, ("SOURCE_DATE_EPOCH", _epoch(report))),
        bare=bare,
        info={"source": report["source"], "commit": head, "member": member,
              "recipe": report["recipe"]["commands"], "reprotest_root": str(tree)})


# ------------------------------------------------------------------ the timed runs


def timed(cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
          ) -> tuple[float, int, str]:
    """Wall seconds, exit code and the output's tail of one command."""
    started = time.monotonic()
    done = subprocess.run(list(cmd), cwd=cwd, env=None if env is None else dict(env),
                          capture_output=True, text=True, check=False)
    return time.monotonic() - started, done.returncode, _tail(done.stdout + done.stderr)


def bare_build(b: Bare, *, deps_mode: str = "ro") -> tuple[int, str]:
    """One plain build: the tree and the deps bound read-only, copied into a tmpfs (where
    the check's sandbox builds too), the recipe's commands; nothing else."""
    name = f"reprobuild-bench-{uuid.uuid4().hex[:12]}"
    flags = [f"--env={k}={v}" for k, v in b.env]
    mounts = ["-v", f"{b.tree}:/src:ro", "--tmpfs", "/tmp:exec"]
    if b.deps is not None:
        mounts += ["-v", f"{b.deps}:/deps:{deps_mode}"]
    try:
        done = subprocess.run(
            ["docker", "run", "--rm", "--name", name, "--network", "none", *mounts, *flags,
             "-e", "REPROBUILD_OUT=/tmp/out", b.image_id, "sh", "-c",
             f"mkdir -p /tmp/out && cp -r /src /tmp/p && cd /tmp/p && {b.command}"],
            capture_output=True, text=True, check=False)
    finally:  # an interrupted `docker run` can leave its container behind
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    return done.returncode, _tail(done.stdout + done.stderr)


def bare_pair(b: Bare) -> tuple[float, int, str]:
    """Two bare builds at once (on 2 cores they compete for CPU, as the check's do)."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: bare_build(b), range(2)))
    seconds = time.monotonic() - started
    bad = next(((c, log) for c, log in results if c != 0), (0, ""))
    return seconds, bad[0], bad[1]


def prepare_bare(b: Bare, name: str) -> None:
    """One untimed bare build with the deps writable: the Python frontend makes the
    prepared venv's interpreter links (the cache holds none), idempotently, so the timed
    builds can bind the deps read-only."""
    code, log = bare_build(b, deps_mode="rw")
    if code != 0:
        sys.exit(f"the bare build of {name} failed (exit {code}):\n{log}")


def run_one(p: Project, config: str, round_index: int, reprotest: Sequence[str]) -> Run:
    if config == "check":
        seconds, code, log = timed([sys.executable, "-m", "reprobuild", "check", "--quiet",
                                    *p.check_args], ROOT)
    elif config in {"reprotest", "reprotest-pre"}:
        root = p.tree if config == "reprotest" else p.pre_tree
        command = p.same if config == "reprotest" else p.pre
        env = {**os.environ, **dict(p.env)}
        env.pop("VIRTUAL_ENV", None)
        seconds, code, log = timed([*reprotest, "--no-diffoscope", "-c", command, ".",
                                    p.artifacts], root, env)
    else:
        seconds, code, log = bare_pair(p.bare)
    note = ""
    if code != 0:  # first line for the table, the output's tail for the JSON
        lines = log.strip().splitlines()
        first = ("outputs differ" if config.startswith("reprotest") and code == 1 else
                 lines[-1] if lines else "no output")
        note = f"{first}\n{log}"
    return Run(p.name, config, round_index, round(seconds, 4), code, code == 0, note)


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--project", default="example,pypi,npm",
                        help="comma-separated: example, pypi, npm")
    parser.add_argument("--json", type=Path, help="write every run and the figures here")
    parser.add_argument("--install", action="store_true",
                        help=f"install reprotest's host tools if missing ({APT})")
    parser.add_argument("--npm-repo", default=str(NPM_MIRROR) if NPM_MIRROR.is_dir()
                        else NPM_REPO, help="the monorepo (git dir or URL)")
    parser.add_argument("--npm-member", default=NPM_MEMBER)
    args = parser.parse_args()
    names = [n.strip() for n in args.project.split(",") if n.strip()]
    unknown = sorted(set(names) - {"example", "pypi", "npm"})
    if unknown:
        parser.error(f"unknown project(s): {', '.join(unknown)}")
    need_host_tools(args.install)
    compile_reprobuild()
    reprotest = reprotest_command()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-reprotest-") as tmp:
        work = Path(tmp)
        makers = {"example": lambda: example(work), "pypi": lambda: pypi(work),
                  "npm": lambda: npm(work, args.npm_repo, args.npm_member)}
        projects = [makers[n]() for n in names]
        for project in projects:
            prepare_bare(project.bare, project.name)
        for round_index in range(args.rounds + 1):  # round 0 warms up and is discarded
            for p in projects:
                for config in rotation(CONFIGS, round_index):
                    run = run_one(p, config, round_index, reprotest)
                    runs.append(run)
                    status = "ok" if run.ok else f"exit {run.exit_code}"
                    print(f"round {round_index}{' (warm-up)' if round_index == 0 else ''} "
                          f"{p.name:8} {config:14} {run.seconds:7.2f}s {status}",
                          file=sys.stderr, flush=True)
        summaries = [summarize(p.name, runs) for p in projects]
        print(format_table(summaries))
        if args.json is not None:
            args.json.write_text(json.dumps({
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "reprotest": REPROTEST, "rounds": args.rounds},
                "projects": {p.name: {**s.as_dict(), "info": p.info,
                                      "commands": {"reprotest": p.same,
                                                   "reprotest-pre": p.pre,
                                                   "bare": p.bare.command}}
                             for p, s in zip(projects, summaries, strict=True)},
                "runs": [dataclasses.asdict(r) for r in runs]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
