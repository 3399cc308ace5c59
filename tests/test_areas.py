"""Probability by country and region (geoguess.areas), and custom gallery point names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geoguess.areas import Areas, assign_areas, format_shares, load_areas, percent, save_areas
from geoguess.cli import app
from geoguess.places import nearest_places

runner = CliRunner()


def test_points_get_the_country_and_region_they_lie_in() -> None:
    points = np.array(
        [
            (48.8584, 2.2945),  # the Eiffel Tower
            (40.7484, -73.9857),  # the Empire State Building
            (35.6586, 139.7454),  # Tokyo Tower
            (-33.8568, 151.2153),  # Sydney Opera House
            (46.2330, 6.0560),  # Geneva airport's French side (Ferney-Voltaire)
        ],
        dtype=np.float32,
    )
    areas = assign_areas(points)
    codes = [str(areas.country_codes[areas.region_country[r]]) for r in areas.region]
    regions = [str(areas.region_names[r]) for r in areas.region]
    assert codes[:4] == ["FR", "US", "JP", "AU"]
    assert regions[:4] == ["Île-de-France", "New York", "Tokyo", "New South Wales"]
    assert codes[4] in {"FR", "CH"}


def test_areas_agree_with_the_brute_force_nearest_place() -> None:
    """The k-d tree's nearest place is the great-circle nearest (places.nearest_places
    searches every place by dot product): their countries agree point for point."""
    rng = np.random.default_rng(3)
    lat = np.degrees(np.arcsin(rng.uniform(-0.9, 0.95, 300)))
    lon = rng.uniform(-180, 180, 300)
    # Include the antimeridian, where a lat/lon k-d tree would be wrong.
    lat[:3], lon[:3] = -18.1, [179.99, -179.99, 180.0]
    areas = assign_areas(np.stack([lat, lon], axis=1))
    brute = nearest_places(lat, lon, by_population=False)
    got = [str(areas.country_codes[areas.region_country[r]]) for r in areas.region]
    assert got == [p.country_code for p in brute]


def test_shares_sum_the_probability_by_area() -> None:
    areas = Areas(
        region=np.array([0, 0, 1, 2, 2, 3]),
        region_names=np.array(["Île-de-France", "Bavaria", "Catalonia", "France"]),
        region_country=np.array([0, 1, 2, 0]),
        country_codes=np.array(["FR", "DE", "ES"]),
        country_names=np.array(["France", "Germany", "Spain"]),
    )
    probs = np.array([0.1, 0.2, 0.05, 0.3, 0.25, 0.1])
    countries, regions = areas.shares(probs)
    assert [(a.country_code, round(a.probability, 6)) for a in countries] == [
        ("ES", 0.55),
        ("FR", 0.4),
        ("DE", 0.05),
    ]
    assert [a.label() for a in regions] == [
        "Catalonia, Spain",
        "Île-de-France, France",
        "France",
        "Bavaria, Germany",
    ]
    assert format_shares(countries) == "Spain 55%, France 40%, Germany 5.0%"
    # A subset of rows (what a tree search scored) and a cap on how many are shown.
    countries, _ = areas.shares(np.array([0.7, 0.3]), np.array([5, 1]), top=1)
    assert [(a.name, a.probability) for a in countries] == [("France", 1.0)]
    assert (percent(0.0004), percent(0.031), percent(0.0995)) == ("<0.1%", "3.1%", "10%")


def test_areas_file_round_trip_and_mismatch(tmp_path: Path) -> None:
    areas = assign_areas(np.array([(48.85, 2.35), (51.5, -0.12)], dtype=np.float32))
    path = tmp_path / "areas.npz"
    save_areas(path, areas)
    back = load_areas(path, 2)
    assert back.region.tolist() == areas.region.tolist()
    assert back.country_names.tolist() == ["France", "United Kingdom"]
    with pytest.raises(ValueError, match="describes 2 points, the gallery has 3"):
        load_areas(path, 3)


def test_answers_carry_their_areas_everywhere(tiny_home: Path, photos_dir: Path, tmp_path) -> None:
    from geoguess.geolocator import Geolocator

    geo = Geolocator.load()
    entry = geo.model.manifest.galleries[geo.gallery_name]
    assert entry.areas in geo.model.manifest.files  # checksummed like every model file
    photo = str(photos_dir / "gps_DSCN0010.jpg")
    record = json.loads(runner.invoke(app, [photo, "--json"]).stdout)
    countries, regions = record["countries"], record["regions"]
    assert 1 <= len(countries) <= 5 and 1 <= len(regions) <= 5
    probs = [c["probability"] for c in countries]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    # A country holds at least its regions' mass, and the best guess's own mass.
    by_code = {c["country_code"]: c["probability"] for c in countries}
    for r in regions:
        if r["country_code"] in by_code:
            assert by_code[r["country_code"]] >= r["probability"] - 1e-6
    table = runner.invoke(app, [photo]).stdout
    assert "By country: " + format_shares_from(countries) in table
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(Path(photo).read_bytes())
    out = tmp_path / "o.csv"
    assert runner.invoke(app, ["scan", str(folder), "-o", str(out)]).exit_code == 0
    with out.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["countries"] == format_shares_from(countries, sep="; ")
    geojson = json.loads(runner.invoke(app, [photo, "--format", "geojson"]).stdout)
    best = next(f for f in geojson["features"] if f["properties"].get("rank") == 1)
    assert best["properties"]["countries"] == countries


def format_shares_from(records: list[dict], sep: str = ", ") -> str:
    from geoguess.areas import AreaShare

    return format_shares(
        [AreaShare(r["name"], r["country"], r["country_code"], r["probability"]) for r in records],
        sep=sep,
    )


def test_country_mass_equals_the_softmax_summed_by_country(tiny_geo, photos_dir: Path) -> None:
    """Computed the long way: GeoCLIP's softmax over every gallery point, each point's
    country from the gazetteer directly."""
    from geoguess.locate import locate

    result = locate(tiny_geo, photos_dir / "gps_DSCN0010.jpg")
    emb = result.embedding[None, :]
    (found,) = tiny_geo.flat.search(emb, 1)
    areas = tiny_geo.areas
    codes = areas.country_codes[areas.region_country[areas.region]]
    mass: dict[str, float] = {}
    for code, p in zip(codes.tolist(), found.support_probs.tolist()):
        mass[code] = mass.get(code, 0.0) + p
    for share in result.countries:
        assert share.probability == pytest.approx(mass[share.country_code], abs=1e-6)
    assert result.countries[0].probability == pytest.approx(max(mass.values()), abs=1e-6)


def test_a_custom_gallery_names_its_points(tiny_home_copy: Path, tmp_path, photos_dir) -> None:
    csv_path = tmp_path / "landmarks.csv"
    csv_path.write_text(
        "name,lat,lon\nEiffel Tower,48.8584,2.2945\nBig Ben,51.5007,-0.1246\n"
        "Golden Gate Bridge,37.8199,-122.4783\n"
    )
    assert runner.invoke(app, ["models", "gallery", "add", "lm", str(csv_path)]).exit_code == 0
    photo = str(photos_dir / "es_Canon_40D.jpg")
    res = runner.invoke(app, ["locate", "--gallery", "lm", "--json", "-k", "3", photo])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    labels = {p["label"] for p in record["predictions"]}
    assert labels == {"Eiffel Tower", "Big Ben", "Golden Gate Bridge"}
    assert {c["country_code"] for c in record["countries"]} == {"FR", "GB", "US"}
    table = runner.invoke(app, ["locate", "--gallery", "lm", "-k", "3", photo]).stdout
    assert "Eiffel Tower (Paris" in table
