"""Every fatal error reprobuild can raise, and the exit code each one maps to.

The core never prints or exits: it raises one of these. ``cli.py`` is the only place
that turns them into a one-line message, a hint and an exit code. Keeping the mapping
here (one class, one code) means CI jobs can rely on the codes never drifting.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reprobuild.evidence import EgressAttempt


class ExitCode(IntEnum):
    """Process exit codes; documented in README.md ("Exit codes")."""

    REPRODUCIBLE = 0
    UNREPRODUCIBLE = 1
    BAD_INPUT = 2
    EGRESS = 3
    BUILD_FAILED = 4
    ENVIRONMENT = 5
    REPACKED = 6
    """verify: every published file has the rebuild's content, packed differently."""
    INTERRUPTED = 130


class ReprobuildError(Exception):
    """Base class: a message saying what is wrong and a hint saying what to do next."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(ReprobuildError):
    """Bad invocation or bad input: missing repository, unknown ref, malformed recipe."""

    exit_code = ExitCode.BAD_INPUT


class SourceError(InputError):
    """The source could not be fetched, or the ref/subdir does not exist."""


class RecipeError(InputError):
    """A recipe file is malformed, or no recipe fits the project."""


class DependencyIntegrityError(InputError):
    """A file a registry serves does not match the hash its lock pins."""

    def __init__(self, package: str, expected: str, actual: str, *,
                 source: str = "the lockfile") -> None:
        super().__init__(
            f"dependency {package} does not match {source}: expected {expected}, "
            f"the registry served {actual}",
            "the lockfile hash was edited, or the registry serves a different file than when "
            "it was locked; regenerate the lock from a trusted machine and review the diff")
        self.package = package
        self.expected = expected
        self.actual = actual


class BuildFailure(ReprobuildError):
    """The untrusted build failed, timed out, or produced output we refuse to copy."""

    exit_code = ExitCode.BUILD_FAILED


class UnsafeArchiveError(BuildFailure):
    """An archive coming out of a sandbox holds links, absolute/``..`` paths or is too big."""


class EnvironmentFailure(ReprobuildError):
    """Docker is unreachable, or a toolchain image could not be bootstrapped."""

    exit_code = ExitCode.ENVIRONMENT


class Interrupted(ReprobuildError):
    """The user pressed Ctrl-C; everything we created has been removed.

    ``egress`` holds the network attempts the trap had seen by then: evidence survives an
    interruption, so the error's reports can still list them.
    """

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str, hint: str | None = None, *,
                 egress: Sequence[EgressAttempt] = ()) -> None:
        super().__init__(message, hint)
        self.egress: tuple[EgressAttempt, ...] = tuple(egress)


def suggestion(word: str, known: Sequence[str], *, listing: str, empty: str,
               shown: int = 8) -> str:
    """A hint for an unknown name: close matches, else a few of the known ones.

    ``listing`` introduces the known names ("known branches/tags"), ``empty`` is the hint
    when there are none.
    """
    close = difflib.get_close_matches(word, known, n=3)
    if close:
        return f"did you mean: {', '.join(close)}?"
    if known:
        more = "" if len(known) <= shown else f" (+{len(known) - shown} more)"
        return f"{listing}: {', '.join(known[:shown])}{more}"
    return empty


def visible(text: str, *, lines: bool = False) -> str:
    """Text from a build, a repository or a recipe with every control character made
    visible: ``\\x1b``, ``\\x9b``, ``\\u202e`` instead of the character itself.

    Every renderer (terminal, JUnit, SARIF, Markdown) and every error message shows such
    text through this one function, so an escape sequence in a log line, a file name or a
    recipe key never clears a screen, sets a window title, reorders a line (bidi
    overrides) or makes an XML report unparseable. "Control" is what Python does not call
    printable: C0 and C1 controls, DEL, format characters (bidi, zero-width), line and
    paragraph separators, unassigned and private code points, spaces other than U+0020.
    ``lines`` keeps newline and tab (a log tail, a diffoscope excerpt); otherwise the
    text stays one line, so a name cannot start a line that looks like reprobuild's own.
    It lives here, the lowest layer, because error messages need it as much as reports.
    """
    keep = "\n\t" if lines else ""
    if (text.translate(_KEEP_TABLE) if lines else text).isprintable():
        return text
    return "".join(c if c in keep or c.isprintable() else _shown(c) for c in text)


_KEEP_TABLE = str.maketrans("", "", "\n\t")


def _shown(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
