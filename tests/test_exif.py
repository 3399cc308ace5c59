"""EXIF metadata: GPS validation, capture time, camera and orientation."""

from __future__ import annotations

import io
import json
import math
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational
from shared_data import manifest_params, photo

import geoguess.exif as exif_module
from geoguess.exif import GPS, PhotoMetadata, read_metadata, validate_gps

GPS_IFD = 0x8825
LAT_REF, LAT, LON_REF, LON, ALT_REF, ALT = 1, 2, 3, 4, 5, 6


@pytest.fixture(params=["exifread", "pillow"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through exifread, then again with exifread seeing nothing.

    The second pass forces the Pillow fallback, so both readers are held to the same
    expectations through the one shared validation.
    """
    if request.param == "pillow":
        monkeypatch.setattr(exif_module.exifread, "process_file", lambda *a, **k: {})
    return request.param


def jpeg(gps: dict[int, Any] | None = None, tags: dict[int, Any] | None = None) -> bytes:
    """A tiny JPEG with the given base EXIF tags and GPS IFD."""
    exif = Image.Exif()
    for tag, value in (tags or {}).items():
        exif[tag] = value
    if gps is not None:
        exif[GPS_IFD] = gps
    buffer = io.BytesIO()
    params = {"exif": exif.tobytes()} if len(exif) else {}
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", **params)
    return buffer.getvalue()


# Real photos --------------------------------------------------------------------------


@pytest.mark.parametrize("row", manifest_params())
def test_manifest_gps_and_orientation(row: dict[str, str], reader: str) -> None:
    meta = read_metadata(photo(row["file"]))
    expected = row["has_gps"]
    if expected == "yes":
        assert meta.gps_status == "ok", meta.gps_problem
        assert meta.gps is not None
        assert meta.gps.lat == pytest.approx(float(row["lat"]), abs=1e-5)
        assert meta.gps.lon == pytest.approx(float(row["lon"]), abs=1e-5)
        assert meta.gps_problem is None
    elif expected == "malformed":
        assert meta.gps_status == "invalid"
        assert meta.gps is None
    elif expected == "zero":
        assert meta.gps_status == "placeholder"
        assert meta.gps is None
        assert meta.gps_problem == "(0, 0) placeholder"
    else:
        assert expected == "no"
        assert meta.gps_status == "missing"
        assert meta.gps is None
    if row["file"] == "pillow_empty_gps_ifd.jpg":
        assert meta.gps_problem == "GPS block is empty"
    if row["orientation"]:
        assert meta.orientation == int(row["orientation"])
    else:
        # Blank in the manifest: no rotation recorded. es_no_exif.jpg does carry a real
        # (Photoshop) EXIF segment with Orientation=1 that exifread misses but Pillow finds.
        assert meta.orientation in (None, 1)


def test_real_details() -> None:
    canon = read_metadata(photo("es_Canon_40D.jpg"))
    assert canon.camera == "Canon EOS 40D"
    assert canon.taken_at == "2008-05-30T15:56:01"
    assert canon.gps_problem == "GPS block has no coordinates"  # only GPSVersionID

    nikon = read_metadata(photo("mei_Nikon_D5000.jpg"))
    assert nikon.camera == "NIKON D5000"
    assert nikon.gps_problem == "GPS latitude seconds are 0/0"

    samsung = read_metadata(photo("mei_Samsung_GT-I9000.jpg"))
    assert samsung.camera == "SAMSUNG GT-I9000"  # make padded with spaces in the file

    iphone = read_metadata(photo("mei_Apple_iPhone_5.jpg"))
    assert iphone.camera == "Apple iPhone 5"
    assert iphone.gps is not None and iphone.gps.altitude_m == pytest.approx(3.98, abs=0.01)

    heic = read_metadata(photo("es_IMG_5195.HEIC"))
    assert heic.taken_at == "2021-04-11T15:47:53-05:00"
    assert heic.camera == "Apple iPhone 11 Pro Max"


def test_truncated_photo_metadata_does_not_raise() -> None:
    meta = read_metadata(photo("pillow_truncated_jpeg.jpg"))
    assert meta.gps_status == "missing"
    assert meta.gps_problem == "no EXIF metadata"


def test_bytes_source_matches_path() -> None:
    path = photo("mei_Issue_555_1.tif")
    assert read_metadata(path.read_bytes()) == read_metadata(path)


def test_to_dict_is_json() -> None:
    meta = read_metadata(photo("gps_DSCN0010.jpg"))
    data = json.loads(json.dumps(meta.to_dict()))
    assert data["gps_status"] == "ok"
    assert data["gps"]["lat"] == pytest.approx(43.4674483, abs=1e-5)
    assert set(data) == {"gps", "gps_status", "gps_problem", "taken_at", "camera", "orientation"}
    assert PhotoMetadata().to_dict()["gps"] is None


# Synthetic GPS ---------------------------------------------------------------------------


def test_south_west(reader: str) -> None:
    data = jpeg({LAT_REF: "S", LAT: (33.0, 51.0, 54.0), LON_REF: "W", LON: (70.0, 39.0, 0.0)})
    meta = read_metadata(data)
    assert meta.gps_status == "ok"
    assert meta.gps is not None
    assert (meta.gps.lat, meta.gps.lon) == (pytest.approx(-33.865), pytest.approx(-70.65))
    assert meta.gps.altitude_m is None


def test_altitude_below_sea_level(reader: str) -> None:
    gps = {LAT_REF: "N", LAT: (31.0, 30.0, 0.0), LON_REF: "E", LON: (35.0, 28.0, 0.0)}
    gps |= {ALT_REF: b"\x01", ALT: 430.5}
    meta = read_metadata(jpeg(gps))
    assert meta.gps is not None
    assert meta.gps.altitude_m == pytest.approx(-430.5)


@pytest.mark.parametrize(
    ("gps", "status", "problem"),
    [
        (
            {LAT_REF: "N", LAT: (95.0, 12.0, 0.0), LON_REF: "E", LON: (10.0, 0.0, 0.0)},
            "invalid",
            "latitude 95.2 out of range",
        ),
        (
            {LAT_REF: "N", LAT: (10.0, 0.0, 0.0), LON_REF: "W", LON: (190.0, 0.0, 0.0)},
            "invalid",
            "longitude -190 out of range",
        ),
        (
            {LAT_REF: "N", LAT: (10.0, 75.0, 0.0), LON_REF: "E", LON: (10.0, 0.0, 0.0)},
            "invalid",
            "GPS latitude minutes are 75, over 60",
        ),
        (
            {LAT_REF: "N", LAT: (48.5, 2.0), LON_REF: "E", LON: (10.0, 0.0, 0.0)},
            "invalid",
            "GPS latitude has 2 values, expected 3",
        ),
        (
            {
                LAT_REF: "N",
                LAT: (IFDRational(0, 0), IFDRational(0, 0), IFDRational(0, 0)),
                LON_REF: "E",
                LON: (10.0, 0.0, 0.0),
            },
            "invalid",
            "GPS latitude degrees are 0/0",
        ),
        (
            {LAT_REF: "N", LAT: (48.0, 52.0, 0.0), LON_REF: "E", LON: (IFDRational(2, 0),) * 3},
            "invalid",
            "GPS longitude degrees are 2/0",
        ),
        (
            {LAT: (48.0, 52.0, 0.0), LON_REF: "E", LON: (2.0, 17.0, 0.0)},
            "invalid",
            "GPS latitude reference (N/S) is missing",
        ),
        (
            {LAT_REF: "X", LAT: (48.0, 52.0, 0.0), LON_REF: "E", LON: (2.0, 17.0, 0.0)},
            "invalid",
            "GPS latitude reference is 'X', expected N or S",
        ),
        (
            {LAT_REF: "N", LAT: (48.0, 52.0, 0.0)},
            "invalid",
            "GPS longitude is missing",
        ),
        (
            {LAT_REF: "N", LAT: (0.0, 0.0, 0.0), LON_REF: "E", LON: (0.0, 0.0, 0.0)},
            "placeholder",
            "(0, 0) placeholder",
        ),
        (
            {0: b"\x02\x02\x00\x00", 18: "WGS-84"},
            "missing",
            "GPS block has no coordinates",
        ),
        ({}, "missing", "GPS block is empty"),
    ],
    ids=[
        "lat-range",
        "lon-range",
        "minutes-75",
        "two-values",
        "zero-over-zero",
        "divide-by-zero",
        "no-ref",
        "bad-ref",
        "lat-only",
        "null-island",
        "no-coordinates",
        "empty",
    ],
)
def test_gps_edge_cases(reader: str, gps: dict, status: str, problem: str) -> None:
    meta = read_metadata(jpeg(gps))
    assert (meta.gps_status, meta.gps_problem) == (status, problem)
    assert meta.gps is None


def test_no_exif_and_no_gps_block(reader: str) -> None:
    assert read_metadata(jpeg()).gps_problem == "no EXIF metadata"
    tagged = read_metadata(jpeg(tags={0x0110: "Pixel 7", 0x010F: "Google", 0x0112: 8}))
    assert (tagged.gps_status, tagged.gps_problem) == ("missing", "no GPS block")
    assert tagged.camera == "Google Pixel 7"
    assert tagged.orientation == 8


# validate_gps directly ---------------------------------------------------------------------


def test_validate_gps_accepts_fractions_and_bytes_refs() -> None:
    reading = validate_gps(
        [Fraction(43), Fraction(28), Fraction(1407, 500)],
        b"N\x00",
        [11, 53, Fraction(645599999, 100000000)],
        "e ",
        [Fraction(933, 10)],
        [0],
    )
    assert reading.status == "ok"
    assert reading.gps is not None
    assert reading.gps.lat == pytest.approx(43.4674483, abs=1e-6)
    assert reading.gps.lon == pytest.approx(11.8851267, abs=1e-6)
    assert reading.gps.altitude_m == pytest.approx(93.3)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -5.0])
def test_validate_gps_rejects_non_finite_and_negative(bad: float) -> None:
    reading = validate_gps([48.0, 52.0, bad], "N", [2.0, 17.0, 0.0], "E")
    assert reading.status == "invalid"
    assert reading.gps is None
    assert reading.problem is not None and reading.problem.startswith("GPS latitude seconds")


def test_validate_gps_tolerates_rounded_sixty_seconds() -> None:
    reading = validate_gps([10, 59, 60], "N", [20, 0, 0], "E")
    assert reading.status == "ok"
    assert reading.gps is not None and reading.gps.lat == pytest.approx(11.0)
    assert validate_gps([10, 59, 60.5], "N", [20, 0, 0], "E").status == "invalid"


def test_validate_gps_bad_altitude_keeps_position() -> None:
    reading = validate_gps([1, 0, 0], "S", [2, 0, 0], "W", [IFDRational(5, 0)], b"\x00")
    assert reading.status == "ok"
    assert reading.gps == GPS(-1.0, -2.0, None)


def test_validate_gps_rejects_text_values() -> None:
    reading = validate_gps("48.8", "N", [2, 0, 0], "E")
    assert reading.status == "invalid"


# Dates and camera --------------------------------------------------------------------------


def test_dates_prefer_original_and_reject_blank() -> None:
    exif = Image.Exif()
    exif[0x0132] = "2020:01:02 03:04:05"
    exif.get_ifd(0x8769)[0x9003] = "0000:00:00 00:00:00"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=exif.tobytes())
    # DateTimeOriginal is a camera without a clock: fall back to DateTime.
    assert read_metadata(buffer.getvalue()).taken_at == "2020-01-02T03:04:05"

    exif.get_ifd(0x8769)[0x9003] = "2019:12:31 23:59:58"
    exif.get_ifd(0x8769)[0x9011] = "+05:30"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=exif.tobytes())
    assert read_metadata(buffer.getvalue()).taken_at == "2019-12-31T23:59:58+05:30"


@pytest.mark.parametrize(
    ("make", "model", "camera"),
    [
        ("Canon", "Canon EOS 40D", "Canon EOS 40D"),
        ("NIKON CORPORATION", "NIKON D5000", "NIKON D5000"),
        ("Apple", "iPhone 5", "Apple iPhone 5"),
        ("HP", "HPX 100", "HP HPX 100"),
        ("  SAMSUNG  ", None, "SAMSUNG"),
    ],
)
def test_camera_name(make: str, model: str | None, camera: str) -> None:
    tags = {0x010F: make} | ({0x0110: model} if model else {})
    assert read_metadata(jpeg(tags=tags)).camera == camera


# Never raises --------------------------------------------------------------------------------


def test_corrupt_exif_never_raises() -> None:
    good = jpeg({LAT_REF: "N", LAT: (1.0, 0.0, 0.0), LON_REF: "E", LON: (1.0, 0.0, 0.0)})
    start = good.index(b"Exif\x00\x00")
    # Keep the APP1 length and the TIFF header, scramble the IFDs after it.
    for junk in (bytes(range(200)), b"\xff" * 40):
        corrupt = good[: start + 14] + junk + good[start + 14 + len(junk) :]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            meta = read_metadata(corrupt)
        assert [str(w.message) for w in caught] == []  # nothing printed per photo
        assert meta.gps_status == "missing"
        assert meta.gps is None


@pytest.mark.parametrize(
    "source", [b"", b"not an image at all", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*"]
)
def test_garbage_never_raises(source: bytes) -> None:
    meta = read_metadata(source)
    assert meta.gps_status == "missing"
    assert meta.gps is None
    assert meta.gps_problem


def test_missing_file_never_raises(tmp_path: Path) -> None:
    meta = read_metadata(tmp_path / "gone.jpg")
    assert meta.gps_status == "missing"
    assert meta.gps_problem == "EXIF could not be read (no such file)"


def test_reader_crash_falls_back_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> dict:
        raise ValueError("exifread bug")

    monkeypatch.setattr(exif_module.exifread, "process_file", explode)
    meta = read_metadata(
        jpeg({LAT_REF: "S", LAT: (1.0, 30.0, 0.0), LON_REF: "E", LON: (2.0, 0, 0)})
    )
    assert meta.gps_status == "ok"
    assert meta.gps is not None and meta.gps.lat == pytest.approx(-1.5)
