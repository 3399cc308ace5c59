"""The documentation says what the code does: links resolve, named options exist,
tables of written properties match what is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoguess.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))


def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_local_links_resolve(page: Path) -> None:
    for target in _links(page.read_text(encoding="utf-8")):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in DOCS:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def _options(command: str) -> set[str]:
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return set(re.findall(r"--[a-z][a-z0-9-]+", res.output))


def test_photo_libraries_page_names_real_options() -> None:
    text = (REPO / "docs" / "photo-libraries.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(--xmp[a-z-]*)", text))
    assert named
    assert named <= _options("scan")


def test_photo_libraries_table_lists_what_is_written(tmp_path: Path) -> None:
    from geoguess.xmp import write_sidecar

    text = (REPO / "docs" / "photo-libraries.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`((?:exif|geoguess):[A-Za-z0-9]+)`", text))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"")
    props = {
        "Probability": "0.1",
        "SpreadP50Km": "1",
        "SpreadP90Km": "2",
        "Place": "x",
        "Confidence": "city",
    }
    side = write_sidecar(photo, 1.0, 2.0, properties={**props, "Model": "m"}).path
    written = set(re.findall(r"\b((?:exif|geoguess):[A-Za-z0-9]+)=", side.read_text()))
    assert written <= documented, written - documented


def test_maps_page_matches_the_code() -> None:
    from geoguess.maps.thumbnails import MAX_THUMBNAILS, THUMBNAIL_PX
    from geoguess.maps.view import ERROR_CLASSES

    text = (REPO / "docs" / "maps.md").read_text(encoding="utf-8")
    bounds = [float(b.replace(",", "")) for b in re.findall(r"\| < ([\d,]+) km", text)]
    assert bounds == [b for b, _, _ in ERROR_CLASSES if b != float("inf")]
    assert f"{MAX_THUMBNAILS:,} photos" in text
    assert f"{THUMBNAIL_PX} px" in text
    page_js = (REPO / "geoguess" / "maps" / "page.js").read_text(encoding="utf-8")
    assert "photos.length > 100" in page_js and "Over 100 photos are clustered" in text
    assert "disableClusteringAtZoom: 11" in page_js and "zoom 11" in text
    assert _options("map") >= {"--output", "--tiles", "--no-thumbnails"}
