"""How long-running library calls report progress without knowing about the terminal.

Library functions take a :class:`Reporter`; the CLI passes one that draws rich progress
bars on stderr, Python users get the silent default or pass their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class Reporter:
    """Silent by default; subclass to show messages and progress."""

    def message(self, text: str) -> None:
        pass

    @contextlib.contextmanager
    def task(
        self, description: str, total: float | None = None
    ) -> Iterator[Callable[[float], None]]:
        """A step of work; the yielded function advances it by n units."""
        yield lambda n=1: None


class LoggingReporter(Reporter):
    """Collects messages in a list; handy in tests and scripts."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)
