"""Terminal output: lazy rich consoles, the progress observer, escaping of untrusted text.

rich is imported on first use, so a quiet run (CI with ``--json``) never pays for it.
Text that comes from a build (logs, file names, egress details) is printed only through
:func:`escape` or with markup off, never as rich markup.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from reprobuild.errors import visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["RichProgress", "err", "escape", "out", "plain", "table"]


class _LazyConsole:
    """A rich Console made on first use: a quiet run (CI with --json) never imports rich,
    which is a sixth of the start-up."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415 - lazy, see class doc

            stream = sys.stderr if self._stderr else sys.stdout
            # Wide enough for artifact names and digests in a file or a CI log.
            self._console = Console(stderr=self._stderr, highlight=False,
                                    width=None if stream.isatty() else 140)
        return getattr(self._console, name)

    def real(self) -> Console:
        """The rich Console itself (for rich objects that need one, like Live)."""
        self.__getattr__("print")
        assert self._console is not None
        return self._console


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


def plain(text: str) -> str:
    """Lines of text from a build (a log tail, a diffoscope excerpt) made inert for a
    terminal: every control character but newline and tab is shown as ``\\xNN`` (rich
    itself passes ESC through, so an escape sequence in a build log would reach the
    terminal live), and a line longer than :data:`LINE_CHARS` is cut (one huge line must
    not flood the screen)."""
    return "\n".join(_clip(line) for line in visible(text, lines=True).split("\n"))


LINE_CHARS = 1000
"""The longest line of build text the summary prints (the rest is in the files)."""


def _clip(line: str) -> str:
    if len(line) <= LINE_CHARS:
        return line
    return f"{line[:LINE_CHARS]}… [{len(line) - LINE_CHARS} more characters]"


def escape(text: str) -> str:
    """Text from a build, a repository or a recipe (a name, a key, a message) as rich
    markup: markup escaped, every control character (newline too: one line stays one
    line) made visible (:func:`reprobuild.errors.visible`)."""
    from rich.markup import escape as rich_escape  # noqa: PLC0415 - lazy

    return rich_escape(_clip(visible(text)))


def table() -> Table:
    """The one table style of every listing."""
    from rich.table import Table  # noqa: PLC0415 - lazy

    return Table(show_edge=False, header_style="bold")


class RichProgress:
    """Progress observer: a spinner for the current step with the time since the start,
    a line per detail (stderr). Off a terminal (CI logs, ``reprobuild batch`` reading a
    target's stderr) every step and detail is one plain line, ``[  12.3s] step``, with the
    build's text stripped of control characters."""

    def __init__(self, console: _LazyConsole, enabled: bool) -> None:
        self._console = console
        self._enabled = enabled
        self._plain = enabled and not console.is_terminal
        self._status: Any = None
        self._started = time.monotonic()

    def __enter__(self) -> RichProgress:
        if self._enabled and not self._plain:
            self._status = self._console.status("starting")
            self._status.__enter__()
        elif self._plain and os.environ.get("GITHUB_ACTIONS") == "true":
            sys.stderr.write("::group::reprobuild progress\n")  # a foldable log group
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)
        elif self._plain and os.environ.get("GITHUB_ACTIONS") == "true":
            sys.stderr.write("::endgroup::\n")

    def _line(self, indent: str, message: str) -> None:
        clean = _clip(visible(message))
        sys.stderr.write(f"{indent}[{time.monotonic() - self._started:7.1f}s] {clean}\n")
        sys.stderr.flush()

    def step(self, message: str) -> None:
        """Show the new phase on the spinner (a line of its own off a terminal)."""
        if self._plain:
            self._line("", message)
        elif self._status is not None:
            elapsed = time.monotonic() - self._started
            self._status.update(f"{escape(message)} [dim]({elapsed:.0f}s)[/dim]")

    def detail(self, message: str) -> None:
        """Print one line of detail above the spinner."""
        if self._plain:
            self._line("  ", message)
        elif self._enabled:
            elapsed = time.monotonic() - self._started
            self._console.print(f"  [dim]{elapsed:5.1f}s {escape(message)}[/dim]")
