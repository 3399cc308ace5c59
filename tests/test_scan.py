"""`geoguess scan`: listing, the bounded pipeline, output files, resume, interruption.

The tiny model set has random backbone weights, so these tests check the mechanics
(rows, columns, errors, exit codes, resume, signals), never where a photo is.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.errors import UsageError
from geoguess.geo import haversine_km
from geoguess.locate import Prepared
from geoguess.scan import PREFETCH_BATCHES, embedded_batches, list_images, scan_folder
from geoguess.scan_output import CSV_COLUMNS, CsvWriter, JsonlWriter, csv_row, open_writer

REPO = Path(__file__).resolve().parents[1]

GOOD = ["gps_DSCN0010.jpg", "mei_FujiFilm_FinePixS2Pro.jpg", "mei_Issue_473_Java.webp"]
WITH_GPS = {"gps_DSCN0010.jpg", "mei_FujiFilm_FinePixS2Pro.jpg", "mei_Issue_473_Java.webp"}


@pytest.fixture
def folder(tmp_path: Path, photos_dir: Path) -> Path:
    """Good photos, one in a subfolder, plus three bad files and hidden ones."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for name in GOOD:
        shutil.copy(photos_dir / name, root / name)
    shutil.copy(photos_dir / "pillow_exif.png", root / "sub" / "deeper.PNG")
    shutil.copy(photos_dir / "pillow_truncated_jpeg.jpg", root / "truncated.jpg")
    (root / "text.jpg").write_text("this is not a photo\n")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image suffix: never listed\n")
    (root / ".hidden.jpg").write_bytes((photos_dir / GOOD[0]).read_bytes())
    (root / ".cache").mkdir()
    shutil.copy(photos_dir / GOOD[0], root / ".cache" / "thumb.jpg")
    return root


BAD = {"truncated.jpg", "text.jpg", "empty.png"}


def _run(*args: str) -> object:
    return CliRunner().invoke(app, ["scan", *args])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- listing -------------------------------------------------------------------------


def test_list_images_sorted_filtered_and_hidden_skipped(folder: Path) -> None:
    names = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert names == sorted(
        ["empty.png", "text.jpg", "truncated.jpg", *GOOD, "sub/deeper.PNG"],
        key=lambda n: Path(n).parts,
    )
    flat = [p.name for p in list_images(folder, recursive=False)]
    assert "deeper.PNG" not in flat and len(flat) == len(names) - 1
    # Case-insensitive on both sides.
    assert [p.name for p in list_images(folder, glob="*.PNG")] == ["empty.png", "deeper.PNG"]
    assert [p.name for p in list_images(folder, glob="gps_*")] == ["gps_DSCN0010.jpg"]


def test_list_images_survives_symlink_loops(folder: Path) -> None:
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "sub" / "self").symlink_to(folder / "sub", target_is_directory=True)
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    listed = list_images(folder)
    assert len(listed) == len(set(listed))
    names = [p.name for p in listed]
    assert names.count("gps_DSCN0010.jpg") == 1  # the loop does not list it again
    assert "dangling.jpg" in names  # listed, so that it gets an error row


def test_list_images_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope: does not exist"):
        list_images(tmp_path / "nope")


# --- the pipeline --------------------------------------------------------------------


class _FakeGeo:
    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return np.ones((len(pixels), 4), dtype=np.float32)


def test_pipeline_keeps_a_bounded_number_of_photos_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepared: list[str] = []
    lock = threading.Lock()

    def fake_prepare(geo: object, name: str) -> Prepared:
        with lock:
            prepared.append(name)
        return Prepared(name, np.zeros((3, 2, 2), dtype=np.float32), None)

    monkeypatch.setattr("geoguess.scan._prepare_safely", fake_prepare)
    batch = 4
    window = batch * (1 + PREFETCH_BATCHES)
    names = [f"img{i:04d}.jpg" for i in range(1000)]
    gen = embedded_batches(_FakeGeo(), names, batch_size=batch, workers=3)
    seen: list[str] = []
    for i, out in enumerate(gen, 1):
        time.sleep(0.001)  # let the decoders run ahead as far as they may
        seen += [p.name for p, _ in out]
        assert all(p.pixels is None and e is not None for p, e in out)
        with lock:
            assert len(prepared) <= i * batch + window
        if i == 20:
            break
    gen.close()
    assert seen == names[: 20 * batch]  # input order
    assert len(prepared) <= 20 * batch + window  # closing cancelled the rest


