"""`geoguess eval`: reading benchmark CSVs, scoring, and the command's mechanics.

The tiny model set has random weights, so accuracy itself means nothing here; the
tests check that the reported metrics follow from the per-image predictions.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest
from geographiclib.geodesic import Geodesic
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.errors import UsageError
from geoguess.evaluate import (
    THRESHOLDS_KM,
    EvalPrediction,
    EvalSample,
    accuracy_at,
    check_latlon,
    read_eval_csv,
    score,
)


def _gps_rows(photos_dir: Path) -> list[dict[str, str]]:
    with open(photos_dir / "MANIFEST.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["has_gps"] == "yes"]


def _write_csv(path: Path, rows: list[tuple[str, str, str]], header=("IMG_ID", "LAT", "LON")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*header, "AUTHOR"])
        for r in rows:
            w.writerow([*r, "someone"])
    return path


@pytest.fixture
def bench(tmp_path: Path, photos_dir: Path) -> Path:
    """IM2GPS3K-like CSV: the photos with true GPS, one missing, one undecodable."""
    rows = [(r["file"], r["lat"], r["lon"]) for r in _gps_rows(photos_dir)]
    rows.insert(2, ("not_downloaded.jpg", "10.0", "20.0"))
    rows.append(("pillow_truncated_jpeg.jpg", "-33.86", "151.21"))
    return _write_csv(tmp_path / "bench.csv", rows)


def _eval(*args: str) -> object:
    return CliRunner().invoke(app, ["eval", *args])


def _geodesic_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return Geodesic.WGS84.Inverse(lat1, lon1, lat2, lon2)["s12"] / 1000.0


# --- scoring ---------------------------------------------------------------------------


def test_accuracy_counts_le_by_default_and_lt_on_request() -> None:
    errors = [0.0, 1.0, 25.0, 199.9, 750.0, 2500.0, 2500.0001]
    assert accuracy_at(errors) == {1.0: 2, 25.0: 3, 200.0: 4, 750.0: 5, 2500.0: 6}
    assert accuracy_at(errors, strict_less=True) == {
        1.0: 1,
        25.0: 2,
        200.0: 4,
        750.0: 4,
        2500.0: 5,
    }


def _pred(error_km: float | None, status: str = "ok") -> EvalPrediction:
    sample = EvalSample("x.jpg", 0.0, 0.0, None if status == "missing" else Path("x.jpg"))
    if status != "ok":
        return EvalPrediction(sample, status, error="why")  # type: ignore[arg-type]
    return EvalPrediction(sample, "ok", 0.0, 0.0, 0.5, error_km)


def test_score_with_a_prediction_exactly_at_a_threshold() -> None:
    preds = [_pred(25.0), _pred(10.0), _pred(3000.0), _pred(None, "missing"), _pred(None, "failed")]
    le = score(preds, n_bad_rows=2)
    lt = score(preds, strict_less=True)
    assert le.n_evaluated == 3 and le.n_missing == 1 and le.n_failed == 1 and le.n_bad_rows == 2
    assert le.correct[25.0] == 2 and lt.correct[25.0] == 1  # the 25.0 km one
    assert le.accuracy[25.0] == pytest.approx(2 / 3) and lt.accuracy[25.0] == pytest.approx(1 / 3)
    assert le.median_km == 25.0 and le.mean_km == pytest.approx(3035.0 / 3)
    d = le.to_dict()
    assert d["comparison"] == "<=" and lt.to_dict()["comparison"] == "<"
    assert d["accuracy"]["25"] == pytest.approx(2 / 3) and d["thresholds_km"] == list(THRESHOLDS_KM)
    json.dumps(d, allow_nan=False)  # valid strict JSON
    empty = score([_pred(None, "missing")])
    assert empty.n_evaluated == 0 and empty.median_km is None and empty.accuracy[1.0] is None
    json.dumps(empty.to_dict(), allow_nan=False)


# --- reading benchmark files -----------------------------------------------------------


def test_read_eval_csv_columns_limit_bad_rows_and_ids_without_suffix(
    tmp_path: Path, photos_dir: Path
) -> None:
    path = _write_csv(
        tmp_path / "b.csv",
        [
            ("gps_DSCN0010", "43.4674483", "11.8851267"),  # no extension: found as .jpg
            ("mei_FujiFilm_FinePixS2Pro.jpg", "north", "2.297"),
            ("", "1", "2"),
            ("gone.jpg", "1", "2"),
            ("mei_Sony_DSC-HX5V_2.jpg", "51.778615", "8.3656381"),
        ],
        header=("file", "lat", "lng"),
    )
    s = read_eval_csv(path, photos_dir, id_column="file", lat_column="lat", lon_column="lng")
    assert [x.id for x in s.samples] == ["gps_DSCN0010", "gone.jpg", "mei_Sony_DSC-HX5V_2.jpg"]
    assert s.samples[0].path == photos_dir / "gps_DSCN0010.jpg"
    assert [x.id for x in s.missing] == ["gone.jpg"]
    assert len(s.bad_rows) == 2 and "line 3" in s.bad_rows[0] and "line 4" in s.bad_rows[1]
    assert s.swap_warning is None
    limited = read_eval_csv(
        path, photos_dir, id_column="file", lat_column="lat", lon_column="lng", limit=1
    )
    assert len(limited.samples) == 1
    with pytest.raises(UsageError, match=r"b\.csv: no column 'LAT'"):
        read_eval_csv(path, photos_dir, id_column="file")
    with pytest.raises(UsageError, match="nowhere: does not exist"):
        read_eval_csv(path, tmp_path / "nowhere")


def test_swap_check_on_any_csv(photos_dir: Path) -> None:
    # |lon| <= 90 everywhere, so the |lat| > 90 rule cannot fire: the town rule must.
    rows = [r for r in _gps_rows(photos_dir) if abs(float(r["lon"])) <= 90]
    lats = [float(r["lat"]) for r in rows] + [32.33]  # + IM2GPS3K's first row, Bermuda
    lons = [float(r["lon"]) for r in rows] + [-64.76]
    assert check_latlon(lats, lons) is None
    assert "look swapped" in check_latlon(lons, lats)
    assert "drop --swap-latlon" in check_latlon(lons, lats, swapped=True)
    # The Bermuda row alone, read with the old copies' swapped header.
    assert "look swapped" in check_latlon([-64.76], [32.33])
    assert check_latlon([32.33], [-64.76]) is None
    assert "beyond +-90" in check_latlon([120.0, 10.0], [45.0, 45.0])


# --- the command -----------------------------------------------------------------------


def test_eval_metrics_follow_from_the_predictions(
    tiny_home: Path, bench: Path, photos_dir: Path, tmp_path: Path
) -> None:
    preds_file = tmp_path / "preds.csv"
    result = _eval(
        str(bench), "--images", str(photos_dir), "--json", "--predictions", str(preds_file)
    )
    assert result.exit_code == 1, result.output  # one missing, one undecodable
    metrics = json.loads(result.stdout)
    n_gps = len(_gps_rows(photos_dir))
    assert metrics["n_evaluated"] == n_gps
    assert metrics["n_missing"] == 1 and metrics["n_failed"] == 1
    assert metrics["comparison"] == "<=" and metrics["distance"] == "WGS-84 geodesic"
    assert "not_downloaded.jpg: image not found" in result.stderr
    assert "pillow_truncated_jpeg.jpg: image file is truncated" in result.stderr

    with open(preds_file, newline="") as f:
        preds = list(csv.DictReader(f))
    with open(bench, newline="") as f:
        assert [p["id"] for p in preds] == [r["IMG_ID"] for r in csv.DictReader(f)]
    ok = [p for p in preds if p["status"] == "ok"]
    assert {p["status"] for p in preds if p not in ok} == {"missing", "failed"}
    errors = []
    for p in ok:
        d = _geodesic_km(
            float(p["true_lat"]), float(p["true_lon"]), float(p["pred_lat"]), float(p["pred_lon"])
        )
        assert float(p["error_km"]) == pytest.approx(d, abs=2e-3)
        errors.append(d)
    assert len(errors) == n_gps
    for t in THRESHOLDS_KM:
        within = sum(e <= t for e in errors)
        assert metrics["correct"][f"{t:g}"] == within
        assert metrics["accuracy"][f"{t:g}"] == pytest.approx(within / n_gps)
    assert metrics["median_km"] == pytest.approx(statistics.median(errors), abs=1e-3)
    assert metrics["mean_km"] == pytest.approx(statistics.fmean(errors), abs=1e-3)
    assert metrics["model"]["name"] == "tiny"


def test_eval_table_when_piped_and_swapped_columns(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    # The small photos are enough here (one with |lon| > 90, for the swap rule).
    big = {"mei_Issue_555_1.tif", "mei_Apple_iPhone_5.jpg", "es_IMG_5195.HEIC"}
    rows = [(r["file"], r["lat"], r["lon"]) for r in _gps_rows(photos_dir) if r["file"] not in big]
    assert any(abs(float(lon)) > 90 for _, _, lon in rows)
    straight = _write_csv(tmp_path / "straight.csv", rows)
    swapped = _write_csv(tmp_path / "swapped.csv", [(f, lon, lat) for f, lat, lon in rows])

    plain = _eval(str(straight), "--images", str(photos_dir), "-p", "fp32")
    assert plain.exit_code == 0, plain.output
    assert "look swapped" not in plain.stderr
    lines = plain.stdout.splitlines()
    assert "error is <= the threshold (GeoCLIP's convention)" in plain.stdout
    assert "threshold_km\tscale\taccuracy_pct\tcorrect" in lines
    assert any(line.startswith("2500\tcontinent\t") for line in lines)

    warned = _eval(str(swapped), "--images", str(photos_dir), "--json", "-p", "fp32")
    assert "look swapped" in warned.stderr and "--swap-latlon" in warned.stderr
    fixed = _eval(
        str(swapped), "--images", str(photos_dir), "--json", "--swap-latlon", "-p", "fp32"
    )
    assert fixed.exit_code == 0 and "look swapped" not in fixed.stderr
    straight_json = _eval(str(straight), "--images", str(photos_dir), "--json", "-p", "fp32")
    a, b = json.loads(fixed.stdout), json.loads(straight_json.stdout)
    assert {**a, "csv": ""} == {**b, "csv": ""}

    strict = _eval(str(straight), "--images", str(photos_dir), "--strict-less", "--json")
    assert json.loads(strict.stdout)["comparison"] == "<"


def test_eval_usage_errors(tiny_home: Path, bench: Path, photos_dir: Path, tmp_path: Path) -> None:
    no_dir = _eval(str(bench), "--images", str(tmp_path / "nowhere"))
    assert no_dir.exit_code == 2 and "nowhere: does not exist" in no_dir.stderr
    no_csv = _eval(str(tmp_path / "nope.csv"), "--images", str(photos_dir))
    assert no_csv.exit_code == 2 and "nope.csv: cannot read" in no_csv.stderr
    no_col = _eval(str(bench), "--images", str(photos_dir), "--lat-column", "latitude")
    assert no_col.exit_code == 2 and "no column 'latitude'" in no_col.stderr


def test_many_problems_are_listed_five_then_counted(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    """Seven bad rows, seven missing images, seven undecodable ones: each kind lists its
    first five lines (naming the file, and the CSV line for bad rows) and counts the
    other two in one line."""
    rows = [("gps_DSCN0010.jpg", "43.46", "11.88")]
    rows += [(f"bad{i}.jpg", "north", "11.88") for i in range(7)]
    rows += [(f"absent{i}.jpg", "10.0", "20.0") for i in range(7)]
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(photos_dir / "gps_DSCN0010.jpg", images)
    for i in range(7):
        (images / f"broken{i}.jpg").write_bytes(b"not a jpeg")
        rows.append((f"broken{i}.jpg", "1.0", "2.0"))
    res = _eval(str(_write_csv(tmp_path / "many.csv", rows)), "--images", str(images), "--json")
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    for kind, more in (
        ("'north' is not a number", "2 more bad rows"),
        ("absent", "2 more images not found"),
        ("broken", "2 more images could not be decoded"),
    ):
        assert sum(kind in line and "more" not in line for line in lines) == 5, lines
        assert sum(more in line for line in lines) == 1, lines
    assert json.loads(res.stdout)["n_missing"] == 7
