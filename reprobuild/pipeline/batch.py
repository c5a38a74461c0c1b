"""``reprobuild batch``: many targets from one TOML file, a bounded number at a time.

The batch file is validated as strictly as a recipe (unknown keys, wrong types, duplicate
names are errors naming the file and the target). Each target runs as its own
``reprobuild check`` (or ``verify``) process: a target that crashes, hangs or is
interrupted cannot take the others with it, each process cleans up its own Docker
objects, and its reports (JSON, JUnit, SARIF, Markdown) are exactly what a single check
writes. The batch result embeds them, so ``reprobuild merge`` can combine shards without
re-reading anything else.

Scaling across machines is the CI's job: :func:`shard_of` assigns a target to one of N
shards by a hash of its name alone, so adding a target never moves another one, and a
GitHub Actions matrix or a GitLab ``parallel:`` job runs ``--shard I/N`` per machine.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprobuild.errors import ExitCode, InputError
from reprobuild.explain.search import parse_budget
from reprobuild.recipes import MAX_TIMEOUT_S, check_number
from reprobuild.sandbox.spec import host_cpus

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = ["BATCH_SCHEMA", "BatchResult", "Target", "TargetResult", "combined_exit",
           "default_jobs", "load_batch", "parse_shard", "run_batch", "select_shard",
           "shard_of"]

BATCH_SCHEMA = "reprobuild.batch/v1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "name": (str, True), "source": (str, True), "ref": (str, False), "subdir": (str, False),
    "recipe": (str, False), "variations": (str, False), "timeout": ((int, float), False),
    "verify": ((str, bool), False), "explain_budget": ((str, int), False),
}
# Most severe first: the environment failed (the night's results mean nothing), egress (a
# possible attack), a target that cannot be checked as written, a failed build, an
# unreproducible artifact, a repacked release, reproducible.
SEVERITY = (ExitCode.INTERRUPTED, ExitCode.ENVIRONMENT, ExitCode.EGRESS, ExitCode.BAD_INPUT,
            ExitCode.BUILD_FAILED, ExitCode.UNREPRODUCIBLE, ExitCode.REPACKED,
            ExitCode.REPRODUCIBLE)
_PROGRESS = re.compile(r"^\[\s*[\d.]+s\] (?P<step>.+)$")


@dataclass(frozen=True)
class Target:
    """One entry of the batch file."""

    index: int
    name: str
    source: str
    ref: str | None = None
    subdir: str | None = None
    recipe: str | None = None
    variations: str | None = None
    timeout: float | None = None
    verify: str | bool | None = None
    """A release spec (``--against``), or true for the release the project names."""
    explain_budget: str | int | None = None
    """``--explain-budget`` of a check (extra builds, or ``600s``); verify has none."""

    def argv(self) -> list[str]:
        """The ``reprobuild`` command line that checks this target (reports added later)."""
        args = ["verify" if self.verify else "check", self.source]
        for option, value in (("--ref", self.ref), ("--subdir", self.subdir),
                              ("--recipe", self.recipe), ("--variations", self.variations)):
            if value is not None:
                args += [option, value]
        if self.timeout is not None:
            args += ["--timeout", str(self.timeout)]
        if isinstance(self.verify, str):
            args += ["--against", self.verify]
        if self.explain_budget is not None and not self.verify:
            args += ["--explain-budget", str(self.explain_budget)]
        return args


@dataclass(frozen=True)
class TargetResult:
    """What one target's process left: its exit code and the reports it wrote."""

    index: int
    name: str
    exit_code: int
    verdict: str
    seconds: float
    shard: str
    report: dict[str, Any]
    junit: str
    sarif: dict[str, Any]
    markdown: str
    stderr_tail: str = ""


@dataclass(frozen=True)
class BatchResult:
    """Every target's result, in batch-file order, and the batch's exit code."""

    batch: str
    shard: str
    jobs: int
    seconds: float
    targets: tuple[TargetResult, ...]
    schema: str = BATCH_SCHEMA
    host: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """The most severe of the targets' exit codes (see :data:`SEVERITY`)."""
        return combined_exit([t.exit_code for t in self.targets])

    def to_dict(self) -> dict[str, Any]:
        """The batch JSON (``reprobuild.batch/v1``)."""
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return {"schema": data.pop("schema"), "exit_code": data.pop("exit_code"), **data}


