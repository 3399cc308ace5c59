"""Maps: the offline HTML page (checked in headless Chromium with the network cut), the
PNG picture, the basemap, and `geoguess map` reading a scan's output back.

Chromium is the Debian package ``chromium`` (.ci/run installs it); without it the
browser tests fail rather than skip. The tiny model set has random weights, so these
tests check what is drawn, never where a photo is.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from browser import assert_not_blank, browse
from PIL import Image
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.geo import circle_ring, haversine_km
from geoguess.maps import basemap
from geoguess.maps.html import read_data, render_html
from geoguess.maps.thumbnails import thumbnail_uri
from geoguess.maps.view import HEAT_SHARE, mass_cells, scan_view

PHOTO = "gps_DSCN0010.jpg"


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(app, list(args), input=input)


# --- basemap -----------------------------------------------------------------------


def test_basemap_file_is_the_pinned_upstream_one() -> None:
    data = (Path(basemap.__file__).parents[1] / "data" / "countries-110m.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == basemap.SHA256


def test_basemap_is_valid_geojson_without_world_crossing_edges() -> None:
    geojson = pytest.importorskip("geojson")
    world = basemap.countries()
    assert geojson.loads(json.dumps(world)).is_valid
    names = {f["properties"]["name"] for f in world["features"]}
    assert {"France", "Russia", "Fiji", "Antarctica", "Brazil"} <= names
    for feature in world["features"]:
        if feature["properties"]["name"] == "Antarctica":
            continue
        geom = feature["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for ring in (r for p in polys for r in p):
            lons = [p[0] for p in ring]
            assert max(abs(a - b) for a, b in itertools.pairwise(lons)) < 180, feature["properties"]


# --- geometry of the layers --------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "km"), [(48.85, 2.35, 50), (-33.9, 151.2, 2500), (10, 179.5, 800)]
)
def test_spread_circle_is_at_its_radius(lat: float, lon: float, km: float) -> None:
    ring = circle_ring(lat, lon, km)
    lats, lons = np.array(ring).T
    assert np.allclose(haversine_km(lat, lon, lats, lons), km, rtol=1e-9)
    assert ring[0] == pytest.approx(ring[-1])
    assert np.abs(np.diff(lons)).max() < 30  # unwrapped: no jump at the antimeridian


def test_a_circle_round_a_pole_closes_over_it() -> None:
    ring = circle_ring(85.0, 10.0, 1000)
    assert max(lat for lat, _ in ring) == 90.0


def test_mass_cells_hold_the_mass_heaviest_first() -> None:
    rng = np.random.default_rng(0)
    lats, lons = rng.uniform(-60, 60, 5000), rng.uniform(-180, 180, 5000)
    probs = rng.dirichlet(np.full(5000, 0.05))
    cells = mass_cells(lats, lons, probs, 2.0)
    masses = [c[3] for c in cells]
    assert masses == sorted(masses, reverse=True)
    assert HEAT_SHARE - 1e-6 <= sum(masses) <= 1 + 1e-9
    south, west, size, mass = cells[0]
    inside = (lats >= south) & (lats < south + size) & (lons >= west) & (lons < west + size)
    assert probs[inside].sum() == pytest.approx(mass, rel=1e-6)


def test_thumbnail_is_small_and_carries_no_metadata(photos_dir: Path) -> None:
    uri = thumbnail_uri(photos_dir / PHOTO)
    assert uri.startswith("data:image/jpeg;base64,")
    data = base64.b64decode(uri.split(",", 1)[1])
    image = Image.open(io.BytesIO(data))
    assert max(image.size) <= 160
    assert not image.getexif()
    assert b"Exif" not in data and b"GPS" not in data


# --- one photo ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_page(tiny_model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`geoguess PHOTO --map` as HTML and PNG, and `--format geojson` of the same photo."""
    from shared_data import photo

    mp = pytest.MonkeyPatch()
    mp.setenv("GEOGUESS_HOME", str(tiny_model_home))
    mp.setenv("GEOGUESS_MODEL", "tiny")
    try:
        out = tmp_path_factory.mktemp("photo-map")
        src = str(photo(PHOTO))
        res = run(src, "--format", "geojson", "--map", str(out / "photo.html"))
        assert res.exit_code == 0, res.output
        res_png = run(src, "--map", str(out / "photo.png"))
        assert res_png.exit_code == 0, res_png.output
        geojson_out = json.loads(run(src, "--format", "geojson").stdout)
    finally:
        mp.undo()
    return {"html": out / "photo.html", "png": out / "photo.png", "geojson": geojson_out}


