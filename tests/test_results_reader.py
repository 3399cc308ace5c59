"""Reading a scan's output back (geoguess map, geoguess xmp): files and shard folders."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from browser import browse
from shared_data import sample_folder, write_csv_rows
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.errors import UsageError
from geoguess.results_reader import read_results


def _key(records: list[dict]) -> list[tuple]:
    return [
        (
            r["file"],
            r.get("error"),
            [(p["lat"], p["lon"]) for p in r["predictions"]],
            # CSV keeps 6 decimals of EXIF GPS, JSON Lines every digit.
            None
            if not r.get("exif_gps")
            else (round(r["exif_gps"]["lat"], 5), round(r["exif_gps"]["lon"], 5)),
        )
        for r in sorted(records, key=lambda r: r["file"])
    ]


FORMATS = ["csv", "jsonl"]
if importlib.util.find_spec("pyarrow") is not None:
    FORMATS.append("parquet")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_folder_of_shards_reads_as_its_single_file_scan(
    tiny_home: Path, photos_dir: Path, tmp_path: Path, fmt: str
) -> None:
    root = sample_folder(tmp_path, photos_dir)
    single = tmp_path / "all.csv"
    assert CliRunner().invoke(app, ["scan", str(root), "-o", str(single)]).exit_code == 1
    shards = tmp_path / "out"
    args = ["scan", str(root), "-o", f"{shards}/", "--format", fmt, "--shard-size", "2"]
    assert CliRunner().invoke(app, args).exit_code == 1
    assert len(list(shards.glob(f"part-*.{fmt}"))) == 2
    from_folder, from_file = read_results(shards), read_results(single)
    assert not from_folder.problems
    assert len(from_folder.records) == 4
    # CSV and Parquet rows keep 5 decimals of the candidates; JSON Lines keeps 6.
    rounded = [
        (f, e, [(round(a, 4), round(b, 4)) for a, b in c], g)
        for f, e, c, g in _key(from_folder.records)
    ]
    assert rounded == [
        (f, e, [(round(a, 4), round(b, 4)) for a, b in c], g)
        for f, e, c, g in _key(from_file.records)
    ]

    # The commands that read results take the folder too.
    res = CliRunner().invoke(app, ["map", f"{shards}/", "-o", str(tmp_path / "m.html")])
    assert res.exit_code == 0, res.output
    assert "map of 4 photos" in res.output
    res = CliRunner().invoke(app, ["xmp", str(shards), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "2 to write" in res.output


def test_a_folder_that_is_not_a_scan_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(UsageError, match="not a scan's folder of shards"):
        read_results(tmp_path)
    res = CliRunner().invoke(app, ["xmp", str(tmp_path)])
    assert res.exit_code == 2
    assert "not a scan's folder of shards" in res.output


def test_a_reviewed_row_is_drawn_where_the_person_put_it(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    import csv

    from geoguess.geojson import scan_feature
    from geoguess.maps.html import read_data

    root = sample_folder(tmp_path, photos_dir)
    out = tmp_path / "out.csv"
    CliRunner().invoke(app, ["scan", str(root), "-o", str(out)])
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    for row in rows:
        if row["path"].endswith("gps_DSCN0010.jpg"):
            row["lat"], row["lon"] = "43.46745", "11.88513"  # onto its own EXIF GPS
        if row["path"].endswith("es_Canon_40D.jpg"):
            row["lat"] = "north"  # not a number: drawn at the guess
    edited = tmp_path / "edited.csv"
    write_csv_rows(edited, rows)
    features = {
        Path(f["properties"]["file"]).name: f
        for f in map(scan_feature, read_results(edited).records)
    }
    moved = features["gps_DSCN0010.jpg"]
    assert moved["geometry"]["coordinates"] == [11.88513, 43.46745]
    assert moved["properties"]["reviewed"] is True
    assert moved["properties"]["error_km"] < 0.1  # recomputed for the new point
    assert moved["properties"]["probability"] is None
    assert "reviewed" not in features["orient_landscape_3.jpg"]["properties"]
    bad = features["es_Canon_40D.jpg"]
    assert bad["geometry"]["coordinates"][1] == pytest.approx(
        bad["properties"]["candidates"][0]["lat"]
    )

    page = tmp_path / "map.html"
    res = CliRunner().invoke(app, ["map", str(edited), "-o", str(page), "--no-thumbnails"])
    assert res.exit_code == 0, res.output
    drawn = {Path(f["properties"]["file"]).name: f for f in read_data(page)["features"]}
    assert drawn["gps_DSCN0010.jpg"]["geometry"] == moved["geometry"]
    shown = browse(page, tmp_path)
    assert shown["ready"] and shown["errors"] == [], shown["dom"][-2000:]
    assert shown["counts"]["photos"] == 3  # the broken photo has no position
    # The person's position is a square marker, and the legend says what squares are.
    assert shown["counts"]["reviewed"] == 1
    assert len(re.findall(r'class="[^"]*\bgg-reviewed\b', shown["dom"])) == 1
    assert "square: position set by a person (1)" in shown["dom"]
    # Read back from the page's GeoJSON, the point is still the person's.
    geo = tmp_path / "edited.geojson"
    geo.write_text(json.dumps(read_data(page)), encoding="utf-8")
    again = [r for r in read_results(geo).records if r["file"].endswith("gps_DSCN0010.jpg")]
    assert again[0]["reviewed"] == {"lat": 43.46745, "lon": 11.88513}
