"""A coordinate the gallery holds several times is one candidate, its copies' mass summed;
``--raw-candidates`` keeps GeoCLIP's raw rows (the reference test runs on that flag)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.search import DuplicateGroups, SearchResult, merge_duplicates


def test_groups_and_merging_by_hand() -> None:
    coords = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [1, 2]], dtype=np.float32)
    groups = DuplicateGroups.of(coords)
    assert groups is not None
    assert len(groups.first) == 3
    assert groups.group[0] == groups.group[2] == groups.group[4] != groups.group[1]
    probs = np.array([0.1, 0.35, 0.1, 0.3, 0.15])
    raw = SearchResult(np.array([1, 3, 4]), probs[[1, 3, 4]], compared=5, support_probs=probs)
    merged = merge_duplicates(raw, groups, 3)
    assert merged.indices.tolist() == [0, 1, 3]  # (1, 2) holds 0.35 in three copies
    np.testing.assert_allclose(merged.probabilities, [0.35, 0.35, 0.3])
    assert merged.support_probs is probs
    # Without the support: merged among the candidates given.
    bare = SearchResult(np.array([0, 2, 3]), np.array([0.3, 0.2, 0.1]), compared=5)
    merged = merge_duplicates(bare, groups, 5)
    assert merged.indices.tolist() == [0, 3]
    np.testing.assert_allclose(merged.probabilities, [0.5, 0.1])
    assert DuplicateGroups.of(coords[:2]) is None


def test_gallery_duplicates_are_merged(tiny_geo) -> None:
    coords = tiny_geo.gallery.coords
    groups = tiny_geo.duplicate_groups
    sizes = np.bincount(groups.group)
    assert len(coords) - len(groups.first) > 5000  # MP16-100K repeats thousands of points
    g = int(np.argmax(sizes))
    copies = np.flatnonzero(groups.group == g)
    query = np.asarray(tiny_geo.gallery.embeddings[copies[0]], dtype=np.float32)[None, :]
    query /= np.linalg.norm(query)
    merged = tiny_geo.search(query, 5)[0]
    tiny_geo.merge_duplicates = False
    try:
        raw = tiny_geo.search(query, 5)[0]
    finally:
        tiny_geo.merge_duplicates = True
    raw_coords = [tuple(coords[i]) for i in raw.indices]
    assert len(set(raw_coords)) < 5  # copies of one point crowd the raw top 5
    merged_coords = [tuple(coords[i]) for i in merged.indices]
    assert len(set(merged_coords)) == 5
    assert merged_coords[0] == tuple(coords[copies[0]])
    np.testing.assert_allclose(merged.probabilities[0], raw.support_probs[copies].sum(), rtol=1e-6)
    assert merged.probabilities[0] >= raw.probabilities[0]
    assert np.all(np.diff(merged.probabilities) <= 0)


def test_cli_raw_candidates_flag(tiny_home: Path, photos_dir: Path) -> None:
    photo = str(photos_dir / "gps_DSCN0010.jpg")
    merged = json.loads(CliRunner().invoke(app, [photo, "--json", "--top-k", "10"]).stdout)
    raw = json.loads(
        CliRunner().invoke(app, [photo, "--json", "--top-k", "10", "--raw-candidates"]).stdout
    )
    m = [(p["lat"], p["lon"]) for p in merged["predictions"]]
    assert len(set(m)) == len(m) == 10
    assert merged["predictions"][0]["probability"] >= raw["predictions"][0]["probability"] - 1e-9
    r = [(p["lat"], p["lon"]) for p in raw["predictions"]]
    if m[0] == r[0]:  # the spread is over the same mass, around the best guess
        assert merged["spread_km"] == raw["spread_km"]
