"""What a map shows, decided once for the HTML page and the PNG picture alike.

A :class:`MapView` is built from ``--json`` records (:meth:`LocateResult.to_dict`, or
rows of a scan read back by :mod:`geoguess.results_reader`):

- ``photo`` view (``geoguess PHOTO --map``): every candidate sized by probability, the
  EXIF position with a line to the best guess, the 50% and 90% spread circles, and,
  when the live result is at hand, the probability mass over the gallery as cells of a
  heat layer.
- ``scan`` view (``scan --map``, ``geoguess map RESULTS``): one marker per photo at its
  best guess, coloured by its error against EXIF GPS when the photo has GPS.

``data`` is exactly the GeoJSON of ``--format geojson`` for the same records, so the
page can be read back by programs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geo import ACCURACY_LEVELS
from ..geojson import collection, photo_features, scan_feature

if TYPE_CHECKING:
    from ..locate import LocateResult
    from ..model import GeoModel

__all__ = [
    "ERROR_CLASSES",
    "MapView",
    "gallery_mass",
    "mass_cells",
    "photo_view",
    "scan_view",
]

#: Colours of a scan's markers by error against EXIF GPS (upper bound in km, colour,
#: label), one per accuracy level of :data:`geoguess.geo.ACCURACY_LEVELS`.
_COLOURS = ("#1a9850", "#66bd63", "#fee08b", "#f46d43", "#d73027")
ERROR_CLASSES: tuple[tuple[float, str, str], ...] = (
    *(
        (bound, colour, f"{name} (< {bound:,.0f} km)")
        for (bound, name), colour in zip(ACCURACY_LEVELS, _COLOURS, strict=True)
    ),
    (math.inf, "#7f0000", "farther"),
)
NO_GPS_COLOUR = "#3b6fb6"
#: Mass cells kept for the heat layer: the heaviest ones holding this share of it.
HEAT_SHARE = 0.99
HEAT_MAX_CELLS = 4000


@dataclass
class MapView:
    """Everything one map draws; :mod:`.html` and :mod:`.png` render it."""

    kind: str  # "photo" or "scan"
    title: str
    data: dict[str, Any]  # the GeoJSON FeatureCollection of --format geojson
    #: Spread circles: {"file", "level" (0.5 / 0.9), "radius_km", "ring": [[lat, lon]...]}
    circles: list[dict[str, Any]] = field(default_factory=list)
    #: Heat cells: [south, west, size_deg, mass] with mass summing to <= 1.
    heat: list[list[float]] = field(default_factory=list)
    #: Thumbnails by photo file, as data: URIs (JPEG, EXIF stripped).
    thumbnails: dict[str, str] = field(default_factory=dict)
    tiles: bool = False
    random_weights: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What the HTML page embeds besides ``data`` (view settings and layers)."""
        return {
            "kind": self.kind,
            "title": self.title,
            "circles": self.circles,
            "heat": self.heat,
            "thumbnails": self.thumbnails,
            "tiles": self.tiles,
            "random_weights": self.random_weights,
            "notes": self.notes,
            "error_classes": [
                [None if math.isinf(b) else b, colour, label] for b, colour, label in ERROR_CLASSES
            ],
            "no_gps_colour": NO_GPS_COLOUR,
        }

    def points(self) -> list[tuple[float, float]]:
        """Every (lat, lon) the view should fit: markers and the 50% circles."""
        out = []
        for feature in self.data["features"]:
            geom = feature.get("geometry")
            if geom:
                lon, lat = geom["coordinates"]
                out.append((lat, lon))
            props = feature.get("properties") or {}
            if props.get("exif_lat") is not None and props.get("exif_lon") is not None:
                out.append((props["exif_lat"], props["exif_lon"]))
        for circle in self.circles:
            if circle["level"] <= 0.5 and circle["radius_km"] < 5000:
                out.extend((lat, lon) for lat, lon in circle["ring"])
        return out


def error_colour(error_km: float | None) -> str:
    """A scan marker's colour for its error against EXIF GPS (None: no GPS)."""
    if error_km is None:
        return NO_GPS_COLOUR
    return next(colour for bound, colour, _ in ERROR_CLASSES if error_km < bound)