def test_scan_folder_stops_after_the_current_result(tiny_home: Path, folder: Path) -> None:
    from geoguess.geolocator import Geolocator

    geo = Geolocator.load()
    stop = threading.Event()
    got = []

    def on_result(result: object) -> None:
        got.append(result)
        stop.set()

    summary = scan_folder(geo, folder, batch_size=2, workers=2, on_result=on_result, stop=stop)
    assert len(got) == 1 and summary.processed == 1
    assert summary.interrupted and summary.remaining == summary.found - 1


def test_ctrl_c_in_a_scan_says_what_was_done(tiny_home: Path, folder: Path) -> None:
    from geoguess.geolocator import Geolocator
    from geoguess.scan import ScanInterrupted

    geo = Geolocator.load()
    got = []

    def on_result(result: object) -> None:
        got.append(result)
        if len(got) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:  # still a Ctrl-C for callers
        scan_folder(geo, folder, batch_size=2, on_result=on_result)
    assert isinstance(caught.value, ScanInterrupted)
    done = caught.value.summary
    assert done.interrupted and done.processed == 2 and done.elapsed_s > 0


def test_scan_folder_skips_done_and_matches_locate_many(tiny_home: Path, folder: Path) -> None:
    from geoguess.geolocator import Geolocator
    from geoguess.locate import locate_many

    geo = Geolocator.load(precision="fp32")  # int8 output depends on the batch's makeup
    files = list_images(folder)
    done = {str(files[0]), os.path.abspath(files[1])}  # either form counts as done
    got = []
    summary = scan_folder(geo, folder, skip=done, batch_size=3, on_result=got.append)
    assert summary.skipped == 2 and summary.found == len(files)
    assert [r.file for r in got] == [str(f) for f in files[2:]]
    assert summary.failed == sum(Path(r.file).name in BAD for r in got)
    assert summary.located + summary.failed == len(files) - 2
    expected = locate_many(geo, [str(f) for f in files[2:]], names=[str(f) for f in files[2:]])
    for a, b in zip(got, expected, strict=True):
        assert a.error == b.error
        if b.best is not None:
            assert a.best.prediction.index == b.best.prediction.index
            assert a.best.prediction.probability == pytest.approx(
                b.best.prediction.probability, rel=1e-5
            )


# --- the command -----------------------------------------------------------------------


