"""What differs between build A and build B, decided by pure functions.

A reproducible build must not depend on the machine it ran on. Build A runs in a plain
"control" environment; build B changes every selected variation at once, so any
difference between their outputs proves the build leaks that part of the environment
into its artifacts. Each variation here has a fixture in ``tests/fixtures`` that is
sensitive to exactly it (see ``tests/integration/test_variations.py``).

Nothing in this module touches Docker: the sandbox turns a :class:`BuildEnv` into
container settings, and unit tests check the plan directly.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reprobuild.archive import FileOrder
from reprobuild.errors import InputError
from reprobuild.images.definitions import FAKETIME_LINK


class Variation(str, Enum):
    """One aspect of the build environment that build B changes."""

    BUILD_PATH = "build_path"
    HOSTNAME = "hostname"
    USER = "user"
    UMASK = "umask"
    TIMEZONE = "timezone"
    LOCALE = "locale"
    HOME = "home"
    CLOCK = "clock"
    CPUS = "cpus"
    ENV_ORDER = "env_order"
    FILE_ORDER = "file_order"


CLOCK_SHIFT_DAYS = 398
"""How far build B's clock runs ahead (reprotest's shift: over a year, not a whole one)."""

CLOCK_OFFSET_S = 3
"""How far build B's clock runs ahead when the clock variation is off (``-clock``,
``none``). The two builds run at the same moment, so without it a stamp to the second
can be the same in both, which any two real builds, run at different times, would not be.
Three seconds still differ when A reaches its stamp up to two seconds after B; coarser
stamps (the day) almost never flip, which the clock variation (+398 days) is for.
libfaketime's variables (``LD_PRELOAD``, ``FAKETIME``, and ``FAKETIME_SHARED``, which it
sets itself and which names a pid) are in B's environment only: A stays a plain build,
as ``verify``'s one rebuild is. Preloading it in A too would not make the environments
equal, since the pid in ``FAKETIME_SHARED`` differs between the two containers."""

STAGGER_S = 1.5
"""How much later build B's commands start when the toolchain reads the clock past libc
(Go): libfaketime cannot move that clock, so B's own is read later instead."""


class EnvOrder(str, Enum):
    """Order in which environment variables are handed to the build's first process."""

    SORTED = "sorted"
    REVERSED = "reversed"


@dataclass(frozen=True)
class BuildEnv:
    """Every environment setting of one build; the sandbox applies exactly these."""

    name: str
    varied: tuple[Variation, ...]
    workdir: str
    hostname: str
    domainname: str
    uid: int
    gid: int
    user: str
    umask: str
    timezone: str
    locale: str
    home: str
    faketime: str | None
    cpuset: str | None
    env_order: EnvOrder
    file_order: FileOrder
    start_delay_s: float = 0.0


# Build A's value, build B's value, and a sentence for `reprobuild variations` / README.
_A = BuildEnv(
    name="a",
    varied=(),
    workdir="/build/src",
    hostname="reprobuild-a",
    domainname="a.reprobuild.invalid",
    uid=1000,
    gid=1000,
    user="builder",
    umask="0022",
    timezone="UTC",
    locale="C.UTF-8",
    home="/home/builder",
    faketime=None,
    cpuset=None,
    env_order=EnvOrder.SORTED,
    file_order=FileOrder.SORTED,
)

