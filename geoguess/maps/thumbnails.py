"""Small thumbnails for map popups: downscaled, upright, EXIF and GPS stripped."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["THUMBNAIL_PX", "thumbnail_uri", "thumbnails"]

#: Longest side of a thumbnail. About 5 KB as JPEG: a scan of 2,000 photos adds 10 MB.
THUMBNAIL_PX = 160
#: A scan map embeds thumbnails for at most this many photos.
MAX_THUMBNAILS = 2000


def thumbnail_uri(path: str | Path | bytes, size: int = THUMBNAIL_PX) -> str:
    """A ``data:image/jpeg`` URI of the photo at ``path``, or raise InputError.

    Saved from decoded pixels with no metadata at all, so the page carries neither the
    photo's EXIF nor its GPS.
    """
    from ..images import load_image

    image = load_image(path if isinstance(path, bytes) else Path(path), target_size=size)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(
    files: Iterable[str],
    limit: int = MAX_THUMBNAILS,
    sources: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Thumbnails of the ``files`` that can still be read (others are left out).

    ``sources`` maps a file name to what to read instead (a path, or the bytes of a
    photo read from stdin).
    """
    out: dict[str, str] = {}
    for file in files:
        if len(out) >= limit:
            break
        try:
            out[file] = thumbnail_uri((sources or {}).get(file, file))
        except (InputError, OSError):
            continue  # moved, deleted or unreadable since the scan: no picture
    return out
