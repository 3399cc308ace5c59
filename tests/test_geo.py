import math

import numpy as np
import pytest

from geoguess import geo
from geoguess.geo import (
    EARTH_RADIUS_KM,
    geodesic_km,
    geodesic_km_many,
    haversine_km,
    normalize_lon,
    spread_radii,
    to_unit_vectors,
    weighted_centroid,
)

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)


def equator_km(deg: float) -> float:
    """Arc length along the equator of the mean sphere, by hand."""
    return EARTH_RADIUS_KM * math.radians(deg)


# --- haversine ---------------------------------------------------------------------


def test_haversine_paris_london():
    assert haversine_km(*PARIS, *LONDON) == pytest.approx(343.557, abs=0.01)


def test_haversine_antimeridian_is_short_way_round():
    assert haversine_km(0.0, 179.9, 0.0, -179.9) == pytest.approx(equator_km(0.2), rel=1e-9)
    assert haversine_km(0.0, 179.9, 0.0, -179.9) == pytest.approx(22.239, abs=0.001)


def test_haversine_poles():
    # Every longitude is the same point at a pole.
    assert haversine_km(90.0, 0.0, 90.0, 123.0) == pytest.approx(0.0, abs=1e-9)
    assert haversine_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    # Across the pole, not along the parallel.
    assert haversine_km(89.0, 0.0, 89.0, 180.0) == pytest.approx(equator_km(2.0), rel=1e-9)


def test_haversine_degenerate_pairs_are_not_nan():
    assert haversine_km(12.3, 45.6, 12.3, 45.6) == 0.0
    antipodal = haversine_km(10.0, 20.0, -10.0, -160.0)
    assert antipodal == pytest.approx(math.pi * EARTH_RADIUS_KM, rel=1e-12)


def test_haversine_matches_vector_formula_everywhere():
    # Reference: the atan2(|a x b|, a . b) form, well conditioned at every distance.
    rng = np.random.default_rng(4)
    lat1, lon1 = rng.uniform(-90, 90, 2000), rng.uniform(-180, 180, 2000)
    # Near-coincident, generic and near-antipodal partners.
    offs = np.concatenate([rng.normal(0, 1e-6, 500), rng.uniform(-90, 90, 1000)])
    lat2 = np.concatenate([lat1[:1500] + offs, -lat1[1500:] + rng.normal(0, 1e-6, 500)])
    lon2 = np.concatenate([lon1[:1500] + offs, lon1[1500:] + 180 + rng.normal(0, 1e-6, 500)])
    lat2 = np.clip(lat2, -90, 90)
    a, b = to_unit_vectors(lat1, lon1), to_unit_vectors(lat2, lon2)
    ref = EARTH_RADIUS_KM * np.arctan2(
        np.linalg.norm(np.cross(a, b), axis=1), np.einsum("ij,ij->i", a, b)
    )
    np.testing.assert_allclose(haversine_km(lat1, lon1, lat2, lon2), ref, rtol=0, atol=1e-8)


def test_haversine_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    a = rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)
    b = rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)
    d_ab = haversine_km(*a, *b)
    np.testing.assert_allclose(d_ab, haversine_km(*b, *a), rtol=0, atol=1e-9)
    assert np.all(d_ab >= 0) and np.all(d_ab <= math.pi * EARTH_RADIUS_KM + 1e-9)
    # Longitudes off by whole turns are the same points.
    np.testing.assert_allclose(d_ab, haversine_km(a[0], a[1] + 360, b[0], b[1] - 720), atol=1e-6)


def test_haversine_broadcasting():
    lats = np.array([[0.0], [10.0], [20.0]])
    lons = np.array([0.0, 1.0, 2.0, 3.0])
    out = haversine_km(lats, lons, 0.0, 0.0)
    assert out.shape == (3, 4)
    assert out[0, 1] == pytest.approx(equator_km(1.0))
    scalar = haversine_km(0.0, 0.0, 0.0, 1.0)
    assert isinstance(scalar, float)


