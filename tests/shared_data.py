"""Where the tests find the real photos of ../shared, and what happens when it is missing.

A missing folder fails the tests that need it: a suite that skips its real-data tests
must not look green. ``GEOGUESS_TESTS_ALLOW_MISSING_DATA=1`` makes them skip instead.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "photos"
MANIFEST = PHOTOS / "MANIFEST.csv"
ALLOW_MISSING = os.environ.get("GEOGUESS_TESTS_ALLOW_MISSING_DATA") == "1"


def missing(what: Path) -> NoReturn:
    """Fail (or, when allowed, skip) the current test or collection for ``what``."""
    message = (
        f"test data not found at {what} (set GEOGUESS_TESTS_ALLOW_MISSING_DATA=1 to skip "
        "the tests that need it)"
    )
    if ALLOW_MISSING:
        pytest.skip(message, allow_module_level=True)
    pytest.fail(message, pytrace=False)


def photo(name: str) -> Path:
    path = PHOTOS / name
    if not path.is_file():
        missing(path)
    return path


def manifest_params() -> list[Any]:
    """One pytest.param per row of MANIFEST.csv, for parametrising at collection."""
    if not MANIFEST.is_file():
        missing(MANIFEST)
    with MANIFEST.open(newline="", encoding="utf-8") as handle:
        return [pytest.param(row, id=row["file"]) for row in csv.DictReader(handle)]


def sample_folder(tmp_path: Path, photos_dir: Path) -> Path:
    """A folder of four shared photos: two without GPS, one with, one truncated
    (``broken.jpg``), copied under ``tmp_path/photos`` for tests that write beside them."""
    import shutil

    root = tmp_path / "photos"
    root.mkdir()
    for name in ("es_Canon_40D.jpg", "orient_landscape_3.jpg", "gps_DSCN0010.jpg"):
        shutil.copy(photos_dir / name, root / name)
    shutil.copy(photos_dir / "pillow_truncated_jpeg.jpg", root / "broken.jpg")
    return root


def write_csv_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """Rows (as csv.DictReader gives them) written back, as a person's editor would."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
