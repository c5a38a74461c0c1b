"""Progress reporting as an observer, so the core never prints.

The CLI plugs a rich progress display in; tests and library users get the silent default.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives coarse-grained events from long-running work."""

    def step(self, message: str) -> None:
        """A new phase started (e.g. "bootstrapping base image")."""

    def detail(self, message: str) -> None:
        """A line of detail inside the current phase (e.g. one build finished)."""


class SilentProgress:
    """The default observer: ignores everything."""

    def step(self, message: str) -> None:
        """Ignore."""

    def detail(self, message: str) -> None:
        """Ignore."""


class RecordingProgress:
    """Keeps every event in order (tests, and library users who show them their way)."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.details: list[str] = []

    def step(self, message: str) -> None:
        """Keep it."""
        self.steps.append(message)

    def detail(self, message: str) -> None:
        """Keep it."""
        self.details.append(message)
