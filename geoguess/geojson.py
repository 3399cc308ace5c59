"""Results as GeoJSON (RFC 7946): longitude first, WGS 84, no ``crs`` member.

Built from the ``--json`` records (:meth:`geoguess.locate.LocateResult.to_dict`), so a
scan's JSON Lines can be turned into GeoJSON later as well as a live result now.

- One photo (:func:`photo_features`): a Feature per candidate (rank, probability,
  place, distance from the best guess; the best one also carries the spread), and the
  photo's EXIF GPS as a Feature of its own with the error of the best guess.
- A scan (:func:`scan_feature`): one Feature per photo at its best guess, with every
  candidate in its properties; a photo that failed is a Feature without geometry
  (RFC 7946, section 3.2) carrying its error, so no photo goes unmentioned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["collection", "photo_features", "scan_feature"]

#: Decimal places kept: 1e-6 degrees is about 0.1 m, RFC 7946's advice (section 11.2).
_PLACES = 6


def _point(lat: float, lon: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [round(lon, _PLACES), round(lat, _PLACES)]}


def _place_text(place: Mapping[str, Any] | None) -> str | None:
    from .places import describe

    return describe(place) if place else None


def _feature(geometry: dict[str, Any] | None, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _candidate_props(rank: int, c: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rank": rank,
        "lat": c["lat"],
        "lon": c["lon"],
        "probability": c["probability"],
        "place": _place_text(c.get("place")),
        "country_code": (c.get("place") or {}).get("country_code"),
        "label": c.get("label"),
        "distance_from_best_km": c.get("distance_from_best_km"),
    }


def photo_features(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Features of one photo's result: its candidates, then its EXIF GPS if any."""
    file = record["file"]
    out = []
    for rank, c in enumerate(record.get("predictions") or [], 1):
        props = {"kind": "candidate", "file": file, **_candidate_props(rank, c)}
        if rank == 1:
            props["spread_km"] = record.get("spread_km") or {}
            props["confidence"] = record.get("confidence")
            props["countries"] = record.get("countries") or []
            props["regions"] = record.get("regions") or []
        out.append(_feature(_point(c["lat"], c["lon"]), props))
    gps = record.get("exif_gps")
    if gps:
        props = {
            "kind": "exif_gps",
            "file": file,
            "lat": gps["lat"],
            "lon": gps["lon"],
            "place": _place_text(record.get("exif_place")),
            "error_km": record.get("exif_error_km"),
        }
        out.append(_feature(_point(gps["lat"], gps["lon"]), props))
    if record.get("error"):
        out.append(_feature(None, {"kind": "error", "file": file, "error": record["error"]}))
    return out


def scan_feature(record: Mapping[str, Any]) -> dict[str, Any]:
    """One photo of a scan: a Feature at its best guess (no geometry when it failed)."""
    predictions = record.get("predictions") or []
    gps = record.get("exif_gps")
    props: dict[str, Any] = {
        "file": record["file"],
        "error": record.get("error"),
        "place": None,
        "probability": None,
        "spread_km": record.get("spread_km") or {},
        "confidence": record.get("confidence"),
        "countries": record.get("countries") or [],
        "regions": record.get("regions") or [],
        "exif_lat": gps["lat"] if gps else None,
        "exif_lon": gps["lon"] if gps else None,
        "error_km": record.get("exif_error_km"),
        "candidates": [_candidate_props(i, c) for i, c in enumerate(predictions, 1)],
    }
    if record.get("model") is not None:
        props["model"] = record["model"]
    geometry = None
    if predictions:
        best = predictions[0]
        props["place"] = _place_text(best.get("place"))
        props["probability"] = best["probability"]
        geometry = _point(best["lat"], best["lon"])
    reviewed = _reviewed(record)
    if reviewed is not None:
        # Read back from a file a person edited: the point is theirs, so the place,
        # probability and error of GeoCLIP's guess no longer describe it.
        from .geo import haversine_km

        lat, lon = reviewed
        geometry = _point(lat, lon)
        props.update(reviewed=True, place=None, probability=None)
        if gps:
            props["error_km"] = round(float(haversine_km(lat, lon, gps["lat"], gps["lon"])), 1)
    return _feature(geometry, props)


def _reviewed(record: Mapping[str, Any]) -> tuple[float, float] | None:
    from .review import reviewed_position

    try:
        return reviewed_position(record)
    except ValueError:
        return None  # drawn at the guess; geoguess xmp names the bad value


def collection(features: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A FeatureCollection of ``features``."""
    return {"type": "FeatureCollection", "features": list(features)}