def test_page_embeds_the_same_geojson_as_format_geojson(photo_page: dict) -> None:
    assert read_data(photo_page["html"]) == photo_page["geojson"]


def test_page_needs_no_network(photo_page: dict) -> None:
    text = photo_page["html"].read_text(encoding="utf-8")
    # Links (Leaflet's credit to leafletjs.com) are fine; nothing may be loaded.
    assert not re.search(r"""src\s*=\s*["']?(?:https?:)?//""", text)
    assert not re.search(r"""<link[^>]*href\s*=\s*["']?(?:https?:)?//""", text)
    assert "@import" not in text
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", text)
    assert "tile.openstreetmap.org" in text  # only used when view.tiles is true
    assert '"tiles":false' in text


def test_photo_page_in_a_browser(photo_page: dict, tmp_path: Path) -> None:
    shot = tmp_path / "photo.png"
    page = browse(photo_page["html"], tmp_path, screenshot=shot)
    assert page["ready"], page["dom"][-2000:]
    assert page["errors"] == []
    assert page["resources"] == []  # nothing fetched, not even from the file system
    counts = page["counts"]
    n_candidates = sum(
        1 for f in photo_page["geojson"]["features"] if f["properties"]["kind"] == "candidate"
    )
    assert counts["candidates"] == n_candidates == 5
    assert counts["exif"] == 1 and counts["circles"] == 2 and counts["heat"] > 0
    dom = page["dom"]
    assert len(re.findall(r'class="[^"]*\bgg-candidate\b', dom)) == 5
    assert len(re.findall(r'class="[^"]*\bgg-exif\b', dom)) == 1
    assert "Random test weights" in dom or "random" not in photo_page["html"].read_text()
    assert_not_blank(shot)


def test_photo_png(photo_page: dict) -> None:
    image = Image.open(photo_page["png"])
    assert image.format == "PNG" and image.size == (1200, 800)
    assert_not_blank(photo_page["png"])
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 180) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)
    assert red.sum() > 50  # the candidates and the 50% ring


def test_file_names_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    evil = '</script><script>document.title="pwned"</script><b>x.jpg'
    record = {
        "file": evil,
        "predictions": [{"lat": 1.0, "lon": 2.0, "probability": 0.5, "place": None}],
    }
    html = render_html(scan_view([record]))
    assert "</script><script>document.title" not in html
    assert read_data(html)["features"][0]["properties"]["file"] == evil
    page = tmp_path / "evil.html"
    page.write_text(html, encoding="utf-8")
    result = browse(page, tmp_path)
    assert result["errors"] == [] and result["counts"]["photos"] == 1
    assert "pwned" not in result["dom"].split("<title>", 1)[1].split("</title>", 1)[0]


# --- a scan ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scan_outputs(tiny_model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from shared_data import PHOTOS

    mp = pytest.MonkeyPatch()
    mp.setenv("GEOGUESS_HOME", str(tiny_model_home))
    mp.setenv("GEOGUESS_MODEL", "tiny")
    out = tmp_path_factory.mktemp("scan-map")
    try:
        res = run("scan", str(PHOTOS), "-o", str(out / "s.csv"), "--map", str(out / "scan.html"))
        assert res.exit_code == 1, res.output  # the truncated JPEG
        assert run("scan", str(PHOTOS), "-o", str(out / "s.jsonl")).exit_code == 1
        assert run("scan", str(PHOTOS), "-o", str(out / "s.geojson")).exit_code == 1
    finally:
        mp.undo()
    rows = (out / "s.csv").read_text().splitlines()
    return {"dir": out, "rows": len(rows) - 1}


def test_scan_page_in_a_browser(scan_outputs: dict, tmp_path: Path) -> None:
    shot = tmp_path / "scan.png"
    page = browse(scan_outputs["dir"] / "scan.html", tmp_path, screenshot=shot)
    assert page["ready"] and page["errors"] == [] and page["resources"] == []
    located = scan_outputs["rows"] - 1  # one photo is broken
    assert page["counts"]["photos"] == located
    assert page["dom"].count('class="leaflet-marker-icon gg-photo') == located
    assert page["dom"].count("data:image/jpeg;base64") >= 1  # thumbnails embedded
    assert_not_blank(shot)


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl", "s.geojson"])
def test_map_command_reads_every_scan_format(scan_outputs: dict, name: str, tmp_path: Path) -> None:
    out = tmp_path / "m.html"
    res = run("map", str(scan_outputs["dir"] / name), "-o", str(out))
    assert res.exit_code == 0, res.output
    data = read_data(out)
    assert len(data["features"]) == scan_outputs["rows"]
    located = [f for f in data["features"] if f["geometry"]]
    assert len(located) == scan_outputs["rows"] - 1
    png = tmp_path / "m.png"
    assert run("map", str(scan_outputs["dir"] / name), "-o", str(png)).exit_code == 0
    assert_not_blank(png)


