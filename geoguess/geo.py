"""Distances on the Earth and the spread of a set of weighted location candidates.

Two distance models, each where it fits:

* :func:`haversine_km` - great-circle distance on a sphere of the IUGG mean radius.
  Vectorised and cheap; used for ranking, spreads and reverse geocoding, where the
  < 0.5 % difference from the ellipsoid does not matter.
* :func:`geodesic_km` / :func:`geodesic_km_many` - shortest path on the WGS-84
  ellipsoid (Karney's algorithm via ``geographiclib``). Used by evaluation, because
  the published accuracy thresholds (1 / 25 / 200 / 750 / 2500 km) are defined with it.

Coordinates are decimal degrees, latitude first, longitude in any range.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from geographiclib.geodesic import Geodesic
from numpy.typing import ArrayLike

#: IUGG mean Earth radius R1 = (2a + b) / 3, in km.
EARTH_RADIUS_KM = 6371.0088

# Cumulative sums of renormalised probabilities are off by a few ulps (0.6 + 0.3 is
# 0.8999999999999999); without this slack a 90 % level could skip past the candidate
# that reaches it.
_LEVEL_TOLERANCE = 1e-9

# Below this length the weighted mean of unit vectors has no meaningful direction
# (e.g. two equally weighted antipodal points).
_DEGENERATE_NORM = 1e-9

_WGS84 = Geodesic.WGS84


def _scalar_or_array(value: np.ndarray) -> Any:
    """Return a 0-d result as a numpy float scalar, anything else as an array."""
    return value[()] if value.ndim == 0 else value


def normalize_lon(lon: ArrayLike) -> Any:
    """Wrap longitudes (degrees) into [-180, 180).

    Returns a float for a scalar input, an array of the same shape otherwise.
    """
    lon = np.asarray(lon, dtype=np.float64)
    wrapped = np.mod(lon + 180.0, 360.0) - 180.0
    # np.mod can round a tiny negative up to exactly 360 (e.g. -180 - 1e-14), which
    # would give +180 and break the half-open range.
    wrapped = np.where(wrapped >= 180.0, wrapped - 360.0, wrapped)
    return _scalar_or_array(wrapped)


def haversine_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> Any:
    """Great-circle distance in km on a sphere of radius :data:`EARTH_RADIUS_KM`.

    The arguments broadcast against each other like numpy arrays; a float is returned
    when all are scalars. NaN inputs give NaN.
    """
    phi1 = np.radians(np.asarray(lat1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dlmb = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    cos_product = np.cos(phi1) * np.cos(phi2)
    # h = sin^2(theta/2) keeps precision for small distances, where the law of cosines
    # loses it; arcsin(sqrt(h)) would in turn lose ~100 m near antipodes, so its
    # complement 1 - h = cos^2(theta/2) is computed directly (no cancellation) and the
    # angle taken with atan2. Clipping guards against negative terms from rounding
    # or |lat| slightly over 90, which would otherwise give NaN.
    h = np.sin((phi2 - phi1) / 2.0) ** 2 + cos_product * np.sin(dlmb / 2.0) ** 2
    h_complement = np.sin((phi1 + phi2) / 2.0) ** 2 + cos_product * np.cos(dlmb / 2.0) ** 2
    h = np.clip(h, 0.0, 1.0)
    h_complement = np.clip(h_complement, 0.0, 1.0)
    theta = 2.0 * np.arctan2(np.sqrt(h), np.sqrt(h_complement))
    return _scalar_or_array(EARTH_RADIUS_KM * theta)


def _check_latitudes(*lats: np.ndarray) -> None:
    for lat in lats:
        if not np.all(np.isfinite(lat)) or np.any(np.abs(lat) > 90.0):
            raise ValueError("latitudes must be finite and within [-90, 90]")


def geodesic_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Shortest distance in km between two points on the WGS-84 ellipsoid.

    Accurate to a few nanometres, including nearly antipodal points where Vincenty's
    method fails to converge. Raises ValueError for non-finite input or |lat| > 90.
    """
    lats = np.array([lat1, lat2], dtype=np.float64)
    lons = np.array([lon1, lon2], dtype=np.float64)
    _check_latitudes(lats)
    if not np.all(np.isfinite(lons)):
        raise ValueError("longitudes must be finite")
    result = _WGS84.Inverse(
        float(lats[0]), float(lons[0]), float(lats[1]), float(lons[1]), Geodesic.DISTANCE
    )
    return float(result["s12"]) / 1000.0


