"""`geoguess scan --engine ray`: the same rows as the local scan, from a Ray actor pool.

On a local Ray of two CPUs with the tiny model set (random weights: these tests check
the mechanics, never where a photo is), over the real photos plus a couple of hundred
hard links to them and a few broken files.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

import ray_helpers  # noqa: E402

from geoguess.cli import app  # noqa: E402
from geoguess.errors import UsageError  # noqa: E402
from geoguess.ray_scan import (  # noqa: E402
    INSTALL_HINT,
    RayScan,
    WorkerOptions,
    driver_env,
    locate_dataset,
    result_of,
    scan_folder,
)
from geoguess.scan import list_images  # noqa: E402
from geoguess.scan_output import CSV_COLUMNS, open_writer  # noqa: E402

COPIES = 11
BROKEN = {"text.jpg", "empty.png", "pillow_truncated_jpeg.jpg"}
# The name Ray gives an actor of our map_batches in its process title.
ACTOR_TITLE = b"MapWorker(MapBatches(_Locator))"


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    yield from ray_helpers.local_ray(ray)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    """The real photos, COPIES hard links to each in subfolders, and broken files."""
    return ray_helpers.photo_copies(tmp_path_factory.mktemp("many"), photos_dir, COPIES)


def _scan(*args: str) -> Any:
    return CliRunner().invoke(app, ["scan", *args])


def _records(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert record["file"] not in records, f"{record['file']} written twice"
        records[record["file"]] = record
    return records


def _csv_paths(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row["path"] for row in csv.DictReader(f)]


def _same(a: Any, b: Any, where: str = "") -> None:
    """Equal, numbers to 1e-6."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-6), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _broken(paths: Any) -> set[str]:
    return {p for p in paths if Path(p).name in BROKEN}