DESCRIPTIONS: dict[Variation, str] = {
    Variation.BUILD_PATH: "source unpacked at /build/src vs /var/tmp/rebuild/second-build/src",
    Variation.HOSTNAME: "hostname and domain name reprobuild-a.a.reprobuild.invalid vs "
    "rebuild-b.b.reprobuild.test",
    Variation.USER: "uid/gid and user name 1000:1000 builder vs 2000:2000 rebuilder",
    Variation.UMASK: "umask 0022 vs 0002",
    Variation.TIMEZONE: "TZ=UTC vs TZ=Etc/GMT-14",
    Variation.LOCALE: "LANG/LC_ALL C.UTF-8 vs et_EE.UTF-8 (Estonian collation sorts z after s)",
    Variation.HOME: "HOME=/home/builder vs HOME=/home/rebuilder",
    Variation.CLOCK: "system clock real vs shifted +398 days (libfaketime); without it B's "
    f"clock still runs {CLOCK_OFFSET_S} s ahead, so the builds never share a second",
    Variation.CPUS: "all CPUs vs one CPU (cpuset; nproc and sched_getaffinity see it)",
    Variation.ENV_ORDER: "environment variables in sorted vs reversed order",
    Variation.FILE_ORDER: "directory entries in opposite orders (tmpfs lists in reverse "
    "creation order; the source tar is streamed sorted vs reversed)",
}


def _b_value(variation: Variation, host_cpus: int) -> dict[str, object]:
    """The settings build B uses when ``variation`` is selected."""
    match variation:
        case Variation.BUILD_PATH:
            return {"workdir": "/var/tmp/rebuild/second-build/src"}
        case Variation.HOSTNAME:
            return {"hostname": "rebuild-b", "domainname": "b.reprobuild.test"}
        case Variation.USER:
            return {"uid": 2000, "gid": 2000, "user": "rebuilder"}
        case Variation.UMASK:
            return {"umask": "0002"}
        case Variation.TIMEZONE:
            return {"timezone": "Etc/GMT-14"}
        case Variation.LOCALE:
            return {"locale": "et_EE.UTF-8"}
        case Variation.HOME:
            return {"home": "/home/rebuilder"}
        case Variation.CLOCK:
            return {"faketime": f"+{CLOCK_SHIFT_DAYS}d"}
        case Variation.CPUS:
            return {"cpuset": "0"} if host_cpus > 1 else {}
        case Variation.ENV_ORDER:
            return {"env_order": EnvOrder.REVERSED}
        case Variation.FILE_ORDER:
            return {"file_order": FileOrder.REVERSED}


def in_order(selected: Iterable[Variation]) -> tuple[Variation, ...]:
    """The variations of ``selected`` in their declaration order (plans, reports and the
    explanation's groups list them the same way whatever order they came in)."""
    chosen = set(selected)
    return tuple(v for v in Variation if v in chosen)


def unavailable(selected: Iterable[Variation], *, host_cpus: int) -> tuple[Variation, ...]:
    """Selected variations this machine cannot apply (so the user can be told)."""
    return tuple(v for v in selected if v is Variation.CPUS and host_cpus < 2)


def plan_pair(selected: Iterable[Variation], *, host_cpus: int,
              clock_via_libc: bool = True) -> tuple[BuildEnv, BuildEnv]:
    """Return (A, B): A is the control build, B changes every selected variation.

    B never reads A's clock: without the clock variation its clock runs
    :data:`CLOCK_OFFSET_S` ahead, and when the toolchain reads the time past libc
    (``clock_via_libc`` false) its commands also start :data:`STAGGER_S` later.
    """
    chosen = in_order(selected)
    b_fields: dict[str, object] = {"faketime": f"+{CLOCK_OFFSET_S}"}
    if not clock_via_libc:
        b_fields["start_delay_s"] = STAGGER_S
    for variation in chosen:
        b_fields.update(_b_value(variation, host_cpus))
    a = BuildEnv(**{**_A.__dict__, "varied": chosen})
    b = BuildEnv(**{**_A.__dict__, **b_fields, "name": "b", "varied": chosen})
    return a, b