def test_scan_csv_rows_errors_and_exit_code(tiny_home: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = _run(str(folder), "-o", str(out), "--top-k", "3")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # data goes to the file, messages to stderr
    rows = _rows(out)
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    assert [r["path"] for r in rows] == [str(p) for p in list_images(folder)]
    by_name = {Path(r["path"]).name: r for r in rows}
    for name in BAD:
        assert by_name[name]["error"], name
        assert by_name[name]["lat"] == "" and by_name[name]["top_k"] == ""
        assert f"{name}: {by_name[name]['error']}" in result.stderr
    for name in [*GOOD, "deeper.PNG"]:
        row = by_name[name]
        assert row["error"] == ""
        lat, lon, prob = float(row["lat"]), float(row["lon"]), float(row["probability"])
        assert -90 <= lat <= 90 and -180 <= lon <= 180 and 0 < prob <= 1
        top = [tuple(map(float, c.split(","))) for c in row["top_k"].split(";")]
        assert len(top) == 3
        assert top[0][:2] == pytest.approx((lat, lon), abs=1e-5)
        assert [c[2] for c in top] == sorted((c[2] for c in top), reverse=True)
        assert row["country_code"] and row["place"]
        assert float(row["spread_p50_km"]) <= float(row["spread_p90_km"])
        assert row["model"].startswith("tiny/")
        if name in WITH_GPS:
            assert row["exif_gps_status"] == "ok"
            exif = float(row["exif_lat"]), float(row["exif_lon"])
            assert float(row["error_km"]) == pytest.approx(haversine_km(lat, lon, *exif), abs=0.2)
        else:
            assert row["error_km"] == ""
    assert "4 located, 3 failed" in result.stderr


def test_scan_resume_does_no_work_the_second_time(
    tiny_home: Path, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    assert _run(str(folder), "-o", str(out)).exit_code == 1
    first = out.read_bytes()
    again = _run(str(folder), "-o", str(out))
    # Nothing failed in this run, but three photos of the output still have no answer.
    assert again.exit_code == 1, again.output
    assert "0 located, 0 failed, skipped 7 already done, 3 failed in an earlier run" in (
        again.stderr
    )
    assert out.read_bytes() == first
    # A new photo is the only work for a third run.
    shutil.copy(folder / GOOD[0], folder / "sub" / "new.jpg")
    third = _run(str(folder), "-o", str(out))
    assert third.exit_code == 1
    assert "1 located, 0 failed, skipped 7 already done" in third.stderr
    assert out.read_bytes().startswith(first)
    assert [Path(r["path"]).name for r in _rows(out)][-1] == "new.jpg"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_scan_torn_last_row_is_dropped_and_redone(
    tiny_home: Path, folder: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    _run(str(folder), "-o", str(out))
    complete = out.read_bytes()
    lines = complete.splitlines(keepends=True)
    # As if killed in the middle of writing the last row.
    torn = b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
    out.write_bytes(torn)
    result = _run(str(folder), "-o", str(out))
    assert "dropped an incomplete last row" in result.stderr
    assert "1 located" in result.stderr or "1 failed" in result.stderr
    text = out.read_text()
    assert text.endswith("\n")
    if suffix == ".csv":
        rows = _rows(out)
        assert all(None not in r and all(v is not None for v in r.values()) for r in rows)
        paths = [r["path"] for r in rows]
    else:
        paths = [json.loads(line)["file"] for line in text.splitlines()]
    assert sorted(paths) == sorted(str(p) for p in list_images(folder))
    assert len(paths) == len(set(paths))


def test_scan_jsonl_records_match_locate_json(
    tiny_home: Path, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    # fp32: the int8 encoder quantises each batch as a whole, so its output for one
    # photo shifts slightly with the other photos in the batch.
    result = _run(str(folder), "-o", str(out), "--glob", "*.JPG", "--no-recursive", "-p", "fp32")
    assert result.exit_code == 1  # text.jpg and truncated.jpg are bad
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in records] == sorted(
        ["gps_DSCN0010.jpg", "mei_FujiFilm_FinePixS2Pro.jpg", "text.jpg", "truncated.jpg"]
    )
    photo = folder / "gps_DSCN0010.jpg"
    located = CliRunner().invoke(app, ["--json", "-p", "fp32", str(photo)])
    reference = json.loads(located.stdout)
    record = next(r for r in records if r["file"] == str(photo))
    assert set(record) == set(reference)
    # The scan searches a batch at once; float32 sums in another order differ by ulps.
    for got, want in zip(record["predictions"], reference["predictions"], strict=True):
        assert got["probability"] == pytest.approx(want["probability"], rel=1e-5)
        assert {**got, "probability": 0} == {**want, "probability": 0}
    assert record["model"]["name"] == "tiny"
    assert next(r for r in records if r["file"].endswith("text.jpg"))["error"]


def test_scan_to_stdout_has_only_data(tiny_home: Path, folder: Path) -> None:
    result = _run(str(folder), "--format", "csv", "-q")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 7 and list(rows[0]) == list(CSV_COLUMNS)
    assert "4 located, 3 failed" in result.stderr
    jsonl = _run(str(folder), "--format", "jsonl", "-o", "-")
    assert len([json.loads(line) for line in jsonl.stdout.splitlines()]) == 7


def test_scan_usage_errors_exit_2_and_name_the_path(
    tiny_home: Path, folder: Path, tmp_path: Path
) -> None:
    missing = _run(str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "nowhere: does not exist" in missing.stderr
    bad_out = tmp_path / "no-such-dir" / "out.csv"
    unwritable = _run(str(folder), "-o", str(bad_out))
    assert unwritable.exit_code == 2 and str(bad_out) in unwritable.stderr
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    refused = _run(str(folder), "-o", str(foreign))
    assert refused.exit_code == 2 and "no 'path' column" in refused.stderr
    assert foreign.read_text() == "a,b\n1,2\n"  # untouched
    fmt = _run(str(folder), "--format", "xml")
    assert fmt.exit_code == 2 and "unknown output format" in fmt.stderr


def test_writers_refuse_a_second_writer_on_the_same_file(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with CsvWriter(out), pytest.raises(UsageError, match="another geoguess scan"):
        CsvWriter(out)
    with open_writer(tmp_path / "x.ndjson") as w:
        assert isinstance(w, JsonlWriter)


def test_csv_marks_random_weight_models(tiny_home: Path, photos_dir: Path) -> None:
    from geoguess.geolocator import Geolocator
    from geoguess.locate import locate

    result = locate(Geolocator.load(), photos_dir / GOOD[0])
    real = csv_row(result, model={"name": "m", "precision": "fp16", "random_weights": False})
    fake = csv_row(result, model={"name": "m", "precision": "fp16", "random_weights": True})
    assert real["model"] == "m/fp16"
    assert fake["model"] == "m/fp16 (random weights: not a geolocation)"


def test_csv_writer_drops_a_torn_quoted_row(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    header = ",".join(CSV_COLUMNS) + "\n"
    good = "a.jpg" + "," * (len(CSV_COLUMNS) - 1) + "\n"
    # A torn row that ends inside a quoted field spanning a newline.
    out.write_text(header + good + '"b\nstill b,1,2\n')
    w = CsvWriter(out)
    w.close()
    assert w.done == {"a.jpg"} and w.dropped_partial == len('"b\nstill b,1,2\n')
    assert out.read_text() == header + good


# --- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_leaves_a_valid_file(
    tiny_home: Path, tmp_path: Path, photos_dir: Path, sig: int, code: int
) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(1500):  # far more than can be done before the signal
        (root / f"{i:04d}.jpg").symlink_to(photos_dir / "pillow_empty_gps_ifd.jpg")
    out = tmp_path / "out.csv"
    env = {**os.environ, "GEOGUESS_HOME": str(tiny_home), "GEOGUESS_MODEL": "tiny"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "geoguess", "scan", str(root), "-o", str(out), "-b", "2", "-q"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err.decode()
    assert "interrupted" in err.decode()
    data = out.read_bytes()
    assert data.endswith(b"\n")
    rows = _rows(out)
    assert 3 <= len(rows) < 1500
    assert all(len(r) == len(CSV_COLUMNS) and None not in r.values() for r in rows)
    assert [r["path"] for r in rows] == [str(root / f"{i:04d}.jpg") for i in range(len(rows))]


# --- decoding policy --------------------------------------------------------------------


def test_large_jpegs_decode_at_reduced_scale_unless_exact(tiny_home: Path, photos_dir: Path):
    from geoguess.geolocator import Geolocator
    from geoguess.locate import locate, prepare

    fast = Geolocator.load("tiny", precision="fp32", device="cpu")
    exact = Geolocator.load("tiny", precision="fp32", device="cpu", exact_decode=True)
    # Short side under 2 x 2 x 224 px: no DCT reduction fits, both decode in full.
    small = photos_dir / "gps_DSCN0010.jpg"
    np.testing.assert_array_equal(prepare(fast, small).pixels, prepare(exact, small).pixels)
    # 3264 x 2448: decoded at 1/4 scale (short side 612 >= 448), close to the full decode.
    large = photos_dir / "mei_Apple_iPhone_5.jpg"
    a, b = prepare(fast, large).pixels, prepare(exact, large).pixels
    diff = np.abs(a - b)
    assert 0 < diff.mean() < 0.01  # normalised units: ~0.3 grey levels
    assert diff.max() < 0.2
    # And the answer is the same photo's answer.
    got, want = locate(fast, large, top_k=5), locate(exact, large, top_k=5)
    assert [c.prediction.index for c in got.candidates] == [
        c.prediction.index for c in want.candidates
    ]


# --- resume: failures retried, settings kept (issue 12, problem 13) ----------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_retry_failed_redoes_only_the_failed_rows(
    tiny_home: Path, folder: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    assert _run(str(folder), "-o", str(out)).exit_code == 1
    # The user repairs one of the broken photos, then retries.
    shutil.copy(folder / GOOD[0], folder / "text.jpg")
    retry = _run(str(folder), "-o", str(out), "--retry-failed")
    assert retry.exit_code == 1, retry.output  # two are still broken
    assert "1 located, 2 failed, skipped 4 already done, retried 3 that failed before" in (
        retry.stderr
    )
    if suffix == ".csv":
        records = [(r["path"], r["error"]) for r in _rows(out)]
    else:
        records = [
            (rec["file"], rec["error"] or "")
            for rec in map(json.loads, out.read_text().splitlines())
        ]
    paths = [p for p, _ in records]
    assert sorted(paths) == sorted(str(p) for p in list_images(folder))  # each once
    errors = {Path(p).name for p, e in records if e}
    assert errors == {"truncated.jpg", "empty.png"}


@pytest.mark.parametrize(
    "change", [["--top-k", "2"], ["--precision", "fp32"], ["--search", "flat"]]
)
def test_resume_refuses_rows_made_with_other_settings(
    tiny_home: Path, folder: Path, tmp_path: Path, change: list[str]
) -> None:
    out = tmp_path / "out.csv"
    _run(str(folder), "-o", str(out), "--precision", "int8")
    before = out.read_bytes()
    other = _run(str(folder), "-o", str(out), "--precision", "int8", *change)
    assert other.exit_code == 2, other.output
    assert str(out) in other.stderr and "--overwrite" in other.stderr
    assert out.read_bytes() == before
    same = _run(str(folder), "-o", str(out), "--precision", "int8")
    assert "skipped 7 already done" in same.stderr
    fresh = _run(str(folder), "-o", str(out), "--precision", "int8", *change, "--overwrite")
    assert "4 located, 3 failed" in fresh.stderr


# --- CSV quoting (issue 12, problem 4) ------------------------------------------------


def test_csv_rows_round_trip_every_byte_a_file_name_can_hold(tmp_path: Path) -> None:
    from geoguess.locate import LocateResult

    names = [os.fsdecode(b"/x/a" + bytes([b]) + b"b.jpg") for b in range(1, 256) if b != 0x2F]
    names += [os.fsdecode(n) for n in (b"/x/\r", b'/x/\r\n"q",;', b"/x/\xff\xfe\r.jpg")]
    out = tmp_path / "o.csv"
    with CsvWriter(out) as w:
        for name in names:
            w.write(LocateResult(name, error="no such file"))
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as f:
        assert [r["path"] for r in csv.DictReader(f)] == names  # Python's reader agrees
    resumed = CsvWriter(out)
    resumed.close()
    assert resumed.done == set(names) and resumed.dropped_partial == 0
    assert resumed.failed == set(names)


def test_resumed_scan_rows_are_bit_identical_whatever_the_batches(
    tiny_home: Path, folder: Path
) -> None:
    """A resume shifts the batches: a photo searched alone (one row, another BLAS
    kernel) got other last bits than in the uninterrupted scan, so kill -9 and resume
    wrote another file. Every row must be the same to the bit, whichever photos it is
    batched with."""
    from geoguess.geolocator import Geolocator

    geo = Geolocator.load(precision="int8", device="cpu")
    files = list_images(folder)
    full: list = []
    scan_folder(geo, folder, files=files, batch_size=3, on_result=full.append)
    expected = [r.to_dict() for r in full]
    assert sum(r.error is None for r in full) >= 4  # photos searched in twos and threes
    for k in range(1, len(files)):
        resumed: list = []
        skip = {str(f) for f in files[:k]}
        scan_folder(geo, folder, files=files, batch_size=3, skip=skip, on_result=resumed.append)
        assert [r.to_dict() for r in resumed] == expected[k:], f"resumed after {k} photos"
