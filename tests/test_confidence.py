"""Confidence in words: the accuracy level of the radius holding half the probability."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.geo import accuracy_level


@pytest.mark.parametrize(
    ("km", "level"),
    [
        (0.0, "street"),
        (0.99, "street"),
        (1.0, "city"),
        (24.9, "city"),
        (25.0, "region"),
        (199.0, "region"),
        (200.0, "country"),
        (749.0, "country"),
        (750.0, "continent"),
        (2499.0, "continent"),
        (2500.0, "world"),
        (20000.0, "world"),
        (None, None),
    ],
)
def test_levels(km: float | None, level: str | None) -> None:
    assert accuracy_level(km) == level


def test_confidence_everywhere_agrees_with_the_spread(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    photo = str(photos_dir / "gps_DSCN0010.jpg")
    record = json.loads(CliRunner().invoke(app, [photo, "--json"]).stdout)
    assert record["confidence"] == accuracy_level(record["spread_km"]["p50"])
    table = CliRunner().invoke(app, [photo]).stdout
    assert f"Confidence: {record['confidence']} level" in table
    geo = json.loads(CliRunner().invoke(app, [photo, "--format", "geojson"]).stdout)
    best = next(f for f in geo["features"] if f["properties"].get("rank") == 1)
    assert best["properties"]["confidence"] == record["confidence"]
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(Path(photo).read_bytes())
    out = tmp_path / "o.csv"
    assert CliRunner().invoke(app, ["scan", str(folder), "-o", str(out)]).exit_code == 0
    with out.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["confidence"] == record["confidence"]
