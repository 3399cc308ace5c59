"""`geoguess scan DIR -o OUTDIR/`: a folder of shards, written whole, resumed by shard.

On a local Ray of two CPUs with the tiny model set (random weights: these tests check
the mechanics, never where a photo is), over the real photos, two hard links to each
and two broken files.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

import ray_helpers  # noqa: E402

from geoguess.cli import app  # noqa: E402
from geoguess.errors import UsageError  # noqa: E402
from geoguess.scan import list_images, scan_folder  # noqa: E402
from geoguess.scan_output import CSV_COLUMNS  # noqa: E402
from geoguess.scan_shards import SETTINGS_FILE, ShardWriter, is_shard_folder  # noqa: E402

COPIES = 2
BROKEN = {"text.jpg", "empty.png", "pillow_truncated_jpeg.jpg"}
SHARD = 8


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    yield from ray_helpers.local_ray(ray)


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    """The real photos, COPIES hard links to each in subfolders, and broken files."""
    return ray_helpers.photo_copies(tmp_path_factory.mktemp("few"), photos_dir, COPIES)


def _scan(*args: str) -> Any:
    return CliRunner().invoke(app, ["scan", *args])


def _ray(few: Path, out: str, *args: str) -> Any:
    return _scan(str(few), "-o", out, "-p", "fp32", "--engine", "ray", "--ray-workers", "1", *args)


def _shards(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-"))


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(CSV_COLUMNS)
        return list(reader)


def _by_path(rows: list[dict[str, Any]], key: str = "path") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        assert row[key] not in out, f"{row[key]} written twice"
        out[row[key]] = row
    return out


def _shard_csv_rows(folder: Path) -> list[dict[str, str]]:
    return [row for shard in _shards(folder) for row in _csv_rows(shard)]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def single_csv(tiny_model_home: Path, few: Path, tmp_path_factory: pytest.TempPathFactory):
    """The single-file Ray scan's CSV rows over ``few``, by path, for comparison."""
    out = tmp_path_factory.mktemp("single") / "single.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOGUESS_HOME", str(tiny_model_home))
        mp.setenv("GEOGUESS_MODEL", "tiny")
        res = _ray(few, str(out), "-q")
    assert res.exit_code == 1, res.output  # some photos are broken
    return _by_path(_csv_rows(out))