# --- WGS-84 geodesic -------------------------------------------------------------------


def test_geodesic_published_values():
    # Karney (2013) / GeographicLib docs: JFK (40.6N 73.8W) to LHR (51.6N 0.5W).
    assert geodesic_km(40.6, -73.8, 51.6, -0.5) == pytest.approx(5551.759400, abs=1e-6)
    # GeographicLib docs: Wellington (41.32S 174.81E) to Salamanca (40.96N 5.50W).
    assert geodesic_km(-41.32, 174.81, 40.96, -5.50) == pytest.approx(19959.679267, abs=1e-6)


def test_geodesic_one_degree_of_equator_uses_wgs84_semi_major_axis():
    assert geodesic_km(0.0, 0.0, 0.0, 1.0) == pytest.approx(6378.137 * math.pi / 180, rel=1e-9)
    assert geodesic_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(6378.137 * math.pi / 180)


def test_geodesic_nearly_antipodal_converges():
    d = geodesic_km(0.0, 0.0, 0.5, 179.5)
    assert math.isfinite(d) and 19_900 < d < 20_010


def test_geodesic_close_to_sphere():
    rng = np.random.default_rng(1)
    pts = rng.uniform([-80, -180, -80, -180], [80, 180, 80, 180], (50, 4))
    ell = geodesic_km_many(*pts.T)
    sph = haversine_km(*pts.T)
    assert np.all(np.abs(ell - sph) <= 0.006 * sph + 1e-9)
    assert not np.allclose(ell, sph, rtol=1e-4)


def test_geodesic_many_matches_scalar_and_broadcasts():
    lats = np.array([0.0, 45.0, -33.9])
    lons = np.array([0.0, 90.0, 151.2])
    many = geodesic_km_many(lats[:, None], lons[:, None], lats[None, :], lons[None, :])
    assert many.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert many[i, j] == geodesic_km(lats[i], lons[i], lats[j], lons[j])
    np.testing.assert_allclose(many, many.T, atol=1e-9)
    assert geodesic_km_many(0.0, 0.0, 0.0, [1.0, 2.0]).shape == (2,)


@pytest.mark.parametrize("bad", [91.0, -90.5, float("nan")])
def test_geodesic_rejects_bad_latitude(bad):
    with pytest.raises(ValueError):
        geodesic_km(bad, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        geodesic_km_many([0.0, bad], 0.0, 0.0, 0.0)


# --- helpers -------------------------------------------------------------------------


def test_normalize_lon():
    assert normalize_lon(180.0) == -180.0
    assert normalize_lon(540.0) == -180.0
    assert normalize_lon(-190.0) == pytest.approx(170.0)
    assert normalize_lon(179.5) == 179.5
    assert isinstance(normalize_lon(10.0), float)
    # Just below -180: a plain modulo rounds this up to +180.
    assert normalize_lon(np.nextafter(-180.0, -np.inf)) == -180.0
    arr = normalize_lon(np.linspace(-1000, 1000, 2001))
    assert arr.shape == (2001,)
    assert np.all((arr >= -180.0) & (arr < 180.0))


def test_to_unit_vectors():
    v = to_unit_vectors([0.0, 0.0, 90.0, -90.0], [0.0, 90.0, 37.0, 0.0])
    assert v.shape == (4, 3)
    np.testing.assert_allclose(v, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]], atol=1e-15)
    rng = np.random.default_rng(2)
    w = to_unit_vectors(rng.uniform(-90, 90, 100), rng.uniform(-540, 540, 100))
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0)
    # Chord length is monotonic in great-circle distance.
    chord = np.linalg.norm(w[0] - w, axis=1)
    arc = haversine_km(
        *np.degrees([np.arcsin(w[0, 2]), np.arctan2(w[0, 1], w[0, 0])]),
        np.degrees(np.arcsin(w[:, 2])),
        np.degrees(np.arctan2(w[:, 1], w[:, 0])),
    )
    np.testing.assert_allclose(chord, 2 * np.sin(arc / EARTH_RADIUS_KM / 2), atol=1e-12)


