"""Writing a map file: the format from its suffix, the file replaced in one step."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .view import MapView

if TYPE_CHECKING:
    from ..locate import LocateResult
    from ..model import GeoModel

__all__ = ["MAP_SUFFIXES", "map_format", "write_locate_map", "write_map", "write_scan_map"]

MAP_SUFFIXES = {".html": "html", ".htm": "html", ".png": "png"}


def map_format(path: str | os.PathLike[str]) -> str:
    """``html`` or ``png`` from the suffix of ``path``; UsageError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in MAP_SUFFIXES:
        raise UsageError(
            f"{path}: a map is written as .html or .png, not {suffix or 'no suffix'!r}"
        )
    return MAP_SUFFIXES[suffix]


def write_map(view: MapView, path: str | os.PathLike[str]) -> Path:
    """Render ``view`` into ``path`` (.html or .png), atomically; returns the path."""
    from ..atomic import write_file

    target = Path(path)
    if map_format(target) == "html":
        from .html import render_html

        data: bytes | str = render_html(view)
    else:
        from .png import render_png

        data = render_png(view)
    try:
        write_file(target, data)
    except OSError as exc:
        from ..errors import os_reason

        raise UsageError(f"{target}: cannot write the map ({os_reason(exc)})") from None
    return target


def write_locate_map(
    results: Sequence[LocateResult],
    path: str | os.PathLike[str],
    *,
    geo: GeoModel | None = None,
    sources: Mapping[str, Any] | None = None,
    tiles: bool = False,
) -> Path:
    """The map of ``geoguess PHOTO --map``: candidates, spread and EXIF of each result.

    With ``geo`` and a single located result, the probability over the whole gallery
    is drawn as a heat layer. ``sources`` (file name -> path or bytes) give the
    thumbnails; by default each result's file is read.
    """
    from .thumbnails import thumbnails
    from .view import gallery_mass, photo_view

    located = [r for r in results if not r.error]
    heat = gallery_mass(geo, located[0]) if geo is not None and len(located) == 1 else []
    view = photo_view(
        [r.to_dict() for r in results],
        heat=heat,
        thumbnails=thumbnails([r.file for r in located], sources=sources),
        tiles=tiles,
        random_weights=bool(geo is not None and geo.random_weights),
    )
    return write_map(view, path)


def write_scan_map(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "geoguess scan",
    tiles: bool = False,
    random_weights: bool = False,
    with_thumbnails: bool = True,
) -> Path:
    """The map of a scan (``scan --map``, ``geoguess map``): a marker per photo."""
    from .thumbnails import thumbnails
    from .view import scan_view

    records = list(records)
    thumbs = {}
    if with_thumbnails:
        thumbs = thumbnails([r["file"] for r in records if r.get("predictions")])
    view = scan_view(
        records, title=title, thumbnails=thumbs, tiles=tiles, random_weights=random_weights
    )
    located = sum(1 for r in records if r.get("predictions"))
    view.notes.append(f"{located} of {len(records)} photos located")
    if with_thumbnails and len(thumbs) < located:
        view.notes.append(f"{located - len(thumbs)} photos without a thumbnail (not found)")
    return write_map(view, path)