def geodesic_km_many(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> np.ndarray:
    """WGS-84 geodesic distances in km, broadcasting the arguments like numpy.

    geographiclib is scalar pure Python (roughly 30-50 us a pair), which is fine for
    evaluation-sized inputs (thousands of pairs). Returns an array of the broadcast
    shape. Raises ValueError for non-finite input or |lat| > 90.
    """
    a1, o1, a2, o2 = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (lat1, lon1, lat2, lon2))
    )
    _check_latitudes(a1, a2)
    if not (np.all(np.isfinite(o1)) and np.all(np.isfinite(o2))):
        raise ValueError("longitudes must be finite")
    inverse = _WGS84.Inverse
    mask = Geodesic.DISTANCE
    # Python floats from tolist() avoid numpy-scalar arithmetic inside geographiclib,
    # which is several times slower.
    out = [
        inverse(p1, q1, p2, q2, mask)["s12"]
        for p1, q1, p2, q2 in zip(
            a1.ravel().tolist(),
            o1.ravel().tolist(),
            a2.ravel().tolist(),
            o2.ravel().tolist(),
            strict=True,
        )
    ]
    return np.asarray(out, dtype=np.float64).reshape(a1.shape) / 1000.0


def to_unit_vectors(lats: ArrayLike, lons: ArrayLike) -> np.ndarray:
    """Points as 3-D unit vectors (x towards lon 0, z towards the north pole).

    Inputs broadcast; the result has shape ``(*broadcast_shape, 3)``, so ``(N, 3)``
    for N points. Euclidean (chord) distance between these vectors is monotonic in
    great-circle distance, with no seam at the antimeridian or the poles.
    """
    phi = np.radians(np.asarray(lats, dtype=np.float64))
    lmb = np.radians(np.asarray(lons, dtype=np.float64))
    phi, lmb = np.broadcast_arrays(phi, lmb)
    cos_phi = np.cos(phi)
    return np.stack((cos_phi * np.cos(lmb), cos_phi * np.sin(lmb), np.sin(phi)), axis=-1)


def _normalised_weights(
    lats: ArrayLike, lons: ArrayLike, probs: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lats = np.asarray(lats, dtype=np.float64).ravel()
    lons = np.asarray(lons, dtype=np.float64).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if not (lats.size == lons.size == probs.size) or lats.size == 0:
        raise ValueError("lats, lons and probs must be non-empty and of equal length")
    if not (np.all(np.isfinite(lats)) and np.all(np.isfinite(lons))):
        raise ValueError("candidate coordinates must be finite")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0.0):
        raise ValueError("probabilities must be finite and non-negative")
    total = probs.sum()
    if total <= 0.0:
        raise ValueError("probabilities must not all be zero")
    return lats, lons, probs / total


def weighted_centroid(
    lats: ArrayLike, lons: ArrayLike, probs: ArrayLike
) -> tuple[float, float] | None:
    """Probability-weighted mean position, computed on the unit sphere.

    The candidates are turned into 3-D unit vectors, averaged with the renormalised
    weights and projected back onto the sphere, so points either side of the
    antimeridian (179.9 and -179.9) average to ~180, not to 0. Returns
    ``(lat, lon)`` with lon in [-180, 180), or None when the weighted mean vector is
    (numerically) zero and has no direction, e.g. two equal weights at antipodes.
    """
    lats, lons, weights = _normalised_weights(lats, lons, probs)
    mean = weights @ to_unit_vectors(lats, lons)
    if np.linalg.norm(mean) < _DEGENERATE_NORM:
        return None
    x, y, z = mean
    lat = float(np.degrees(np.arctan2(z, np.hypot(x, y))))
    lon = float(normalize_lon(np.degrees(np.arctan2(y, x))))
    return lat, lon


