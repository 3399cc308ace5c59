"""geoguess: tell where a photo was taken.

The library API is small and loads nothing heavy at import::

    from geoguess import Geolocator
    geo = Geolocator.load()            # the default installed model set
    result = geo.locate("photo.jpg", top_k=5)
    print(result.predictions[0].lat, result.predictions[0].lon)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Geolocator", "LocateResult", "Prediction", "__version__"]

if TYPE_CHECKING:
    from .geolocator import Geolocator, LocateResult, Prediction


def __getattr__(name: str) -> Any:
    # Importing numpy/onnxruntime eagerly would slow `geoguess --help`; resolve on use.
    if name in {"Geolocator", "LocateResult", "Prediction"}:
        from . import geolocator

        return getattr(geolocator, name)
    raise AttributeError(f"module 'geoguess' has no attribute {name!r}")
