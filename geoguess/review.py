"""A position a person gave a scan's row, read back from a file they edited.

:mod:`geoguess.results_reader` marks such rows (``record["reviewed"]``); the map draws
them there and the XMP sidecars hold them. This module only checks the values, and
imports nothing of geoguess, so that both can use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["reviewed_position"]


def reviewed_position(record: Mapping[str, Any]) -> tuple[float, float] | None:
    """The position a person gave a record (its ``reviewed`` member), or None.

    Raises ValueError naming the axis when an edited value is not a number in range,
    so that callers can say which photo's row is wrong.
    """
    reviewed = record.get("reviewed")
    if not reviewed:
        return None
    out = []
    for axis, limit in (("lat", 90.0), ("lon", 180.0)):
        value = reviewed.get(axis) if isinstance(reviewed, Mapping) else None
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number) or not -limit <= number <= limit:
            raise ValueError(
                f"reviewed {axis} {value!r} is not a number from {-limit:g} to {limit:g}"
            )
        out.append(number)
    return out[0], out[1]