def test_csv_shards_hold_the_single_files_rows_and_resume_by_shard(
    tiny_home: Path, few: Path, tmp_path: Path, single_csv: dict[str, dict[str, str]]
) -> None:
    out = tmp_path / "out"
    listed = {str(p) for p in list_images(few)}
    res = _ray(few, f"{out}/", "--shard-size", str(SHARD))
    assert res.exit_code == 1, res.output
    shards = _shards(out)
    sizes = [len(_csv_rows(s)) for s in shards]
    # Full shards, then what was left at the end; numbered from 0.
    assert sizes == [SHARD] * (len(listed) // SHARD) + [len(listed) % SHARD]
    assert [s.name for s in shards] == [f"part-{i:05d}.csv" for i in range(len(shards))]
    rows = _by_path(_shard_csv_rows(out))
    assert set(rows) == listed == set(single_csv)
    assert rows == single_csv
    assert json.loads((out / SETTINGS_FILE).read_text())["format"] == "csv"

    # A rerun has nothing to do: no new shard.
    before = {s.name: s.read_bytes() for s in _shards(out)}
    res = _ray(few, str(out))  # an existing folder needs no trailing slash
    assert res.exit_code == 1, res.output  # earlier failures remain
    assert f"skipped {len(listed)} already done" in res.output
    assert {s.name: s.read_bytes() for s in _shards(out)} == before

    # A deleted shard's paths are redone, and only those, into a shard after the last;
    # a temporary file left by a killed run is not a shard.
    lost = shards[1]
    lost_paths = {r["path"] for r in _csv_rows(lost)}
    lost.unlink()
    (out / f".tmp-part-00099.csv-{int(time.time())}-1-abc").write_text("path,lat\n/x.jpg,4")
    res = _ray(few, str(out), "--shard-size", str(SHARD))
    assert res.exit_code == 1, res.output
    assert f"skipped {len(listed) - len(lost_paths)} already done" in res.output
    new = _shards(out)[-1]
    assert new.name == f"part-{len(shards):05d}.csv"
    assert {r["path"] for r in _csv_rows(new)} == lost_paths
    assert _by_path(_shard_csv_rows(out)) == single_csv

    # --retry-failed: the broken photos again, their old error rows gone.
    failed = {p for p, r in single_csv.items() if r["error"]}
    assert failed == {p for p in listed if Path(p).name in BROKEN}
    res = _ray(few, str(out), "--retry-failed")
    assert res.exit_code == 1, res.output
    assert f"0 located, {len(failed)} failed" in res.output
    assert f"retried {len(failed)} that failed before" in res.output
    rows = _by_path(_shard_csv_rows(out))  # asserts each path once
    assert set(rows) == listed
    assert {p for p, r in rows.items() if r["error"]} == failed

    # Other settings: refused before anything is written.
    before = {s.name: s.read_bytes() for s in _shards(out)}
    res = _ray(few, str(out), "--top-k", "3")
    assert res.exit_code == 2, res.output
    assert "top_k=5" in res.output and "top_k=3" in res.output
    res = _ray(few, str(out), "--format", "jsonl")
    assert res.exit_code == 2 and "use the same --format" in res.output, res.output
    assert {s.name: s.read_bytes() for s in _shards(out)} == before


def test_jsonl_and_parquet_shards_hold_the_single_files_rows(
    tiny_home: Path, few: Path, tmp_path: Path, single_csv: dict[str, dict[str, str]]
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    single = tmp_path / "single.jsonl"
    assert _ray(few, str(single), "-q").exit_code == 1
    expected = _by_path(_jsonl(single), "file")

    out = tmp_path / "jsonl"
    res = _ray(few, f"{out}/", "--format", "jsonl", "--shard-size", "20", "-q")
    assert res.exit_code == 1, res.output
    shards = _shards(out)
    assert all(s.suffix == ".jsonl" for s in shards)
    assert [len(_jsonl(s)) for s in shards][:-1] == [20] * (len(shards) - 1)
    records = _by_path([r for s in shards for r in _jsonl(s)], "file")
    assert records == expected

    out = tmp_path / "parquet"
    res = _ray(few, f"{out}/", "--format", "parquet", "--shard-size", "20", "-q")
    assert res.exit_code == 1, res.output
    tables = [pq.read_table(s) for s in _shards(out)]
    assert [t.num_rows for t in tables][:-1] == [20] * (len(tables) - 1)
    assert all(t.column_names == list(CSV_COLUMNS) for t in tables)
    assert all(str(t.schema.field(c).type) == "string" for t in tables for c in CSV_COLUMNS)
    rows = _by_path([r for t in tables for r in t.to_pylist()])
    assert rows == single_csv
    # Resumed like the others.
    res = _ray(few, str(out), "--format", "parquet", "--retry-failed")
    assert res.exit_code == 1, res.output
    rows = _by_path([r for s in _shards(out) for r in pq.read_table(s).to_pylist()])
    assert set(rows) == set(single_csv)


def test_folder_output_with_the_local_engine_and_bad_options(
    tiny_home: Path, few: Path, tmp_path: Path, single_csv: dict[str, dict[str, str]]
) -> None:
    out = tmp_path / "local"
    res = _scan(str(few / "orig"), "-o", f"{out}/", "-p", "fp32", "--shard-size", "5", "-q")
    assert res.exit_code == 1, res.output
    rows = _by_path(_shard_csv_rows(out))
    assert set(rows) == {str(p) for p in list_images(few / "orig")}
    assert rows == {p: single_csv[p] for p in rows}  # the local engine's rows are Ray's
    file_out = str(tmp_path / "x.csv")
    res = _scan(str(few), "-o", file_out, "--shard-size", "5")
    assert res.exit_code == 2 and "--shard-size goes with a folder" in res.output
    res = _scan(str(few), "-o", f"{out}/", "--map", str(tmp_path / "m.html"))
    assert res.exit_code == 2 and "--map" in res.output
    res = _scan(str(few), "-o", str(tmp_path / "g") + "/", "--format", "geojson")
    assert res.exit_code == 2 and "csv, jsonl or parquet" in res.output
    assert is_shard_folder("a/") and is_shard_folder(tmp_path) and not is_shard_folder("a.csv")


def test_a_stopped_scan_writes_what_it_buffered(tiny_geo: Any, few: Path, tmp_path: Path) -> None:
    """Ctrl-C (the stop event) ends the scan; closing the writer writes the last rows."""
    out = tmp_path / "stopped"
    stop = threading.Event()
    files = list_images(few)
    with ShardWriter(out, "csv", model={"name": "tiny"}, shard_size=4) as writer:

        def on_result(result: Any) -> None:
            writer.write(result)
            if writer.rows_written == 10:
                stop.set()

        summary = scan_folder(tiny_geo, few, files=files, on_result=on_result, stop=stop)
    assert summary.interrupted and summary.processed == 10
    assert [len(_csv_rows(s)) for s in _shards(out)] == [4, 4, 2]
    again = ShardWriter(out, "csv", model={"name": "tiny"}, shard_size=4)
    try:
        assert again.done == {r["path"] for r in _shard_csv_rows(out)}
        assert len(again.done) == 10
        # A second scan of the same folder at the same time is refused.
        with pytest.raises(UsageError, match="another geoguess scan"):
            ShardWriter(out, "csv", model={"name": "tiny"})
    finally:
        again.close()


def test_a_killed_scan_loses_at_most_its_buffer_and_writes_nothing_twice(
    tiny_home: Path, few: Path, tmp_path: Path
) -> None:
    """SIGKILL of the driver: the shards on disk stay whole, the rerun does the rest."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "geoguess", "scan", str(few), "-o", f"{out}/"]
    cmd += ["-p", "fp32", "--shard-size", "3", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and len(_shards(out)) >= 2):
            assert proc.poll() is None, "the scan ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    kept = _shard_csv_rows(out)  # every shard complete: a torn one would not parse
    assert all(len(_csv_rows(s)) == 3 for s in _shards(out))
    listed = {str(p) for p in list_images(few)}
    assert len(kept) < len(listed)
    res = _scan(str(few), "-o", str(out), "-p", "fp32", "--shard-size", "3", "-q")
    assert res.exit_code == 1, res.output
    assert set(_by_path(_shard_csv_rows(out))) == listed