def test_map_formats_agree_on_the_best_guesses(scan_outputs: dict, tmp_path: Path) -> None:
    best = {}
    for name in ("s.csv", "s.jsonl", "s.geojson"):
        run(
            "map",
            str(scan_outputs["dir"] / name),
            "-o",
            str(tmp_path / "m.html"),
            "--no-thumbnails",
        )
        best[name] = {
            f["properties"]["file"]: tuple(round(x, 5) for x in f["geometry"]["coordinates"])
            for f in read_data(tmp_path / "m.html")["features"]
            if f["geometry"]
        }
    assert best["s.csv"] == best["s.jsonl"] == best["s.geojson"]


def test_map_reads_stdin(scan_outputs: dict, tmp_path: Path) -> None:
    data = (scan_outputs["dir"] / "s.jsonl").read_bytes()
    res = run("map", "-", "-o", str(tmp_path / "m.html"), input=data)
    assert res.exit_code == 0, res.output
    assert len(read_data(tmp_path / "m.html")["features"]) == scan_outputs["rows"]


def test_many_photos_are_clustered(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = []
    for i in range(300):
        lat, lon = float(rng.uniform(40, 50)), float(rng.uniform(0, 15))
        pred = {"lat": lat, "lon": lon, "probability": 0.1, "place": None}
        lines.append(
            json.dumps({"file": f"p{i}.jpg", "predictions": [pred], "exif_error_km": float(i)})
        )
    src = tmp_path / "many.jsonl"
    src.write_text("\n".join(lines) + "\n")
    assert run("map", str(src), "-o", str(tmp_path / "many.html")).exit_code == 0
    page = browse(tmp_path / "many.html", tmp_path)
    assert page["errors"] == [] and page["counts"]["photos"] == 300
    assert "marker-cluster" in page["dom"]
    assert len(re.findall(r'class="[^"]*\bgg-photo\b', page["dom"])) < 300


def test_map_errors_are_one_line(tmp_path: Path) -> None:
    res = run("map", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "m.html"))
    assert res.exit_code == 2 and "nope.csv: cannot read (no such file)" in res.output
    res = run("map", str(tmp_path), "-o", str(tmp_path / "m.svg"))
    assert res.exit_code == 2 and "as .html or .png" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "a.jpg", "predictions": []}\n{not json\n')
    res = run("map", str(bad), "-o", str(tmp_path / "m.html"))
    assert res.exit_code == 1 and "bad.jsonl: line 2 is not JSON" in res.output
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    res = run("map", str(text), "-o", str(tmp_path / "m.html"))
    assert res.exit_code == 2 and "not a geoguess scan output" in res.output


def test_locate_map_suffix_is_checked_before_any_work(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    res = run(str(photo), "--map", str(tmp_path / "m.pdf"))
    assert res.exit_code == 2 and "as .html or .png" in res.output
    assert not (tmp_path / "geoguess-home").exists() or not any(
        (tmp_path / "geoguess-home").iterdir()
    )


def test_png_labels_of_close_candidates_do_not_print_over_one_another() -> None:
    from PIL import Image, ImageDraw

    from geoguess.maps.png import _font, _Labels, _overlap

    draw = ImageDraw.Draw(Image.new("RGBA", (400, 300)))
    labels = _Labels(draw, _font(26), 400, 300)
    placed = [labels.place((200, 150), 10, f"#{i} 0.3%", (0, 0, 0, 255)) for i in range(1, 7)]
    # Four sides around one point, then no room: left out rather than drawn on top.
    assert placed == [True, True, True, True, False, False]
    boxes = labels.taken
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    # A label at the edge goes to a side inside the picture.
    assert labels.place((395, 20), 5, "#1 9.9%", (0, 0, 0, 255))
    assert labels.taken[-1][2] <= 400
