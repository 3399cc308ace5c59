"""`geoguess bench`: the variants run in child processes that take turns.

These run the real machinery on the tiny model set; the figures themselves are only
checked for sanity (the benchmark's job is to print them, not the tests').
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoguess.bench import bench_latency, bench_scan
from geoguess.cli import app
from geoguess.errors import SetupError
from geoguess.reporting import LoggingReporter

PHOTOS = ["gps_DSCN0010.jpg", "mei_FujiFilm_FinePixS2Pro.jpg"]
REFERENCE_WORKER = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_worker.py"


def test_latency_against_the_reference(
    tiny_home: Path, tiny_backbone_dir: Path, photos_dir: Path
) -> None:
    # The reference is geoclip's own predict() on the same tiny CLIP; it re-encodes the
    # 100K gallery on every call, so one photo and one round keep this test short.
    photo = photos_dir / PHOTOS[0]
    rows = bench_latency(
        "tiny",
        [photo],
        precisions=("fp32", "int8"),
        repeats=2,
        reference=REFERENCE_WORKER,
        reference_clip=tiny_backbone_dir,
        reporter=LoggingReporter(),
    )
    by = {r.variant: r for r in rows}
    assert list(by) == ["reference", "fp32", "int8"]
    ref = by["reference"]
    assert ref.speedup == 1.0 and ref.samples == 1 and ref.device == "torch-cpu"
    for variant in ("fp32", "int8"):
        row = by[variant]
        assert row.device == "CPUExecutionProvider"
        assert row.samples == 2
        assert 0 < row.warm_ms < ref.warm_ms  # the reference re-encodes 100K points
        assert row.speedup is not None and row.speedup > 1
        assert row.cold_s > 0 and row.cli_cold_s is not None and row.cli_cold_s > 0
        assert row.peak_rss_mb > 50
    assert by["fp32"].cosine_to_fp32 is None
    assert 0.99 < by["int8"].cosine_to_fp32 <= 1.0 + 1e-6


def test_scan_rounds(tiny_home: Path, photos_dir: Path) -> None:
    row = bench_scan("tiny", [photos_dir / p for p in PHOTOS], n_files=4, batch_size=2, rounds=2)
    assert row.files == 4 and row.rounds == 2 and row.batch_size == 2
    assert row.encoder_images_per_s > 0 and row.scan_files_per_s > 0
    assert row.ratio > 0 and row.outside_encoder_share == pytest.approx(max(0, 1 - row.ratio))


def test_a_failing_worker_is_a_setup_error_with_its_reason(
    tiny_home: Path, photos_dir: Path
) -> None:
    with pytest.raises(SetupError, match=r"failed.*no-such-model"):
        bench_latency("no-such-model", [photos_dir / PHOTOS[0]])
    with pytest.raises(SetupError, match=r"benchmark scan worker failed.*no-such-model"):
        bench_scan("no-such-model", [photos_dir / PHOTOS[0]], n_files=1)


def test_bench_command_json(tiny_home: Path, photos_dir: Path) -> None:
    args = ["bench", "-m", "tiny", "--repeats", "1", "--rounds", "2"]
    args += ["--scan-files", "3", "--batch-size", "2", "--json"]
    for p in PHOTOS:
        args += ["--photos", str(photos_dir / p)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds == ["latency", "latency", "scan", "startup"]
    assert [r["variant"] for r in rows[:2]] == ["fp32", "int8"]
    assert all(r["samples"] == 4 and r["speedup"] is None for r in rows[:2])  # 2 photos x 2
    assert rows[2]["files"] == 3 and rows[2]["precision"] == "int8"
    assert 0 < rows[3]["help_s"] < 30


def test_bench_plan_compares_what_users_choose_between_on_the_device() -> None:
    from geoguess.bench import bench_plan

    plan = bench_plan("cpu")
    assert (plan.precisions, plan.scan_precision, plan.on_cuda) == (["fp32", "int8"], "int8", False)
    # Given precisions are kept in order; the scan runs the device's default when timed.
    assert bench_plan("cpu", ["int8", "fp32"]).scan_precision == "int8"
    assert bench_plan("cpu", ["fp32"]).scan_precision == "fp32"


def test_bench_table_shows_every_row_and_the_scan_line(capsys: pytest.CaptureFixture[str]) -> None:
    from geoguess.bench import LatencyRow, ScanRow
    from geoguess.cli.render import show_bench

    rows = [
        LatencyRow("reference", "cpu", 3, 22895.0, 58.6, 3335.0),
        LatencyRow("int8", "cpu", 3, 158.0, 1.24, 678.0, 1.47, 144.6, 0.9996),
    ]
    scan = ScanRow("int8", "cpu", 32, 16, 3, 7.66, 6.54, 0.86, 0.14, 780.0)
    show_bench(rows, [scan], 0.17, n_photos=3)
    out = capsys.readouterr().out
    # Piped, the table is tab-separated: a title, the header, one line per variant.
    lines = out.splitlines()[1:]
    assert out.startswith("# Per image, 3 photos")
    assert lines[0].split("\t")[:4] == ["variant", "provider", "warm ms/image", "speed-up"]
    assert lines[1].split("\t")[:4] == ["reference", "cpu", "22,895", ""]
    assert lines[2].split("\t") == ["int8", "cpu", "158", "144.6x", "1.24", "1.47", "678", "0.9996"]
    assert "6.54 files/s against 7.66 images/s" in out and "ratio 86%" in out
    assert out.rstrip().endswith("geoguess --help: 0.17 s")
