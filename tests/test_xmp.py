"""XMP sidecars, checked with the reference reader: ExifTool reads back what we wrote.

ExifTool is the Debian package libimage-exiftool-perl (.ci/run installs it). A missing
exiftool fails these tests: a sidecar only ever checked by its own writer proves little.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from exiftool_reader import EXIFTOOL, exiftool
from shared_data import sample_folder, write_csv_rows
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.xmp import XmpError, sidecar_path, write_sidecar, xmp_coordinate


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (48.858222, 2.2945),
        (-33.856784, 151.215297),
        (40.689247, -74.044502),
        (-54.801912, -68.302951),
        (0.0, 0.0),
        (89.99999, -179.99999),
        (-90.0, 180.0),
        (10.9999999999, -0.0000004),  # minutes round up to 60: carried into the degree
    ],
)
def test_exiftool_reads_back_the_coordinates(tmp_path: Path, lat: float, lon: float) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"not read")
    result = write_sidecar(photo, lat, lon, properties={"Probability": "0.25"})
    assert result.action == "written"
    assert result.path == tmp_path / "p.jpg.xmp"
    tags = exiftool(result.path)
    assert abs(tags["XMP-exif:GPSLatitude"] - lat) < 1e-5
    assert abs(tags["XMP-exif:GPSLongitude"] - lon) < 1e-5
    assert tags["XMP-exif:GPSMapDatum"] == "WGS-84"
    assert "not a GPS fix" in tags["XMP-exif:GPSProcessingMethod"]
    assert tags["XMP-geoguess:Probability"] == 0.25
    assert photo.read_bytes() == b"not read"


def test_coordinate_text() -> None:
    assert xmp_coordinate(-33.5, "lat") == "33,30.000000S"
    assert xmp_coordinate(151.25, "lon") == "151,15.000000E"
    assert xmp_coordinate(-0.5, "lon") == "0,30.000000W"
    assert xmp_coordinate(10.9999999999, "lat") == "11,0.000000N"


def test_sidecar_names(tmp_path: Path) -> None:
    assert sidecar_path(tmp_path / "a.b.jpg") == tmp_path / "a.b.jpg.xmp"
    assert sidecar_path(tmp_path / "a.b.jpg", "replace") == tmp_path / "a.b.xmp"
    with pytest.raises(Exception, match="append, replace"):
        sidecar_path(tmp_path / "a.jpg", "beside")


def _tagged_sidecar(tmp_path: Path, *extra: str) -> Path:
    """A sidecar made by ExifTool, as a photo library would have left it."""
    side = tmp_path / "photo.jpg.xmp"
    subprocess.run(
        [
            EXIFTOOL or "exiftool",
            "-q",
            "-o",
            str(side),
            "-XMP-dc:Subject=holiday",
            "-XMP-dc:Subject=Zürich",
            "-XMP-xmp:Rating=4",
            "-XMP-dc:Title=Brücke im Nebel",
            "-XMP-iptcExt:PersonInImage=Ada Lovelace",
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    return side


def test_merge_keeps_every_other_tag(tmp_path: Path) -> None:
    if EXIFTOOL is None:
        exiftool()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"original")
    side = _tagged_sidecar(tmp_path)
    before = exiftool(side)
    result = write_sidecar(photo, 47.3769, 8.5417, properties={"Model": "m/fp32"})
    assert result.action == "merged"
    after = exiftool(side)
    for key, value in before.items():
        if key.startswith(("XMP-", "XMP:")):
            assert after[key] == value, key
    assert after["XMP-dc:Subject"] == ["holiday", "Zürich"]
    assert after["XMP-xmp:Rating"] == 4
    assert after["XMP-iptcExt:PersonInImage"] == "Ada Lovelace"
    assert abs(after["XMP-exif:GPSLatitude"] - 47.3769) < 1e-5
    assert abs(after["XMP-exif:GPSLongitude"] - 8.5417) < 1e-5
    assert after["XMP-geoguess:Model"] == "m/fp32"
    assert photo.read_bytes() == b"original"


def test_gps_in_a_sidecar_is_kept_unless_asked(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    side = _tagged_sidecar(tmp_path, "-XMP-exif:GPSLatitude=51.5", "-XMP-exif:GPSLongitude=-0.12")
    data = side.read_bytes()
    result = write_sidecar(photo, 10.0, 20.0)
    assert (result.action, side.read_bytes()) == ("kept", data)
    result = write_sidecar(photo, 10.0, 20.0, overwrite=True)
    assert result.action == "merged"
    tags = exiftool(side)
    assert (tags["XMP-exif:GPSLatitude"], tags["XMP-exif:GPSLongitude"]) == (10.0, 20.0)
    assert tags["XMP-xmp:Rating"] == 4


def test_a_second_write_changes_nothing(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    _tagged_sidecar(tmp_path)
    write_sidecar(photo, 1.5, 2.5, properties={"Probability": "0.1"})
    side = sidecar_path(photo)
    data, stat = side.read_bytes(), side.stat()
    assert write_sidecar(photo, 1.5, 2.5, properties={"Probability": "0.1"}).action == "unchanged"
    assert side.read_bytes() == data
    assert side.stat().st_mtime_ns == stat.st_mtime_ns
    # Our own earlier guess is GPS like any other: a different guess does not replace it.
    assert write_sidecar(photo, 3.0, 4.0).action == "kept"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>',
            "not readable XMP",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&e;</x:xmpmeta>',
            "not readable XMP",
        ),
        (b"<html><body>hello</body></html>", "not XMP"),
        (b"\x00\xff binary", "not readable XMP"),
    ],
)
def test_a_hostile_or_foreign_sidecar_is_left_alone(
    tmp_path: Path, content: bytes, words: str
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    side = sidecar_path(photo)
    side.write_bytes(content)
    with pytest.raises(XmpError, match=words) as info:
        write_sidecar(photo, 1.0, 2.0)
    assert str(side) in str(info.value)
    assert "\n" not in str(info.value)
    assert side.read_bytes() == content


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def test_scan_writes_sidecars_for_photos_without_gps(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    root = sample_folder(tmp_path, photos_dir)
    originals = {p.name: sha256(p) for p in root.iterdir()}
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(app, ["scan", str(root), "-o", str(out), "--xmp"])
    assert res.exit_code == 1, res.output  # the broken photo
    assert "XMP sidecars: 2 written" in res.output
    rows = _rows(out)
    made = sorted(p.name for p in root.glob("*.xmp"))
    assert made == ["es_Canon_40D.jpg.xmp", "orient_landscape_3.jpg.xmp"]
    for side in made:
        tags = exiftool(root / side)
        row = rows[side.removesuffix(".xmp")]
        assert abs(tags["XMP-exif:GPSLatitude"] - float(row["lat"])) < 1e-5
        assert abs(tags["XMP-exif:GPSLongitude"] - float(row["lon"])) < 1e-5
        assert tags["XMP-geoguess:Model"].startswith("tiny/")
        assert tags["XMP-geoguess:SpreadP50Km"] == float(row["spread_p50_km"])
    assert {p.name: sha256(p) for p in root.iterdir() if p.suffix != ".xmp"} == originals

    # Again from scratch: the same guesses, so no sidecar changes.
    stamps = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.glob("*.xmp")}
    res = CliRunner().invoke(app, ["scan", str(root), "-o", str(out), "--overwrite", "--xmp"])
    assert "2 unchanged" in res.output, res.output
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.glob("*.xmp")} == stamps


def test_scan_xmp_all_and_replace_style(tiny_home: Path, photos_dir: Path, tmp_path: Path) -> None:
    root = sample_folder(tmp_path, photos_dir)
    out = tmp_path / "out.jsonl"
    args = ["scan", str(root), "-o", str(out), "--xmp", "--xmp-all", "--xmp-style", "replace"]
    res = CliRunner().invoke(app, args)
    assert "XMP sidecars: 3 written" in res.output, res.output
    assert sorted(p.name for p in root.glob("*.xmp")) == [
        "es_Canon_40D.xmp",
        "gps_DSCN0010.xmp",
        "orient_landscape_3.xmp",
    ]


def test_scan_sidecar_failure_is_one_line_and_exit_1(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(photos_dir / "es_Canon_40D.jpg", root / "a.jpg")
    (root / "a.jpg.xmp").mkdir()  # the sidecar's name is taken
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(app, ["scan", str(root), "-o", str(out), "--xmp"])
    assert res.exit_code == 1, res.output
    assert f"{root / 'a.jpg.xmp'}: sidecar name is taken" in res.output
    assert "1 failed" in res.output
    assert _rows(out)["a.jpg"]["lat"]  # the row was written all the same


def test_xmp_options_need_xmp(tiny_home: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["scan", str(tmp_path), "--xmp-all"])
    assert res.exit_code == 2
    assert "go with --xmp" in res.output


# --- locate --xmp, and sidecars from a reviewed scan (geoguess xmp RESULTS) ---------


def test_locate_xmp_writes_what_scan_xmp_writes(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    root = sample_folder(tmp_path, photos_dir)
    photo, with_gps = root / "es_Canon_40D.jpg", root / "gps_DSCN0010.jpg"
    res = CliRunner().invoke(app, ["locate", str(photo), str(with_gps), "--xmp"])
    assert res.exit_code == 0, res.output
    assert "XMP sidecars: 1 written, 1 not wanted" in res.output
    assert sorted(p.name for p in root.glob("*.xmp")) == ["es_Canon_40D.jpg.xmp"]
    by_locate = (root / "es_Canon_40D.jpg.xmp").read_bytes()
    (root / "es_Canon_40D.jpg.xmp").unlink()
    out = tmp_path / "out.csv"
    CliRunner().invoke(app, ["scan", str(root), "-o", str(out), "--xmp"])
    assert (root / "es_Canon_40D.jpg.xmp").read_bytes() == by_locate
    res = CliRunner().invoke(app, ["locate", "-", "--xmp"], input=photo.read_bytes())
    assert res.exit_code == 2
    assert "stdin has none" in res.output
    res = CliRunner().invoke(app, ["locate", str(photo), "--xmp-all"])
    assert (res.exit_code, "go with --xmp" in res.output) == (2, True)


def test_xmp_from_a_scan_equals_scan_xmp_and_a_review_wins(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    root = sample_folder(tmp_path, photos_dir)
    originals = {p.name: sha256(p) for p in root.iterdir()}
    out = tmp_path / "out.csv"
    CliRunner().invoke(app, ["scan", str(root), "-o", str(out), "--xmp"])
    made = {p.name: p.read_bytes() for p in root.glob("*.xmp")}
    assert len(made) == 2
    for p in root.glob("*.xmp"):
        p.unlink()

    # Unreviewed, the results file gives the sidecars the scan gave, byte for byte.
    res = CliRunner().invoke(app, ["xmp", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "dry run, nothing written): 2 to write" in res.output
    assert not list(root.glob("*.xmp"))
    res = CliRunner().invoke(app, ["xmp", str(out)])
    assert res.exit_code == 0, res.output
    assert "XMP sidecars: 2 written, 2 not wanted" in res.output  # EXIF GPS, broken photo
    assert {p.name: p.read_bytes() for p in root.glob("*.xmp")} == made

    # A person moves one guess: the sidecar takes the new point, marked as reviewed,
    # replacing geoguess's own estimate; the other sidecar is unchanged.
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    for row in rows:
        if row["path"].endswith("es_Canon_40D.jpg"):
            row["lat"], row["lon"] = "-33.856784", "151.215297"
    reviewed = tmp_path / "reviewed.csv"
    write_csv_rows(reviewed, rows)
    res = CliRunner().invoke(app, ["xmp", str(reviewed)])
    assert res.exit_code == 0, res.output
    assert "1 merged into existing ones, 1 unchanged, 2 not wanted" in res.output
    assert res.output.rstrip().endswith("; 1 holds a position a person set")
    tags = exiftool(root / "es_Canon_40D.jpg.xmp")
    assert abs(tags["XMP-exif:GPSLatitude"] - -33.856784) < 1e-5
    assert abs(tags["XMP-exif:GPSLongitude"] - 151.215297) < 1e-5
    assert tags["XMP-geoguess:Reviewed"] is True or tags["XMP-geoguess:Reviewed"] == "True"
    assert "reviewed by a person" in tags["XMP-exif:GPSProcessingMethod"]
    assert "XMP-geoguess:Probability" not in tags  # it described the model's guess
    assert "XMP-geoguess:SpreadP50Km" not in tags
    assert tags["XMP-geoguess:Model"].startswith("tiny/")
    assert (root / "orient_landscape_3.jpg.xmp").read_bytes() == made["orient_landscape_3.jpg.xmp"]
    # Again: nothing changes; and the unreviewed results no longer replace the review.
    res = CliRunner().invoke(app, ["xmp", str(reviewed)])
    assert "2 unchanged" in res.output and "a person set" not in res.output, res.output
    res = CliRunner().invoke(app, ["xmp", str(out)])
    assert "1 kept" in res.output, res.output
    assert abs(exiftool(root / "es_Canon_40D.jpg.xmp")["XMP-exif:GPSLatitude"] + 33.856784) < 1e-5
    assert {p.name: sha256(p) for p in root.iterdir() if p.suffix != ".xmp"} == originals


def test_xmp_bad_rows_are_one_line_each_and_the_rest_go_on(
    tiny_home: Path, photos_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = sample_folder(tmp_path, photos_dir)
    (root / "copy.jpg").write_bytes((root / "es_Canon_40D.jpg").read_bytes())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.csv"
    CliRunner().invoke(app, ["scan", "photos", "-o", str(out)])
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open(newline="", encoding="utf-8"))}
    assert rows["copy.jpg"]["path"] == str(Path("photos") / "copy.jpg")  # relative, as given
    rows["es_Canon_40D.jpg"]["lat"] = "48.8x"
    rows["orient_landscape_3.jpg"]["lon"] = "200"
    (root / "copy.jpg").unlink()  # a row whose photo is gone
    edited = tmp_path / "edited.csv"
    write_csv_rows(edited, list(rows.values()))
    res = CliRunner().invoke(app, ["xmp", str(edited), "--all"])
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, res.output
    assert any("es_Canon_40D.jpg: reviewed lat '48.8x' is not a number" in e for e in errors)
    assert any("orient_landscape_3.jpg: reviewed lon 200.0 is not a number" in e for e in errors)
    assert any("copy.jpg: no such photo here" in e for e in errors)
    # The photo with EXIF GPS (asked for with --all) still got its sidecar.
    assert sorted(p.name for p in root.glob("*.xmp")) == ["gps_DSCN0010.jpg.xmp"]
    assert "1 written" in res.output and "3 failed" in res.output


def test_xmp_from_moved_geojson_points_and_reviewed_json_lines(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    root = sample_folder(tmp_path, photos_dir)
    geo = tmp_path / "out.geojson"
    CliRunner().invoke(app, ["scan", str(root), "-o", str(geo)])
    data = json.loads(geo.read_text(encoding="utf-8"))
    for feature in data["features"]:
        if feature["properties"]["file"].endswith("es_Canon_40D.jpg"):
            feature["geometry"]["coordinates"] = [-3.70379, 40.416775]  # lon, lat
    geo.write_text(json.dumps(data), encoding="utf-8")
    res = CliRunner().invoke(app, ["xmp", str(geo), "--style", "replace"])
    assert res.exit_code == 0, res.output
    assert "2 written" in res.output
    tags = exiftool(root / "es_Canon_40D.xmp")
    assert abs(tags["XMP-exif:GPSLatitude"] - 40.416775) < 1e-5
    assert abs(tags["XMP-exif:GPSLongitude"] - -3.70379) < 1e-5
    assert "XMP-geoguess:Reviewed" in tags
    assert "XMP-geoguess:Reviewed" not in exiftool(root / "orient_landscape_3.xmp")

    lines = tmp_path / "out.jsonl"
    CliRunner().invoke(app, ["scan", str(root), "-o", str(lines)])
    records = [json.loads(line) for line in lines.read_text(encoding="utf-8").splitlines()]
    for record in records:
        if record["file"].endswith("orient_landscape_3.jpg"):
            record["reviewed"] = {"lat": 35.6762, "lon": 139.6503}
    lines.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    res = CliRunner().invoke(app, ["xmp", str(lines)])
    assert res.exit_code == 0, res.output
    tags = exiftool(root / "orient_landscape_3.jpg.xmp")
    assert (round(tags["XMP-exif:GPSLatitude"], 5), round(tags["XMP-exif:GPSLongitude"], 5)) == (
        35.6762,
        139.6503,
    )
    assert "XMP-geoguess:Reviewed" in tags


def test_a_review_replaces_only_our_own_estimate(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    write_sidecar(photo, 10.0, 20.0)
    review = {"Reviewed": "True"}
    assert write_sidecar(photo, 11.0, 21.0, properties=review).action == "merged"
    # An earlier review is not replaced by a plain estimate, nor by another review.
    assert write_sidecar(photo, 12.0, 22.0).action == "kept"
    assert write_sidecar(photo, 12.0, 22.0, properties=review).action == "kept"
    assert abs(exiftool(sidecar_path(photo))["XMP-exif:GPSLatitude"] - 11.0) < 1e-5
    # GPS someone else set stays, review or not.
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "photo.jpg"
    other.write_bytes(b"x")
    _tagged_sidecar(other.parent, "-XMP-exif:GPSLatitude=51.5", "-XMP-exif:GPSLongitude=-0.12")
    assert write_sidecar(other, 11.0, 21.0, properties=review).action == "kept"
    assert write_sidecar(other, 11.0, 21.0, properties=review, overwrite=True).action == "merged"


def test_which_position_a_record_gives_its_sidecar() -> None:
    from geoguess.xmp import record_position, record_properties

    base = {
        "file": "a.jpg",
        "predictions": [{"lat": 48.8566, "lon": 2.3522, "probability": 0.2, "place": None}],
        "spread_km": {"p50": 120.04},
        "confidence": "region",
        "model": {"name": "m", "precision": "int8"},
    }
    assert record_position(base) == (48.8566, 2.3522, "estimate")
    assert record_properties(base) == {
        "Probability": "0.2",
        "SpreadP50Km": "120.0",
        "Confidence": "region",
        "Model": "m/int8",
    }
    llm = {"model": "gpt-4o", "fallback": False, "best": {"lat": 45.764, "lon": 4.8357}}
    refined = {**base, "llm": llm}
    assert record_position(refined) == (45.764, 4.8357, "refined")
    assert record_properties(refined) == {"RefinedBy": "gpt-4o", "Model": "m/int8"}
    # A fallback, or an answer at GeoCLIP's own best guess, leaves the estimate.
    assert record_position({**base, "llm": {**llm, "fallback": True}})[2] == "estimate"
    same = {**llm, "best": {"lat": 48.8566, "lon": 2.3522}}
    assert record_position({**base, "llm": same})[2] == "estimate"
    # A person's review wins over both.
    reviewed = {**refined, "reviewed": {"lat": 43.2965, "lon": 5.3698}}
    assert record_position(reviewed) == (43.2965, 5.3698, "reviewed")
    assert record_properties(reviewed) == {"Reviewed": "True", "Model": "m/int8"}