@pytest.fixture(scope="module")
def local_scan(tiny_model_home: Path, many: Path, tmp_path_factory: pytest.TempPathFactory):
    """The single-process scan's JSON Lines over ``many``, for comparison."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOGUESS_HOME", str(tiny_model_home))
        mp.setenv("GEOGUESS_MODEL", "tiny")
        res = _scan(str(many), "-o", str(out), "-p", "fp32", "-q")
    assert res.exit_code == 1, res.output
    return _records(out)


def test_ray_rows_equal_the_local_scan(
    tiny_home: Path, many: Path, tmp_path: Path, local_scan: dict[str, dict[str, Any]]
) -> None:
    out = tmp_path / "ray.jsonl"
    res = _scan(str(many), "-o", str(out), "-p", "fp32", "--engine", "ray", "--ray-workers", "2")
    assert res.exit_code == 1, res.output  # some photos are broken
    records = _records(out)
    listed = {str(p) for p in list_images(many)}
    assert set(records) == set(local_scan) == listed
    assert len(listed) == 17 * (COPIES + 1) + 2
    for path, record in records.items():
        _same(record, local_scan[path], path)
    failed = {p for p, r in records.items() if r["error"]}
    assert failed == _broken(listed) and len(failed) == 2 + COPIES + 1
    assert all(records[p]["predictions"] for p in listed - failed)
    assert f"{len(listed) - len(failed)} located, {len(failed)} failed" in res.output


def test_a_killed_worker_is_replaced_and_nothing_is_lost_or_doubled(
    tiny_home: Path, many: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed.csv"
    files = list_images(many)
    killed: list[int] = []
    engine = RayScan(WorkerOptions(precision="fp32", env=driver_env()), workers=2)
    try:
        with open_writer(out, model={"name": engine.name}) as writer:

            def on_result(result: Any) -> None:
                writer.write(result)
                if writer.rows_written == 20 and not killed:
                    pids = _actor_pids()
                    assert pids, "no actor process found to kill"
                    os.kill(pids[0], signal.SIGKILL)  # as the kernel's OOM killer would
                    killed.append(pids[0])

            # Small batches: the killed actor has more work queued, which Ray redoes.
            summary = scan_folder(engine, many, files=files, batch_size=2, on_result=on_result)
    finally:
        engine.close()
    assert killed and not _alive(killed[0])
    paths = _csv_paths(out)
    assert len(paths) == len(set(paths)) == len(files), "rows lost or written twice"
    assert set(paths) == {str(f) for f in files}
    assert summary.located + summary.failed == len(files) and not summary.interrupted
    assert summary.failed == len(_broken(paths))


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if ACTOR_TITLE in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_resumed_ray_scan_skips_what_was_written(
    tiny_home: Path, many: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resume.csv"
    args = [str(many), "-o", str(out), "-p", "fp32", "--engine", "ray", "--ray-workers", "1"]
    assert _scan(*args, "--glob", "*.jpg").exit_code == 1
    first = _csv_paths(out)
    # A run killed in the middle of a row leaves it torn: dropped and redone.
    with open(out, "ab") as f:
        f.write(b"/torn/row.jpg,43.1")
    res = _scan(*args)
    assert res.exit_code == 1, res.output
    assert "dropped an incomplete last row" in res.output
    assert f"skipped {len(first)} already done" in res.output
    paths = _csv_paths(out)
    listed = [str(p) for p in list_images(many)]
    assert paths[: len(first)] == first
    assert len(paths) == len(set(paths)) and set(paths) == set(listed)
    with open(out, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(CSV_COLUMNS)
    # Only the failed ones again: 14 broken photos, nothing else redone.
    res = _scan(*args, "--retry-failed")
    assert res.exit_code == 1 and "0 located, 14 failed" in res.output, res.output
    assert sorted(_csv_paths(out)) == sorted(listed)


def test_ray_scan_to_stdout_has_only_rows(tiny_home: Path, many: Path) -> None:
    res = _scan(str(many / "orig"), "--engine", "ray", "--ray-workers", "1", "-q")
    assert res.exit_code == 1, res.output
    rows = list(csv.DictReader(res.stdout.splitlines()))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in (many / "orig").iterdir())
    assert [r["path"] for r in rows if r["error"]] == [
        str(many / "orig" / "pillow_truncated_jpeg.jpg")
    ]


def test_locate_dataset_rows_for_python_pipelines(tiny_home: Path, many: Path) -> None:
    photos = sorted(str(p) for p in (many / "orig").iterdir())
    settings = {"name": "tiny", "precision": "fp32", "random_weights": True, "top_k": 3}
    ds = locate_dataset(
        ray.data.from_items([{"path": p} for p in photos]),
        WorkerOptions(precision="fp32", env=driver_env()),
        settings=settings,
        top_k=3,
        workers=1,
        with_results=True,
    )
    rows = {row["path"]: row for row in ds.iter_rows()}
    assert sorted(rows) == photos
    for path, row in rows.items():
        record = json.loads(row["record"])
        assert record["file"] == path and record["model"] == settings
        assert set(CSV_COLUMNS) <= set(row)
        assert result_of(row).to_dict() == {k: v for k, v in record.items() if k != "model"}
        if Path(path).name in BROKEN:
            assert row["error"] and not row["lat"]
        else:
            assert not row["error"] and len(record["predictions"]) == 3
            assert row["model"].startswith("tiny/fp32")

    # The same photos as bytes, as read_binary_files gives them: the same rows.
    def from_bytes(dataset: Any) -> dict[str, dict[str, Any]]:
        located = locate_dataset(
            dataset,
            WorkerOptions(precision="fp32", env=driver_env()),
            settings=settings,
            top_k=3,
            workers=1,
            batch_size=4,  # not the path run's batch: rows do not depend on batch-mates
        )
        return {row["path"]: row for row in located.iter_rows()}

    by_bytes = from_bytes(ray.data.read_binary_files(photos, include_paths=True))
    assert sorted(by_bytes) == photos
    for path, row in by_bytes.items():
        assert "result" not in row
        _same(json.loads(row["record"]), json.loads(rows[path]["record"]), path)
        assert {c: row[c] for c in CSV_COLUMNS} == {c: rows[path][c] for c in CSV_COLUMNS}
    # Bytes without names: named by their sha256, the same in every run.
    blobs = [Path(p).read_bytes() for p in photos[:3]]
    unnamed = from_bytes(ray.data.from_items([{"bytes": b} for b in blobs]))
    names = {f"sha256:{hashlib.sha256(b).hexdigest()[:16]}": p for b, p in zip(blobs, photos)}
    assert set(unnamed) == set(names)
    for name, row in unnamed.items():
        assert row["lat"] == rows[names[name]]["lat"] and row["error"] == rows[names[name]]["error"]
    with pytest.raises(UsageError, match="'path' or a 'bytes' column"):
        locate_dataset(ray.data.from_items([{"file": photos[0]}]), workers=1)


def test_ray_options_need_the_ray_engine_and_a_missing_extra_says_how_to_install(
    tiny_home: Path, many: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path / "x.csv")
    res = _scan(str(many), "-o", out, "--ray-workers", "2")
    assert res.exit_code == 2 and "go with --engine ray" in res.output
    res = _scan(str(many), "-o", out, "--engine", "spark")
    assert res.exit_code == 2 and "unknown engine" in res.output
    # Ray not installed: one line with the install command, exit 2, nothing written.
    monkeypatch.setitem(sys.modules, "ray", None)
    res = _scan(str(many), "-o", out, "--engine", "ray")
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and INSTALL_HINT in lines[0], res.output
    assert not Path(out).exists()


def test_a_worker_without_the_model_set_fails_with_a_setup_error(
    many: Path, tmp_path: Path
) -> None:
    res = _scan(str(many), "-o", str(tmp_path / "x.csv"), "--engine", "ray", "--model", "nope")
    assert res.exit_code == 2, res.output
    assert "on a Ray worker" in res.output and "nope" in res.output


def test_gpu_workers_on_a_ray_without_gpus_are_a_setup_error(
    tiny_home: Path, many: Path, tmp_path: Path
) -> None:
    res = _scan(
        str(many), "-o", str(tmp_path / "x.csv"), "--engine", "ray", "--gpus-per-worker", "1"
    )
    assert res.exit_code == 2, res.output
    assert "the Ray cluster has 0 GPUs" in res.output