# --- weighted centroid --------------------------------------------------------------------


def test_centroid_across_antimeridian():
    lat, lon = weighted_centroid([0.0, 0.0], [179.0, -179.0], [0.5, 0.5])
    assert lat == pytest.approx(0.0, abs=1e-12)
    assert lon == -180.0 or lon == pytest.approx(-180.0, abs=1e-9)  # never +180 or 0


def test_centroid_weights_and_renormalisation():
    lat, lon = weighted_centroid([0.0, 0.0], [0.0, 90.0], [3.0, 1.0])
    assert lat == pytest.approx(0.0, abs=1e-12)
    assert lon == pytest.approx(math.degrees(math.atan2(1, 3)))
    assert weighted_centroid([10.0], [20.0], [0.2]) == pytest.approx((10.0, 20.0))


def test_centroid_degenerate_is_none():
    assert weighted_centroid([0.0, 0.0], [0.0, 180.0], [1.0, 1.0]) is None
    assert weighted_centroid([90.0, -90.0], [0.0, 0.0], [2.0, 2.0]) is None


def test_centroid_rejects_bad_weights():
    with pytest.raises(ValueError):
        weighted_centroid([0.0], [0.0], [0.0])
    with pytest.raises(ValueError):
        weighted_centroid([0.0, 1.0], [0.0, 1.0], [1.0, -0.5])
    with pytest.raises(ValueError):
        weighted_centroid([0.0, 1.0], [0.0], [1.0, 1.0])


# --- spread radii -----------------------------------------------------------------------


def test_spread_hand_computed():
    # Candidates on the equator at 0, 100 km and 500 km (by hand) from the first.
    lons = [0.0, math.degrees(100 / EARTH_RADIUS_KM), math.degrees(500 / EARTH_RADIUS_KM)]
    radii = spread_radii([0.0] * 3, lons, [0.6, 0.3, 0.1], levels=(0.5, 0.6, 0.9, 0.95, 1.0))
    assert radii[0.5] == 0.0  # the top candidate alone holds 60 %
    assert radii[0.6] == 0.0  # "at least q": equality counts
    assert radii[0.9] == pytest.approx(100.0, abs=1e-9)  # 0.6 + 0.3 rounds to 0.8999...
    assert radii[0.95] == pytest.approx(500.0, abs=1e-9)
    assert radii[1.0] == pytest.approx(500.0, abs=1e-9)
    assert list(radii) == [0.5, 0.6, 0.9, 0.95, 1.0]


def test_spread_default_levels_renormalise_and_pick_top_candidate():
    lons = [math.degrees(500 / EARTH_RADIUS_KM), math.degrees(100 / EARTH_RADIUS_KM), 0.0]
    # Unnormalised, top candidate last: same answer as above.
    radii = spread_radii([0.0] * 3, lons, [1.0, 3.0, 6.0])
    assert set(radii) == {0.5, 0.9}
    assert radii[0.5] == 0.0
    assert radii[0.9] == pytest.approx(100.0, abs=1e-9)


def test_spread_zero_probability_candidates_do_not_count():
    lons = [0.0, 1.0, 50.0]
    radii = spread_radii([0.0] * 3, lons, [0.5, 0.5, 0.0], levels=(1.0,))
    assert radii[1.0] == pytest.approx(equator_km(1.0))


def test_spread_with_explicit_center():
    lons = [1.0, 2.0, 4.0]
    radii = spread_radii([0.0] * 3, lons, [0.2, 0.3, 0.5], center=(0.0, 0.0), levels=(0.2, 0.5))
    assert radii[0.2] == pytest.approx(equator_km(1.0))
    assert radii[0.5] == pytest.approx(equator_km(2.0))


def test_spread_across_antimeridian():
    radii = spread_radii([0.0, 0.0], [179.9, -179.9], [0.5, 0.5], levels=(0.9,))
    assert radii[0.9] == pytest.approx(22.239, abs=0.001)