def spread_radii(
    lats: ArrayLike,
    lons: ArrayLike,
    probs: ArrayLike,
    *,
    center: tuple[float, float] | None = None,
    levels: Iterable[float] = (0.5, 0.9),
    vectors: np.ndarray | None = None,
) -> dict[float, float]:
    """Radii (km) around a centre that hold given shares of the candidates' probability.

    Definition. Let the candidates be points x_i with probabilities p_i, renormalised
    so that they sum to 1 over the candidates given (mass outside this set is
    ignored). Let c be ``center`` or, by default, the candidate with the highest
    probability (the first one on ties), and d_i the great-circle distance (haversine,
    mean Earth radius) from c to x_i. For each level q in (0, 1] the radius is

        R(q) = min { R >= 0 : sum of p_i over all i with d_i <= R  >=  q },

    the smallest closed disc around c whose candidates hold at least q of the
    probability. R(q) is always one of the d_i; it is 0 when the centre candidate
    alone holds q; it is non-decreasing in q; and R(1) is the distance to the
    farthest candidate with non-zero probability. Shares are compared with a
    tolerance of 1e-9 so that rounding in the sums does not change the answer.

    ``vectors``, the candidates' unit vectors as :func:`to_unit_vectors` gives them in
    shape (3, N), may be passed by a caller that keeps them (a gallery computes them
    once): ordering by chord length then needs no trigonometry per candidate. The
    answer is the same either way; it runs in linear time, without a full sort.

    Returns ``{q: R(q)}`` with the levels as given. Raises ValueError for empty or
    mismatched inputs, negative or all-zero probabilities, or a level outside (0, 1].
    """
    lats, lons, weights = _normalised_weights(lats, lons, probs)
    levels = [float(q) for q in levels]
    for q in levels:
        if not 0.0 < q <= 1.0:
            raise ValueError(f"spread level {q} is outside (0, 1]")
    if center is None:
        top = int(np.argmax(weights))
        c_lat, c_lon = lats[top], lons[top]
    else:
        c_lat, c_lon = float(center[0]), float(center[1])
        if not (np.isfinite(c_lat) and np.isfinite(c_lon)) or abs(c_lat) > 90.0:
            raise ValueError("center must be a finite (lat, lon) with |lat| <= 90")
    if vectors is not None:
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.shape != (3, lats.size):
            raise ValueError(f"vectors must have shape (3, {lats.size}), got {vectors.shape}")
        cx, cy, cz = to_unit_vectors(c_lat, c_lon)
        # Squared chord length: monotonic in great-circle distance and free of the
        # cancellation that 1 - cos has for nearby points.
        key = (vectors[0] - cx) ** 2 + (vectors[1] - cy) ** 2 + (vectors[2] - cz) ** 2
        key_max = 4.0
    else:
        key = np.asarray(haversine_km(c_lat, c_lon, lats, lons), dtype=np.float64)
        key_max = np.pi * EARTH_RADIUS_KM
    chosen = _first_reaching(key, weights, [q - _LEVEL_TOLERANCE for q in levels], key_max)
    dist = np.atleast_1d(haversine_km(c_lat, c_lon, lats[chosen], lons[chosen]))
    return {q: float(d) for q, d in zip(levels, dist.tolist())}


# Candidates are bucketed by distance so that only the bucket where a level is reached
# needs sorting; a full argsort of a 100K gallery cost more than the rest of the
# spread together. Below this size sorting everything is as cheap.
_SPREAD_BUCKETS = 1024


