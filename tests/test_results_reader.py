"""Reading a scan's output back (geoguess map, geoguess xmp): files and shard folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from shared_data import sample_folder
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
