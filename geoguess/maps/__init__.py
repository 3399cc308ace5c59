"""Maps of geoguess results: one self-contained HTML page or a PNG picture.

:func:`write_map` is the entry point: it picks the format from the file's suffix.
"""

from __future__ import annotations

from .write import MAP_SUFFIXES, map_format, write_locate_map, write_map, write_scan_map

__all__ = ["MAP_SUFFIXES", "map_format", "write_locate_map", "write_map", "write_scan_map"]
