"""Custom galleries: CSV reading, add / list / remove through the CLI, search with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geoguess.errors import InputError, UsageError
from geoguess.galleries import read_coords_csv

runner = CliRunner()

CITIES = [
    ("Paris", 48.8566, 2.3522),
    ("London", 51.5074, -0.1278),
    ("New York", 40.7128, -74.006),
    ("Tokyo", 35.6762, 139.6503),
    ("Sydney", -33.8688, 151.2093),
    ("Nairobi", -1.2921, 36.8219),
    ("Lima", -12.0464, -77.0428),
    ("Suva", -18.1248, 178.4501),
]


def _write_cities(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    lines = ["name,lat,lon"]
    for i in range(n):
        name, lat, lon = CITIES[i % len(CITIES)]
        lines.append(f"{name} {i},{lat + rng.normal() * 0.2:.5f},{lon + rng.normal() * 0.2:.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_coords_csv(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("\ufeffLatitude,Longitude,Name\n10.5,20.25,A\n\n-5,-170,B\n")
    coords, names = read_coords_csv(p)
    assert coords.dtype == np.float32 and coords.tolist() == [[10.5, 20.25], [-5.0, -170.0]]
    assert names == ["A", "B"]
    p.write_text("LON,LAT\n20,10\n")
    coords, names = read_coords_csv(p)
    assert coords.tolist() == [[10.0, 20.0]] and names is None
    for text, problem in (
        ("x,y\n1,2\n", "LAT and LON"),
        ("LAT,LON\n", "no coordinates"),
        ("LAT,LON\n1,abc\n", "line 2"),
        ("LAT,LON\n95,0\n", "line 2"),
        ("", "empty"),
    ):
        p.write_text(text)
        with pytest.raises(InputError, match=problem):
            read_coords_csv(p)
    with pytest.raises(InputError):
        read_coords_csv(tmp_path / "missing.csv")


def test_gallery_add_list_remove_via_cli(tiny_home_copy: Path, tmp_path: Path) -> None:
    from geoguess.cli import app
    from geoguess.geolocator import Geolocator
    from geoguess.store import get_model, verify_model

    csv_path = _write_cities(tmp_path / "cities.csv")
    res = runner.invoke(app, ["models", "gallery", "add", "cities", str(csv_path)])
    assert res.exit_code == 0, res.output

    res = runner.invoke(app, ["models", "gallery", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in map(json.loads, res.stdout.strip().splitlines())}
    assert rows["cities"]["size"] == 40 and rows["cities"]["custom"] and rows["cities"]["trees"]
    assert rows["mp16-100k"]["default"]

    model = get_model("tiny")
    entry = model.manifest.galleries["cities"]
    assert all(
        rel in model.manifest.files
        for rel in [
            entry.coords,
            entry.embeddings,
            entry.names,
            *list(entry.trees[entry.default_tree].files),
        ]
    )
    _, problems = verify_model("tiny")
    assert problems == []

    # The gallery holds real location embeddings: a city's own embedding finds that city.
    geo = Geolocator.load("tiny", gallery="cities", search="tree")
    query = geo.embed_locations(np.array([[35.6762, 139.6503]]))
    best = geo.predictions(geo.search(query, 1)[0])[0]
    assert abs(best.lat - 35.68) < 1 and abs(best.lon - 139.65) < 1
    names = np.load(model.file(entry.names), allow_pickle=False)
    assert names[best.index].startswith("Tokyo")
    flat = Geolocator.load("tiny", gallery="cities", search="flat")
    assert flat.search(query, 1)[0].indices[0] == best.index

    # Adding it again needs --force.
    res = runner.invoke(app, ["models", "gallery", "add", "cities", str(csv_path)])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(
        app, ["models", "gallery", "add", "cities", str(csv_path), "--force", "--levels", "3"]
    )
    assert res.exit_code == 0, res.output
    assert get_model("tiny").manifest.galleries["cities"].default_tree == "3"

    res = runner.invoke(app, ["models", "gallery", "remove", "cities", "--yes"])
    assert res.exit_code == 0, res.output
    model = get_model("tiny")
    assert "cities" not in model.manifest.galleries
    assert not any(rel.startswith("galleries/cities/") for rel in model.manifest.files)
    assert not (model.path / "galleries" / "cities").exists()
    assert not [p for p in (model.path / "galleries").iterdir() if p.name.startswith(".")]
    _, problems = verify_model("tiny")
    assert problems == []


def test_locate_with_a_custom_gallery(tiny_home_copy: Path, tmp_path, photos_dir) -> None:
    from geoguess.cli import app

    csv_path = _write_cities(tmp_path / "cities.csv", n=16)
    assert runner.invoke(app, ["models", "gallery", "add", "few", str(csv_path)]).exit_code == 0
    photo = str(photos_dir / "es_Canon_40D.jpg")
    for search in ("tree", "flat"):
        res = runner.invoke(
            app, ["locate", "--gallery", "few", "--search", search, "--json", "-k", "2", photo]
        )
        assert res.exit_code == 0, res.output
        preds = json.loads(res.stdout.strip().splitlines()[-1])["predictions"]
        assert len(preds) == 2
        assert any(
            abs(p["lat"] - c[1]) < 1.5 and abs(p["lon"] - c[2]) < 1.5 for p in preds for c in CITIES
        )


def test_gallery_errors(tiny_home_copy: Path, tmp_path: Path) -> None:
    from geoguess.cli import app
    from geoguess.galleries import add_gallery, remove_gallery

    with pytest.raises(UsageError, match="default gallery"):
        remove_gallery("mp16-100k")
    with pytest.raises(UsageError, match="no gallery"):
        remove_gallery("nope")
    with pytest.raises(UsageError, match="invalid gallery name"):
        add_gallery("../evil", _write_cities(tmp_path / "c.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("LAT,LON\n1,2\n100,3\n")
    res = runner.invoke(app, ["models", "gallery", "add", "bad", str(bad)])
    assert res.exit_code == 1 and "line 3" in res.output
    from geoguess.store import get_model

    assert "bad" not in get_model("tiny").manifest.galleries
