"""Lists of numbers given as text on the command line: ``"8,24"``, ``"1000x40"``.

One rule for every option that takes them (tree levels, beams, ef values, LLM reference
counts): numbers separated by commas (or the given separators), spaces ignored, empty
parts skipped, and anything else a UsageError naming the option and the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from .errors import UsageError

__all__ = ["parse_number_list"]

T = TypeVar("T", int, float)


def parse_number_list(
    text: str, kind: Callable[[str], T], what: str, *, separators: str = ","
) -> list[T]:
    """``"1, 2,4"`` -> ``[1, 2, 4]`` with ``kind`` int or float.

    ``what`` names the option in the error (``"--beams"``); ``separators`` are the
    characters that split (``",x"`` also reads ``"1000x40"``).
    """
    parts = [p.strip() for p in re.split(f"[{re.escape(separators)}]", text) if p.strip()]
    try:
        return [kind(p) for p in parts]
    except ValueError:
        joined = " or ".join(repr(s) for s in separators)
        raise UsageError(f"{what}: expected numbers separated by {joined}, got {text!r}") from None
