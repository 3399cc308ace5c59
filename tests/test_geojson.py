"""GeoJSON output (issue 13): RFC 7946, checked with the geojson library and against --json.

The tiny model set has random weights: these tests check structure and coordinate
order, never where a photo is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoguess.cli import app

geojson = pytest.importorskip("geojson", reason="pip install geojson (the test extra)")

PHOTOS = ["gps_DSCN0010.jpg", "es_no_exif.jpg"]


def _valid(text: str) -> dict:
    parsed = geojson.loads(text)
    assert parsed.is_valid, parsed.errors()
    doc = json.loads(text)
    assert doc["type"] == "FeatureCollection" and "crs" not in doc  # RFC 7946: no crs
    for feature in doc["features"]:
        geometry = feature["geometry"]
        if geometry is not None:
            lon, lat = geometry["coordinates"]
            assert -180 <= lon <= 180 and -90 <= lat <= 90
    return doc


def test_locate_geojson_matches_the_json_output(tiny_home: Path, photos_dir: Path) -> None:
    paths = [str(photos_dir / name) for name in PHOTOS]
    runner = CliRunner()
    as_json = runner.invoke(app, ["--json", "-k", "3", *paths])
    as_geo = runner.invoke(app, ["--format", "geojson", "-k", "3", *paths])
    assert as_json.exit_code == 0 and as_geo.exit_code == 0, as_geo.output
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    doc = _valid(as_geo.stdout)
    for record in records:
        mine = [f for f in doc["features"] if f["properties"]["file"] == record["file"]]
        candidates = [f for f in mine if f["properties"]["kind"] == "candidate"]
        assert [f["properties"]["rank"] for f in candidates] == [1, 2, 3]
        for feature, pred in zip(candidates, record["predictions"]):
            # Longitude first, as RFC 7946 says, and the same point as --json.
            assert feature["geometry"]["coordinates"] == pytest.approx(
                [pred["lon"], pred["lat"]], abs=1e-6
            )
            assert feature["properties"]["probability"] == pred["probability"]
        assert "p50" in candidates[0]["properties"]["spread_km"]
        exif = [f for f in mine if f["properties"]["kind"] == "exif_gps"]
        if record["exif_gps"]:
            gps = record["exif_gps"]
            assert exif[0]["geometry"]["coordinates"] == pytest.approx(
                [gps["lon"], gps["lat"]], abs=1e-6
            )
            assert exif[0]["properties"]["error_km"] == record["exif_error_km"]
        else:
            assert exif == []


def test_scan_geojson_has_one_feature_per_photo_and_resumes(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(photos_dir / name, folder / name)
    (folder / "broken.jpg").write_text("not a photo")
    runner = CliRunner()
    out, lines = tmp_path / "scan.geojson", tmp_path / "scan.jsonl"
    first = runner.invoke(app, ["scan", str(folder), "-o", str(out), "--precision", "fp32"])
    assert first.exit_code == 1, first.output  # the broken photo
    runner.invoke(app, ["scan", str(folder), "-o", str(lines), "--precision", "fp32"])
    doc = _valid(out.read_text())
    by_file = {f["properties"]["file"]: f for f in doc["features"]}
    records = {r["file"]: r for r in map(json.loads, lines.read_text().splitlines())}
    assert set(by_file) == set(records)
    for file, record in records.items():
        feature = by_file[file]
        if record["error"]:
            assert feature["geometry"] is None and feature["properties"]["error"]
            continue
        best = record["predictions"][0]
        assert feature["geometry"]["coordinates"] == pytest.approx(
            [best["lon"], best["lat"]], abs=1e-6
        )
        assert len(feature["properties"]["candidates"]) == len(record["predictions"])
    before = out.read_bytes()
    again = runner.invoke(app, ["scan", str(folder), "-o", str(out), "--precision", "fp32"])
    assert "skipped 3 already done" in again.stderr and out.read_bytes() == before
    # Torn in the middle of a row: cut back, redone, valid again.
    out.write_bytes(before[: len(before) - 40])
    torn = runner.invoke(app, ["scan", str(folder), "-o", str(out), "--precision", "fp32"])
    assert "dropped an incomplete last row" in torn.stderr
    assert sorted(f["properties"]["file"] for f in _valid(out.read_text())["features"]) == sorted(
        records
    )
    # Retrying the failed photo keeps the collection valid, each photo once.
    (folder / "broken.jpg").write_bytes((photos_dir / PHOTOS[0]).read_bytes())
    runner.invoke(app, ["scan", str(folder), "-o", str(out), "-p", "fp32", "--retry-failed"])
    files = [f["properties"]["file"] for f in _valid(out.read_text())["features"]]
    assert sorted(files) == sorted(records)
    assert all(f["geometry"] for f in _valid(out.read_text())["features"])


def test_scan_geojson_to_stdout_is_one_collection(tiny_home: Path, photos_dir: Path) -> None:
    result = CliRunner().invoke(app, ["scan", str(photos_dir), "--format", "geojson"])
    doc = _valid(result.stdout)
    assert len(doc["features"]) >= 10