def combined_exit(codes: Sequence[int]) -> int:
    """The most severe exit code (an unknown code ranks as an environment failure)."""
    if not codes:
        return int(ExitCode.REPRODUCIBLE)
    rank = {int(c): i for i, c in enumerate(SEVERITY)}
    return min(codes, key=lambda c: rank.get(c, rank[int(ExitCode.ENVIRONMENT)]))


def _fail(origin: str, where: str, problem: str, hint: str) -> InputError:
    return InputError(f"{origin}: {where}: {problem}", hint)


def load_batch(path: Path) -> list[Target]:
    """Parse and validate a batch file; every problem names the file and the target."""
    origin = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {origin}: {exc.strerror or exc}",
                         "pass a readable batch file") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{origin}: invalid TOML: {exc}", "see https://toml.io") from exc
    unknown = sorted(set(data) - {"schema", "target"})
    if unknown:
        raise _fail(origin, "top level", f"unknown key {unknown[0]!r}",
                    "a batch file has schema = 1 and [[target]] tables")
    if data.get("schema", 1) != 1:
        raise _fail(origin, "schema", f"{data['schema']!r} is not supported", "use schema = 1")
    tables = data.get("target")
    if not isinstance(tables, list) or not tables:
        raise _fail(origin, "[[target]]", "no targets", "add [[target]] tables with name "
                    "and source")
    targets: list[Target] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        where = f"target {index + 1}" + (f" ({table.get('name')})"
                                         if isinstance(table, dict) and "name" in table else "")
        if not isinstance(table, dict):
            raise _fail(origin, where, "not a table", "use [[target]]")
        for key, value in table.items():
            if key not in _KEYS:
                close = difflib.get_close_matches(key, list(_KEYS), n=1)
                raise _fail(origin, where, f"unknown key {key!r}"
                            + (f"; did you mean {close[0]!r}?" if close else ""),
                            f"known keys: {', '.join(_KEYS)}")
            kind, _ = _KEYS[key]
            if (isinstance(value, bool) and kind in ((int, float), int, float)) \
                    or not isinstance(value, kind):
                raise _fail(origin, where, f"{key} has the wrong type",
                            f"{key} is a {'string' if kind is str else 'number or string'}")
        for key, (_, required) in _KEYS.items():
            if required and key not in table:
                raise _fail(origin, where, f"missing {key}", "every target needs name and "
                            "source")
        if table.get("verify") and "explain_budget" in table:
            raise _fail(origin, where, "explain_budget is for check targets",
                        "verify explains nothing by rebuilding; drop one of them")
        if "timeout" in table:
            check_number(table["timeout"], name="timeout", maximum=MAX_TIMEOUT_S,
                         origin=f"{origin}: {where}")
        if "explain_budget" in table:
            try:
                parse_budget(str(table["explain_budget"]))
            except InputError as exc:
                raise _fail(origin, where, exc.message.replace("--explain-budget",
                                                               "explain_budget"),
                            exc.hint or "") from exc
        name = table["name"]
        if not _NAME.fullmatch(name):
            raise _fail(origin, where, f"name {name!r} is not a simple name",
                        "use letters, digits, '.', '_' and '-' (64 at most)")
        if name in seen:
            raise _fail(origin, where, f"name {name!r} is used twice", "names must be unique")
        seen.add(name)
        fields = {k: v for k, v in table.items() if not (k == "verify" and v is False)}
        targets.append(Target(index=index, **fields))
    return targets


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1-based) as a pair; anything else is an input error."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m is None or not 1 <= int(m[1]) <= int(m[2]):
        raise InputError(f"--shard {text!r} is not I/N with 1 <= I <= N",
                         "e.g. --shard 2/4 for the second of four shards")
    return int(m[1]), int(m[2])


