"""Typed errors raised by the geoguess library.

The CLI maps these to one-line messages and exit codes; library users catch them.
Every error that concerns a file names it, so a message alone tells the user what
to fix.
"""

from __future__ import annotations

from pathlib import Path


class GeoguessError(Exception):
    """Base class for every error geoguess raises on purpose."""

    #: Exit code the CLI uses when this error aborts a command.
    exit_code: int = 2


class SetupError(GeoguessError):
    """The installation cannot work: a model is missing, corrupt or incompatible."""

    exit_code = 2


class ModelNotFoundError(SetupError):
    """No model set with that name is installed in the store."""


class ModelIntegrityError(SetupError):
    """A model file is missing, truncated or altered compared with its manifest."""

    def __init__(self, path: Path | str, problem: str, fix: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        message = f"{self.path}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class ExportError(SetupError):
    """Building a model set failed (a bad backbone, unreadable weights, a failed download, ...)."""


class InputError(GeoguessError):
    """One input (a photo, a CSV row, ...) could not be used. Other inputs go on."""

    exit_code = 1

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ImageError(InputError):
    """A photo could not be decoded: truncated, not an image, too large, unsupported."""


class UsageError(GeoguessError):
    """Arguments that cannot work together, or a value out of range."""

    exit_code = 2


def one_line(what: BaseException | str | None, limit: int | None = None) -> str:
    """An exception or text as one line: whitespace runs (newlines, carriage returns)
    made single spaces, the exception's type when it has no message, cut at ``limit``.

    Every message geoguess shows or writes in a row is one line, so a row of a CSV or a
    line of a log stays one line whatever a library put in its message.
    """
    text = " ".join(str(what or "").split())
    if not text and isinstance(what, BaseException):
        text = type(what).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def os_reason(exc: OSError) -> str:
    """Why an operating-system call failed, in a user's words ("permission denied")."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()