def parse_variations(text: str) -> frozenset[Variation]:
    """Parse ``--variations``: ``all``, ``none``, or a comma list, ``-name`` removes one.

    ``all,-clock`` means every variation but the clock; ``hostname,user`` only those two.
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError("--variations is empty", "use 'all', 'none' or a comma list such as "
                         "'hostname,clock'")
    valid = [v.value for v in Variation]
    chosen: set[Variation] = set()
    for raw in parts:
        remove = raw.startswith("-")
        name = raw.lstrip("-").replace("-", "_")
        if name in ("all", "none"):
            group = set(Variation) if name == "all" else set()
        elif name in valid:
            group = {Variation(name)}
        else:
            close = difflib.get_close_matches(name, [*valid, "all", "none"], n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InputError(f"unknown variation '{name}' in --variations",
                             f"{hint}known: all, none, {', '.join(valid)}")
        chosen = chosen - group if remove else chosen | group
    return frozenset(chosen)


def environment(env: BuildEnv, *, path: str, out_dir: str,
                recipe_env: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The complete environment of the build command, in the order the plan asks for."""
    pairs: dict[str, str] = dict(recipe_env)
    pairs.update({
        "PATH": path,
        "HOME": env.home,
        "USER": env.user,
        "LOGNAME": env.user,
        "TZ": env.timezone,
        "LANG": env.locale,
        "LC_ALL": env.locale,
        "TMPDIR": "/tmp",
        "REPROBUILD_OUT": out_dir,
    })
    if env.faketime is not None:
        pairs["LD_PRELOAD"] = FAKETIME_LINK
        pairs["FAKETIME"] = env.faketime
        # Not FAKETIME_DONT_FAKE_MONOTONIC: with libfaketime 0.9.10 it makes Python's
        # time.sleep() fail with EINVAL (clock_nanosleep on CLOCK_MONOTONIC).
    ordered = sorted(pairs.items(), reverse=env.env_order is EnvOrder.REVERSED)
    return tuple(ordered)


SHELL_SYNTAX = frozenset("|&;<>()`*?[]{}~!#'\\\n")
"""A command with any of these (or an assignment first) goes to ``/bin/sh -e -c``."""

_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)