def shard_of(name: str, count: int) -> int:
    """The 1-based shard of a target: from its name alone, so it never moves."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) % count + 1


def select_shard(targets: Sequence[Target], shard: tuple[int, int] | None) -> list[Target]:
    """The targets of one shard (all of them without ``--shard``)."""
    if shard is None:
        return list(targets)
    index, count = shard
    return [t for t in targets if shard_of(t.name, count) == index]


def default_jobs() -> int:
    """How many targets run at once by default: one per two CPUs (each target runs its two
    builds side by side, so one target already keeps two CPUs busy: measured on 2 CPUs,
    two targets at once gave 394 targets/hour against 422 for one), at most one per 4 GiB
    of memory, at least one."""
    cpus = host_cpus()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 4 << 30
    return max(1, min(cpus // 2, memory // (4 << 30)))


ProgressCallback = Callable[[str, str], None]
"""(target name, what it is doing now): "queued", a phase, or "done: <verdict>"."""


def _read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def _run_one(target: Target, work: Path, out: Path | None, shard: str,
             on_progress: ProgressCallback, stop: threading.Event,
             children: set[subprocess.Popen[str]], lock: threading.Lock) -> TargetResult:
    """One target's ``reprobuild`` process, its progress lines, its reports."""
    files = {fmt: work / f"{target.name}.{fmt}" for fmt in ("json", "junit", "sarif",
                                                            "markdown")}
    argv = [sys.executable, "-m", "reprobuild", *target.argv()]
    for fmt, path in files.items():
        argv += [f"--{fmt}", str(path)]
    if out is not None:
        argv += ["--out", str(out / target.name)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS")}  # the batch reports once
    started = time.monotonic()
    tail: list[str] = []
    code = int(ExitCode.INTERRUPTED)
    if not stop.is_set():
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, errors="replace", env=env, start_new_session=True)
        with lock:
            children.add(proc)
        try:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.rstrip("\n")
                m = _PROGRESS.match(line)
                if m is not None:
                    on_progress(target.name, m["step"])
                tail = [*tail[-19:], line]
            code = proc.wait()
        finally:
            with lock:
                children.discard(proc)
    report = _read_json(files["json"]) or {"verdict": "error", "exit_code": code,
                                           "message": "\n".join(tail[-3:])}
    sarif = _read_json(files["sarif"]) or {"version": "2.1.0", "runs": []}
    junit = files["junit"].read_text() if files["junit"].is_file() else ""
    markdown = files["markdown"].read_text() if files["markdown"].is_file() else ""
    verdict = str(report.get("verdict", "error"))
    on_progress(target.name, f"done: {verdict}")
    clean = ["".join(c if c.isprintable() else " " for c in line) for line in tail[-10:]]
    return TargetResult(index=target.index, name=target.name, exit_code=code, verdict=verdict,
                        seconds=round(time.monotonic() - started, 3), shard=shard,
                        report=report, junit=junit, sarif=sarif, markdown=markdown,
                        stderr_tail="\n".join(clean))


def run_batch(targets: Sequence[Target], *, batch: str, jobs: int, shard: str,
              out: Path | None, on_progress: ProgressCallback,
              host: Mapping[str, str] | None = None) -> BatchResult:
    """Run every target, ``jobs`` at a time; one target's failure never stops the others.

    Ctrl-C (or SIGTERM) stops starting targets and terminates the running ones, each of
    which removes its own Docker objects before it exits; the result then says which
    targets were interrupted, and the batch exits 130.
    """
    started = time.monotonic()
    stop = threading.Event()
    children: set[subprocess.Popen[str]] = set()
    lock = threading.Lock()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for target in targets:
        on_progress(target.name, "queued")
    with tempfile.TemporaryDirectory(prefix="reprobuild-batch-") as scratch, \
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_one, t, Path(scratch), out, shard, on_progress, stop,
                               children, lock) for t in targets]
        try:
            results = [f.result() for f in futures]
        except KeyboardInterrupt:
            stop.set()
            with lock:
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGTERM)
            results = [f.result() for f in futures]
    return BatchResult(batch=batch, shard=shard, jobs=jobs,
                       seconds=round(time.monotonic() - started, 3),
                       targets=tuple(sorted(results, key=lambda r: r.index)),
                       host=dict(host or {}))