def _first_reaching(
    key: np.ndarray, weights: np.ndarray, targets: list[float], key_max: float
) -> np.ndarray:
    """For each target share t, the index of the candidate, in increasing ``key``
    order (stable), at which the cumulative weight first reaches t (the last one if
    rounding keeps the total just under t). ``weights`` sum to 1."""
    n = key.size
    if n <= _SPREAD_BUCKETS:
        order = np.argsort(key, kind="stable")
        cumulative = np.cumsum(weights[order])
        cumulative /= cumulative[-1]
        ks = np.searchsorted(cumulative, targets, side="left")
        return order[np.minimum(ks, n - 1)]
    scale = _SPREAD_BUCKETS / key_max
    bucket = np.minimum((key * scale).astype(np.intp), _SPREAD_BUCKETS - 1)
    mass = np.bincount(bucket, weights=weights, minlength=_SPREAD_BUCKETS)
    cumulative = np.cumsum(mass)
    total = cumulative[-1]
    out = np.empty(len(targets), dtype=np.intp)
    for j, t in enumerate(targets):
        threshold = t * total
        if threshold <= 0.0:
            out[j] = int(np.argmin(key))  # reached before any weight: the nearest one
            continue
        b = int(np.searchsorted(cumulative, threshold, side="left"))
        if b >= _SPREAD_BUCKETS:  # rounding kept the total under t: last weighted bucket
            b = int(np.flatnonzero(mass)[-1])
        members = np.flatnonzero(bucket == b)
        members = members[np.argsort(key[members], kind="stable")]
        before = cumulative[b - 1] if b > 0 else 0.0
        running = before + np.cumsum(weights[members])
        k = int(np.searchsorted(running, threshold, side="left"))
        if k >= members.size:
            k = int(np.flatnonzero(weights[members])[-1])
        out[j] = members[k]
    return out


def circle_ring(
    lat: float, lon: float, radius_km: float, points: int = 96
) -> list[tuple[float, float]]:
    """A closed ring of ``(lat, lon)`` points ``radius_km`` (great circle) around a centre.

    Longitudes are unwrapped (they may pass 180 or -180) so that a map draws the ring
    across the antimeridian in one piece. A circle that encloses a pole is closed along
    that pole's latitude, so that filling it covers the pole as it should.
    """
    if radius_km < 0 or not np.isfinite(radius_km):
        raise ValueError(f"radius must be finite and >= 0, got {radius_km}")
    delta = min(radius_km / EARTH_RADIUS_KM, np.pi)
    phi1, lam1 = np.radians(lat), np.radians(lon)
    bearings = np.linspace(0.0, 2 * np.pi, points + 1)
    sin_phi2 = np.sin(phi1) * np.cos(delta) + np.cos(phi1) * np.sin(delta) * np.cos(bearings)
    phi2 = np.arcsin(np.clip(sin_phi2, -1.0, 1.0))
    lam2 = lam1 + np.arctan2(
        np.sin(bearings) * np.sin(delta) * np.cos(phi1), np.cos(delta) - np.sin(phi1) * sin_phi2
    )
    lons = np.degrees(np.unwrap(lam2))
    lats = np.degrees(phi2)
    ring = list(zip(lats.tolist(), lons.tolist()))
    span = lons[-1] - lons[0]
    if abs(span) > 180:  # went once round the world: it holds a pole
        pole = 90.0 if np.radians(90) - phi1 < delta else -90.0
        ring += [(pole, float(lons[-1])), (pole, float(lons[0])), ring[0]]
    return ring


#: The accuracy levels of image geolocation papers (Im2GPS onwards): an answer within
#: 1 km is right to the street, 25 km the city, 200 km the region, 750 km the country,
#: 2,500 km the continent.
ACCURACY_LEVELS: tuple[tuple[float, str], ...] = (
    (1.0, "street"),
    (25.0, "city"),
    (200.0, "region"),
    (750.0, "country"),
    (2500.0, "continent"),
)


def accuracy_level(km: float | None) -> str | None:
    """The level a distance falls in (``"street"`` ... ``"continent"``), ``"world"`` past
    2,500 km, None for None."""
    if km is None:
        return None
    return next((name for bound, name in ACCURACY_LEVELS if km < bound), "world")