def _circles(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    from ..geo import circle_ring

    preds = record.get("predictions") or []
    if not preds:
        return []
    best = preds[0]
    out = []
    for key, radius in sorted((record.get("spread_km") or {}).items()):
        if radius is None or not key.startswith("p"):
            continue
        ring = circle_ring(best["lat"], best["lon"], float(radius), points=128)
        out.append(
            {
                "file": record["file"],
                "level": int(key[1:]) / 100,
                "radius_km": float(radius),
                "ring": [[round(a, 4), round(b, 4)] for a, b in ring],
            }
        )
    return out


def mass_cells(
    lats: np.ndarray, lons: np.ndarray, probs: np.ndarray, cell_deg: float = 1.0
) -> list[list[float]]:
    """Probability mass summed in ``cell_deg`` squares, the heaviest holding
    :data:`HEAT_SHARE` of it (at most :data:`HEAT_MAX_CELLS`), heaviest first."""
    probs = np.asarray(probs, dtype=np.float64)
    total = probs.sum()
    if probs.size == 0 or not total > 0:
        return []
    rows = np.floor((np.asarray(lats) + 90.0) / cell_deg).astype(np.int64)
    cols = np.floor((np.asarray(lons) + 180.0) / cell_deg).astype(np.int64)
    n_cols = math.ceil(360.0 / cell_deg) + 1
    keys, inverse = np.unique(rows * n_cols + cols, return_inverse=True)
    mass = np.bincount(inverse, weights=probs / total)
    order = np.argsort(-mass, kind="stable")
    keep = int(np.searchsorted(np.cumsum(mass[order]), HEAT_SHARE)) + 1
    order = order[: min(keep, HEAT_MAX_CELLS)]
    return [
        [
            round(float(keys[i] // n_cols) * cell_deg - 90.0, 6),
            round(float(keys[i] % n_cols) * cell_deg - 180.0, 6),
            cell_deg,
            round(float(mass[i]), 8),
        ]
        for i in order
    ]


def _cell_size(spread_p50_km: float | None) -> float:
    # Cells about a quarter of the 50% radius: a confident guess gets a fine grid, a
    # vague one a coarse one (a degree of latitude is 111 km).
    if not spread_p50_km:
        return 1.0
    wanted = spread_p50_km / 111.0 / 4
    return min((0.1, 0.25, 0.5, 1.0, 2.0), key=lambda s: abs(math.log(s / max(wanted, 1e-3))))


def gallery_mass(geo: GeoModel, result: LocateResult) -> list[list[float]]:
    """Heat cells of where ``result``'s probability lies over the gallery, searched
    again from its embedding (empty when it has none or the search scores no mass)."""
    if result.embedding is None or result.error:
        return []
    found = geo.search(result.embedding[None, :], 1)[0]
    if found.support_probs is None:
        return []
    coords = geo.gallery.coords
    if found.support_indices is not None:
        coords = coords[found.support_indices]
    return mass_cells(
        coords[:, 0], coords[:, 1], found.support_probs, _cell_size(result.spread_km.get(0.5))
    )


def photo_view(
    records: Sequence[Mapping[str, Any]],
    *,
    heat: list[list[float]] | None = None,
    title: str | None = None,
    thumbnails: Mapping[str, str] | None = None,
    tiles: bool = False,
    random_weights: bool = False,
) -> MapView:
    """The view of one photo's result (or a few photos' results, each fully drawn)."""
    features = [f for record in records for f in photo_features(record)]
    circles = [c for record in records for c in _circles(record)]
    return MapView(
        kind="photo",
        title=title or ", ".join(str(r["file"]) for r in records[:3]),
        data=collection(features),
        circles=circles,
        heat=heat or [],
        thumbnails=dict(thumbnails or {}),
        tiles=tiles,
        random_weights=random_weights,
    )


def scan_view(
    records: Iterable[Mapping[str, Any]],
    *,
    title: str = "geoguess scan",
    thumbnails: Mapping[str, str] | None = None,
    tiles: bool = False,
    random_weights: bool = False,
) -> MapView:
    """The view of a scan: one Feature per photo at its best guess."""
    features = [scan_feature(record) for record in records]
    return MapView(
        kind="scan",
        title=title,
        data=collection(features),
        thumbnails=dict(thumbnails or {}),
        tiles=tiles,
        random_weights=random_weights,
    )