def expand_variables(word: str, environ: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced from ``environ``, unknown names left as they are:
    ``os.path.expandvars``, which only reads ``os.environ``, over the build's own planned
    environment (pure; the same algorithm as posixpath's)."""
    position = 0
    while (found := _VARIABLE.search(word, position)) is not None:
        name = found.group(1)
        if name.startswith("{") and name.endswith("}"):
            name = name[1:-1]
        if name not in environ:
            position = found.end()
            continue
        head = word[:found.start()] + environ[name]
        word, position = head + word[found.end():], len(head)
    return word


def command_argv(command: str, environ: Sequence[tuple[str, str]]) -> list[str]:
    """What a recipe command runs, in exactly the build's environment (pure).

    A command with no shell syntax is executed directly, its words split as ``shlex``
    does and ``$VAR`` expanded from the environment (a word that is only an empty
    ``$VAR`` is no word at all, as in a shell): so the build tool receives the environment
    in exactly the planned order, which every shell would re-order (dash and bash both
    export from a hash table), erasing the env_order variation. Anything with shell
    syntax, or that leaves no word, goes to ``/bin/sh -e -c`` as written.
    """
    shell = ["/bin/sh", "-e", "-c", command]
    if SHELL_SYNTAX & set(command) or "=" in (command.split() or [""])[0]:
        return shell
    values = dict(environ)
    argv = []
    for word in shlex.split(command):
        expanded = expand_variables(word, values)
        if expanded or not word.startswith("$"):
            argv.append(expanded)
    return argv or shell  # nothing to run: what the shell makes of it (nothing, exit 0)


def command_lines(commands: Sequence[str], environ: Sequence[tuple[str, str]]) -> list[str]:
    """The shell lines that run ``commands`` in order under ``set -e`` (pure): each is
    announced on stderr as ``+ COMMAND``, then run by ``env -i`` in exactly ``environ``
    (:func:`command_argv`); the last one replaces the shell."""
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in environ)
    lines: list[str] = []
    for index, command in enumerate(commands):
        argv = " ".join(shlex.quote(word) for word in command_argv(command, environ))
        lines.append(f"printf '+ %s\\n' {shlex.quote(command)} >&2")
        lines.append(f"{'exec ' if index == len(commands) - 1 else ''}env -i -- {assignments} "
                     f"{argv}")
    return lines


def build_script(env: BuildEnv, *, project_dir: str, commands: Sequence[str],
                 environ: Sequence[tuple[str, str]], deps_dir: str | None = None) -> str:
    """The shell script the build container runs as its only process.

    It unpacks the source tar from stdin (so the tmpfs directory order follows the tar
    order), then, with ``deps_dir``, a second tar (the fetched dependencies) that follows
    it on stdin, applies the umask, and runs the recipe's commands one after the other,
    each under a clean environment built with ``env -i`` in exactly the plan's order
    (:func:`command_argv`), each announced on stderr as ``+ COMMAND``; the first that
    fails ends the build with its status. The last one replaces the shell: no process of
    ours stands between the sandbox and the build tool (a Python launcher there cost
    ~30 ms of every build).
    """
    return "\n".join([
        "set -eu",
        f"umask {env.umask}",
        f"tar -x -f - -C {shlex.quote(env.workdir)}",
        *([f"tar -x -f - -C {shlex.quote(deps_dir)}"] if deps_dir else []),
        *([f"sleep {env.start_delay_s:g}"] if env.start_delay_s else []),
        f"cd {shlex.quote(project_dir)}",
        *command_lines(commands, environ),
        "",
    ])


def markers(env: BuildEnv) -> dict[Variation, tuple[str, ...]]:
    """Strings only ``env`` (a varied build) has, per variation it varies: finding one in
    an artifact names the variation that put it there. Paths come before names, so a home
    directory that contains the user name is matched as the home directory."""
    found: dict[Variation, tuple[str, ...]] = {}
    if env.workdir != _A.workdir:
        found[Variation.BUILD_PATH] = (env.workdir.removesuffix("/src"),)
    if env.home != _A.home:
        found[Variation.HOME] = (env.home,)
    if env.hostname != _A.hostname:
        found[Variation.HOSTNAME] = (f"{env.hostname}.{env.domainname}", env.domainname,
                                     env.hostname)
    if env.user != _A.user:
        found[Variation.USER] = (env.user,)
    if env.timezone != _A.timezone:
        found[Variation.TIMEZONE] = (env.timezone, *_utc_offsets(env.timezone))
    if env.locale != _A.locale:
        found[Variation.LOCALE] = (env.locale.split(".")[0],)
    if env.umask != _A.umask:
        found[Variation.UMASK] = (env.umask, f"0o{int(env.umask, 8):o}")
    return found


def _utc_offsets(zone: str) -> tuple[str, ...]:
    """How a time in ``zone`` shows its offset (``+1400``, ``+14:00``)."""
    try:
        offset = datetime.now(ZoneInfo(zone)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return ()
    if offset is None:
        return ()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return (f"{sign}{hours:02d}{rest:02d}", f"{sign}{hours:02d}:{rest:02d}")


def _clock(faketime: str | None) -> str:
    """``real``, ``real +3 s`` (the offset without the clock variation), or the shift."""
    if faketime is None:
        return "real"
    return f"real {faketime} s" if faketime.lstrip("+").isdigit() else faketime


def settings(env: BuildEnv) -> dict[str, str]:
    """The concrete value of every variation in one build, for the report."""
    return {
        "build_path": env.workdir, "hostname": f"{env.hostname}.{env.domainname}",
        "user": f"{env.user} ({env.uid}:{env.gid})", "umask": env.umask,
        "timezone": env.timezone, "locale": env.locale, "home": env.home,
        "clock": _clock(env.faketime), "cpus": env.cpuset or "all",
        "env_order": env.env_order.value, "file_order": env.file_order.value,
    }
