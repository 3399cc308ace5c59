"""The object a Python user holds: a model set with photo-level methods.

``Geolocator.load().locate("photo.jpg")``, as faster-whisper's
``WhisperModel(...).transcribe()``. The methods delegate to :mod:`geoguess.locate` and
:mod:`geoguess.scan`, which work on the :class:`~geoguess.model.GeoModel` underneath, so
the layers point one way (this module -> locate/scan -> model).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .locate import LocateResult, Source, locate, locate_many
from .model import GeoModel, Prediction
from .scan import ScanSummary, locate_files, scan_folder

__all__ = ["Geolocator", "Prediction"]


class Geolocator(GeoModel):
    """A loaded model set (see :class:`~geoguess.model.GeoModel`) that locates photos.

    Encoders load lazily, so ``Geolocator.load()`` is cheap until the first prediction.
    """

    def locate(self, source: Source, *, top_k: int = 5, name: str | None = None) -> LocateResult:
        """Locate one photo (a path, bytes, or a binary stream); a bad photo gives a
        result with ``error`` set, not an exception."""
        return locate(self, source, top_k=top_k, name=name)

    def locate_many(
        self,
        sources: Sequence[Source],
        *,
        top_k: int = 5,
        names: Sequence[str | None] | None = None,
    ) -> list[LocateResult]:
        """Locate several photos with one encoder batch, in input order."""
        return locate_many(self, sources, top_k=top_k, names=names)

    def locate_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        top_k: int = 5,
        batch_size: int | None = None,
        workers: int | None = None,
    ) -> Iterator[LocateResult]:
        """Locate photo files as a stream (decoding, encoding and search overlapped),
        yielding one result per file in input order; see :func:`geoguess.scan.locate_files`."""
        return locate_files(self, paths, top_k=top_k, batch_size=batch_size, workers=workers)

    def scan(self, root: str | os.PathLike[str], **options: Any) -> ScanSummary:
        """Locate every image under a folder; ``options`` are those of
        :func:`geoguess.scan.scan_folder` (``on_result``, ``skip``, ``glob``, ...)."""
        return scan_folder(self, root, **options)
