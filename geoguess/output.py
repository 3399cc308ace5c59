"""Output plumbing: the stdout and stderr consoles, JSON lines, and a generic table.

Data goes to stdout; messages and progress go to stderr. rich honours ``NO_COLOR``
and turns colour off by itself when a stream is not a terminal. How each command's
results look to a person (locate, eval, models, galleries) is decided in
:mod:`geoguess.cli.render`; this module stays free of it so that the library's writers
(``geoguess.scan_shards``, ``geoguess.ray_scan``) can use :func:`json_line` too.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    from rich.console import Console

    # soft_wrap: one-line messages stay one line however narrow the (non-)terminal is.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def json_line(obj: Any, *, ascii_only: bool = False) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only, allow_nan=False)


def can_hold_unicode(stream: Any) -> bool:
    """Whether a text stream's encoding can hold any text (UTF-8 and its kin)."""
    import codecs

    try:
        name = codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name
    except LookupError:
        return False
    return name.startswith("utf")


def print_json(obj: Any) -> None:
    """One JSON line to stdout, always valid JSON: non-ASCII text is escaped (\\u014d)
    when stdout cannot hold it (cp1252 when redirected on Windows, PYTHONIOENCODING=ascii).
    """
    sys.stdout.write(json_line(obj, ascii_only=not can_hold_unicode(sys.stdout)) + "\n")


def tolerate_any_text(*streams: Any) -> None:
    """Make text that a stream's encoding cannot hold come out escaped, never raise.

    Place names (Shibakōen) reach tables and messages; a stdout in cp1252 or ASCII must
    degrade them, not crash with a traceback.
    """
    for stream in streams:
        if not can_hold_unicode(stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def print_table(
    console: Console,
    columns: list[str],
    rows: list[list[str]],
    *,
    title: str | None = None,
    right: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    """A rich table on a terminal; tab-separated lines (header first) when piped."""
    if not console.is_terminal:
        if title:
            sys.stdout.write(f"# {title}\n")
        for line in [columns, *rows]:
            sys.stdout.write("\t".join(line) + "\n")
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None, title_justify="left", header_style="bold")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    console.print(table)
