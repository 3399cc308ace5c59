"""The world basemap the maps draw with no network: Natural Earth's countries at 1:110m.

``data/countries-110m.json`` is the file of that name from the npm package
``world-atlas`` 2.0.2 (Mike Bostock's TopoJSON of Natural Earth 4.1.0; Natural Earth is
public domain, world-atlas is ISC), unmodified; :data:`SHA256` pins it and a test
checks it. TopoJSON shares each border between its two countries and stores points as
quantised deltas, which is why 177 countries fit in 105 KB; :func:`countries` decodes
it into GeoJSON once per process.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import json
from typing import Any

__all__ = ["ATTRIBUTION", "SHA256", "SOURCE", "countries", "rings"]

SOURCE = "world-atlas 2.0.2 (npm), countries-110m.json: Natural Earth 4.1.0, 1:110m"
SHA256 = "2516c915867c7baf18ddec727aec46c315541a07cfb3d79a6559b05d5e94eee8"
ATTRIBUTION = "Natural Earth (public domain)"
_FILE = "countries-110m.json"
#: Decimal places kept in the decoded GeoJSON: 1:110m data is good to ~0.01 degrees.
_PLACES = 3


def _read() -> dict[str, Any]:
    return json.loads((importlib.resources.files("geoguess") / "data" / _FILE).read_bytes())


def _decoded_arcs(topo: dict[str, Any]) -> list[list[tuple[float, float]]]:
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((round(x * sx + tx, _PLACES), round(y * sy + ty, _PLACES)))
        arcs.append(points)
    return arcs


def _ring(indices: list[int], arcs: list[list[tuple[float, float]]]) -> list[list[float]]:
    ring: list[list[float]] = []
    for i in indices:
        # A negative index is the one's complement of an arc walked backwards.
        points = arcs[i] if i >= 0 else arcs[~i][::-1]
        ring.extend([list(p) for p in (points[1:] if ring else points)])
    # Russia and Fiji cross the antimeridian: their rings jump from 180 to -180 and back.
    # On a flat map that edge would cross the whole world; moved east by 360 degrees,
    # the western part joins the rest (maps draw longitudes past 180 as they should).
    # Antarctica's one jump runs along the bottom edge of the map and is left as it is.
    jumps = sum(abs(a[0] - b[0]) > 180 for a, b in itertools.pairwise(ring))
    if jumps >= 2:
        ring = [[lon + 360.0, lat] if lon < 0 else [lon, lat] for lon, lat in ring]
    return ring


@functools.cache
def countries() -> dict[str, Any]:
    """The countries as a GeoJSON FeatureCollection (``properties.name``), lon/lat."""
    topo = _read()
    arcs = _decoded_arcs(topo)
    features = []
    for geom in topo["objects"]["countries"]["geometries"]:
        if geom.get("type") == "Polygon":
            coords: Any = [_ring(r, arcs) for r in geom["arcs"]]
        elif geom.get("type") == "MultiPolygon":
            coords = [[_ring(r, arcs) for r in poly] for poly in geom["arcs"]]
        else:  # a null geometry has nothing to draw
            continue
        features.append(
            {
                "type": "Feature",
                "id": geom.get("id"),
                "properties": {"name": (geom.get("properties") or {}).get("name")},
                "geometry": {"type": geom["type"], "coordinates": coords},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def rings() -> list[list[list[float]]]:
    """Every outer ring and hole of every country, as lists of [lon, lat] (for drawing)."""
    out = []
    for feature in countries()["features"]:
        geom = feature["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for poly in polys:
            out.extend(poly)
    return out
