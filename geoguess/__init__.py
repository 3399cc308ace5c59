"""geoguess: tell where a photo was taken.

The library API is small and loads nothing heavy at import::

    from geoguess import Geolocator
    geo = Geolocator.load()            # the default installed model set
    result = geo.locate("photo.jpg", top_k=5)
    print(result.best.prediction.lat, result.best.prediction.lon)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it. Resolved on first use: importing numpy
# and onnxruntime eagerly would slow `geoguess --help`.
_EXPORTS = {
    "Geolocator": "geolocator",
    "Prediction": "model",
    "Candidate": "locate",
    "LocateResult": "locate",
    "SearchResult": "search",
    "Searcher": "search",
    "AreaShare": "areas",
    "ScanSummary": "scan",
    "GeoguessError": "errors",
    "UsageError": "errors",
    "SetupError": "errors",
    "InputError": "errors",
    "ImageError": "errors",
    "ModelNotFoundError": "errors",
    "ModelIntegrityError": "errors",
}

__all__ = [
    "AreaShare",
    "Candidate",
    "GeoguessError",
    "Geolocator",
    "ImageError",
    "InputError",
    "LocateResult",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "Prediction",
    "ScanSummary",
    "SearchResult",
    "Searcher",
    "SetupError",
    "UsageError",
    "__version__",
]

if TYPE_CHECKING:
    from .areas import AreaShare
    from .errors import (
        GeoguessError,
        ImageError,
        InputError,
        ModelIntegrityError,
        ModelNotFoundError,
        SetupError,
        UsageError,
    )
    from .geolocator import Geolocator
    from .locate import Candidate, LocateResult
    from .model import Prediction
    from .scan import ScanSummary
    from .search import Searcher, SearchResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geoguess' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