def test_spread_single_candidate():
    assert spread_radii([45.0], [7.0], [1.0]) == {0.5: 0.0, 0.9: 0.0}


@pytest.mark.parametrize("level", [0.0, -0.1, 1.5])
def test_spread_rejects_bad_levels(level):
    with pytest.raises(ValueError):
        spread_radii([0.0], [0.0], [1.0], levels=(level,))


def test_spread_rejects_bad_inputs():
    with pytest.raises(ValueError):
        spread_radii([], [], [])
    with pytest.raises(ValueError):
        spread_radii([0.0, 1.0], [0.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError):
        spread_radii([0.0], [0.0], [1.0], center=(95.0, 0.0))


def test_spread_monotonic_in_level_and_matches_definition():
    rng = np.random.default_rng(3)
    lats, lons = rng.uniform(-60, 60, 200), rng.uniform(-180, 180, 200)
    probs = rng.dirichlet(np.full(200, 0.3))
    levels = np.linspace(0.05, 1.0, 20)
    radii = spread_radii(lats, lons, probs, levels=levels)
    values = [radii[float(q)] for q in levels]
    assert values == sorted(values)
    top = int(np.argmax(probs))
    d = geo.haversine_km(lats[top], lons[top], lats, lons)
    for q, r in zip(levels, values, strict=True):
        assert probs[d <= r].sum() >= q - 1e-9
        assert probs[d < r].sum() < q  # nothing smaller would do


def _spread_by_full_sort(lats, lons, probs, center, levels):
    """The definition, written the obvious way: sort every candidate by distance."""
    w = np.asarray(probs, dtype=np.float64)
    w = w / w.sum()
    dist = np.asarray(haversine_km(center[0], center[1], lats, lons), dtype=np.float64)
    order = np.argsort(dist, kind="stable")
    cumulative = np.cumsum(w[order])
    cumulative /= cumulative[-1]
    return {
        q: float(dist[order][min(np.searchsorted(cumulative, q - 1e-9), len(w) - 1)])
        for q in levels
    }


@pytest.mark.parametrize("seed", range(6))
def test_spread_matches_full_sort_on_large_clustered_sets(seed):
    # Large enough for the bucketed path; clustered, duplicated and zero-weight points,
    # and softmax-like weights from sharp to flat, as a gallery search gives them.
    rng = np.random.default_rng(seed)
    n = 20_000
    centres = rng.uniform([-60, -180], [70, 180], size=(12, 2))
    pick = centres[rng.integers(0, 12, n)]
    lats = np.clip(pick[:, 0] + rng.normal(0, 0.5 + seed, n), -90, 90)
    lons = pick[:, 1] + rng.normal(0, 0.5 + seed, n)
    lats[:500], lons[:500] = lats[500], lons[500]  # exact duplicates
    logits = rng.normal(0, 1, n) * (3.0 * seed + 1)
    probs = np.exp(logits - logits.max())
    probs[rng.integers(0, n, 2000)] = 0.0
    levels = (1e-12, 0.1, 0.5, 0.9, 0.99, 1.0)
    top = int(np.argmax(probs))
    for center in [None, (float(lats[top]), float(lons[top])), (10.0, 179.5)]:
        want = _spread_by_full_sort(lats, lons, probs, center or (lats[top], lons[top]), levels)
        got = spread_radii(lats, lons, probs, center=center, levels=levels)
        fast = spread_radii(
            lats,
            lons,
            probs,
            center=center,
            levels=levels,
            vectors=to_unit_vectors(lats, lons).T,
        )
        for q in levels:
            assert got[q] == pytest.approx(want[q], abs=1e-6), (center, q)
            assert fast[q] == pytest.approx(want[q], abs=1e-6), (center, q)


def test_spread_rejects_vectors_of_the_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        spread_radii([0.0, 1.0], [0.0, 1.0], [0.5, 0.5], vectors=np.zeros((2, 3)))
