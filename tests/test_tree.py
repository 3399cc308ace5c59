"""The cluster tree: k-means, building (deterministic), beam search, install, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geoguess.bench_search import held_out_split, proxy_queries
from geoguess.clustering import kmeans, sphere_mean
from geoguess.errors import SetupError, UsageError
from geoguess.search import FlatSearch
from geoguess.tree import Tree, TreeConfig, auto_levels, parse_levels
from geoguess.tree_build import build_tree
from geoguess.tree_search import TreeSearch

runner = CliRunner()
LOGIT_SCALE = 39.69


def _gallery(home: Path) -> tuple[np.ndarray, np.ndarray]:
    g = home / "models" / "tiny" / "galleries" / "mp16-100k"
    return np.load(g / "coords.npy"), np.load(g / "embeddings.npy", mmap_mode="r")


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def _proxy(clean: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    return proxy_queries(clean, cosine, seed)


# --- pieces ------------------------------------------------------------------------------


def test_parse_levels() -> None:
    assert parse_levels("800") == (800,)
    assert parse_levels("20,100") == (20, 100)
    assert parse_levels([200, 10]) == (200, 10)
    for bad in ("", "abc", "1", "20,0", "2,2,2,2,2"):
        with pytest.raises(UsageError):
            parse_levels(bad)
    assert TreeConfig("20,100").key == "20,100"
    assert TreeConfig("800", features="capsules", node="gps").key == "800+capsules+gps"
    assert TreeConfig("20,100").dirname == "tree-20x100"


def test_auto_levels_scale_with_the_gallery() -> None:
    small, mid, large = auto_levels(500), auto_levels(100_000), auto_levels(1_000_000)
    assert len(small) == 1 and small[0] >= 2
    for n, levels in ((100_000, mid), (1_000_000, large)):
        assert int(np.prod(levels)) * 10 <= n <= int(np.prod(levels)) * 100  # 10-100 per leaf


def test_kmeans_is_deterministic_and_leaves_no_empty_cluster() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 8)) * 10
    x = (centres[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 8))).astype(np.float32)
    a_labels, a_centres = kmeans(x, 6, seed=1)
    b_labels, b_centres = kmeans(x, 6, seed=1)
    assert np.array_equal(a_labels, b_labels) and np.array_equal(a_centres, b_centres)
    assert set(np.unique(a_labels)) == set(range(len(a_centres)))
    # Well separated blobs are found: every cluster is (almost) one blob.
    assert len(a_centres) == 6
    # Fewer distinct points than clusters: no empty cluster, no crash.
    dup = np.repeat(x[:3], 50, axis=0)
    labels, cents = kmeans(dup, 10, seed=0)
    assert len(cents) == 3 and set(np.unique(labels)) == {0, 1, 2}


def test_sphere_mean_handles_the_antimeridian() -> None:
    pts = np.array([[-17.0, 179.0], [-17.0, -179.0], [10.0, 20.0]], dtype=np.float32)
    means = sphere_mean(pts, np.array([0, 0, 1]), 2)
    assert abs(abs(means[0, 1]) - 180.0) < 1e-3  # not 0, as averaging degrees would give
    assert means[0, 0] == pytest.approx(-17.0, abs=0.05)
    assert means[1] == pytest.approx([10.0, 20.0], abs=1e-4)


# --- building and searching on real location embeddings ----------------------------------


@pytest.fixture(scope="module")
def small_gallery(tiny_model_home: Path) -> tuple[np.ndarray, np.ndarray]:
    coords, emb = _gallery(tiny_model_home)
    return coords[:6000], np.asarray(emb[:6000])


def test_build_twice_gives_identical_files(small_gallery, tmp_path: Path) -> None:
    _, emb = small_gallery
    cfg = TreeConfig("12,10")
    meta_a = build_tree(tmp_path / "a", emb, cfg)
    meta_b = build_tree(tmp_path / "b", emb, cfg)
    assert meta_a == meta_b
    digests = _digests(tmp_path / "a")
    assert digests == _digests(tmp_path / "b")
    assert set(digests) == set(meta_a["files"])
    assert {"hnsw-0.bin", "hnsw-1.bin", "leaves.npy", "tree.json"} <= set(digests)


def test_tree_layout(small_gallery, tmp_path: Path) -> None:
    _, emb = small_gallery
    build_tree(tmp_path / "t", emb, TreeConfig("8,5"))
    tree = Tree.load(tmp_path / "t")
    assert tree.size == len(emb) and tree.depth == 2
    # Leaves are the gallery rows, reordered cluster by cluster, in fp16.
    assert tree.leaves.dtype == np.float16
    assert np.array_equal(np.sort(tree.leaf_rows), np.arange(len(emb)))
    assert np.array_equal(np.asarray(tree.leaves), emb[tree.leaf_rows])
    assert tree.leaf_offsets[0] == 0 and tree.leaf_offsets[-1] == len(emb)
    assert tree.children[1] is not None and tree.children[1][-1] == len(tree.nodes[1])
    # Node keys are the normalised means of their members.
    first = slice(tree.leaf_offsets[0], tree.leaf_offsets[1])
    mean = np.asarray(tree.leaves[first], dtype=np.float64).sum(0)
    np.testing.assert_allclose(tree.nodes[1][0], mean / np.linalg.norm(mean), atol=1e-3)
    # hnswlib's index of a level finds that level's nodes.
    labels, _ = tree.hnsw(0).knn_query(tree.nodes[0][3], k=1)
    assert labels[0, 0] == 3


def test_beam_over_all_nodes_equals_flat(small_gallery, tmp_path: Path) -> None:
    coords, emb = small_gallery
    build_tree(tmp_path / "t", emb, TreeConfig("6,4"))
    tree = Tree.load(tmp_path / "t")
    everything = TreeSearch(tree, LOGIT_SCALE, beam=10_000)
    flat = FlatSearch(emb, LOGIT_SCALE)
    queries = _proxy(np.asarray(emb[:40], dtype=np.float32), 0.45, seed=5)
    for t, f in zip(everything.search(queries, 5), flat.search(queries, 5)):
        assert t.compared == len(tree.nodes[0]) + len(tree.nodes[1]) + len(emb)
        assert len(t.support_indices) == len(emb)
        # Rows may differ only between identical points (the gallery repeats some).
        assert np.array_equal(coords[t.indices], coords[f.indices])
        np.testing.assert_allclose(t.probabilities, f.probabilities, rtol=1e-4)
        order = np.argsort(t.support_indices)
        np.testing.assert_allclose(t.support_probs[order], f.support_probs, rtol=1e-4, atol=1e-9)


def test_beam_search_agrees_with_flat_on_proxy_queries(tiny_model_home: Path, tmp_path) -> None:
    coords, emb = _gallery(tiny_model_home)
    coords, emb = coords[:30000], np.asarray(emb[:30000])
    query_rows, index_rows = held_out_split(coords, 200, seed=0)
    queries = _proxy(np.asarray(emb[query_rows], np.float32), 0.45, seed=1)
    index = emb[index_rows]
    build_tree(tmp_path / "t", index, TreeConfig(auto_levels(len(index))))
    tree = Tree.load(tmp_path / "t")
    truth = [r.indices[0] for r in FlatSearch(index, LOGIT_SCALE).search(queries, 1)]
    agreement, share = {}, {}
    for beam in (1, 24):
        res = TreeSearch(tree, LOGIT_SCALE, beam=beam).search(queries, 1)
        same = [
            np.array_equal(coords[index_rows][r.indices[0]], coords[index_rows][t])
            for r, t in zip(res, truth)
        ]
        agreement[beam] = float(np.mean(same))
        share[beam] = float(np.mean([r.compared for r in res])) / len(index)
    # Sane floors (the benchmark measures the real figures): beam search recovers most
    # of what the greedy walk loses, while computing a small share of the dot products.
    assert agreement[24] >= 0.93
    assert agreement[24] > agreement[1]
    assert share[24] < 0.1
    assert share[1] < share[24]


def test_hnsw_top_level_descends_like_exact_scoring(small_gallery, tmp_path: Path) -> None:
    _, emb = small_gallery
    build_tree(tmp_path / "t", emb, TreeConfig("300,4"))
    tree = Tree.load(tmp_path / "t")
    queries = _proxy(np.asarray(emb[:60], dtype=np.float32), 0.45, seed=2)
    exact = TreeSearch(tree, LOGIT_SCALE, beam=8, top="exact")
    # ef above the level's width: hnswlib's graph search finds the true best nodes.
    hnsw = TreeSearch(tree, LOGIT_SCALE, beam=8, top="hnsw", ef=400)
    assert (exact.top, hnsw.top) == ("exact", "hnsw")
    exact_nodes, spent = exact.top_nodes(queries)
    hnsw_nodes, hnsw_spent = hnsw.top_nodes(queries)
    assert spent == 300 and hnsw_spent == 0
    assert np.mean([set(a) == set(b) for a, b in zip(exact_nodes, hnsw_nodes)]) >= 0.95
    same = 0
    for e, h in zip(exact.search(queries, 3), hnsw.search(queries, 3)):
        same += np.array_equal(e.indices, h.indices)
        # compared counts geoguess's own dot products: hnswlib's are not reported.
        assert h.compared == e.compared - 300 or not np.array_equal(e.indices, h.indices)
    assert same >= 57


def test_auto_top_level_route_follows_the_crossover(small_gallery, tmp_path, monkeypatch) -> None:
    import geoguess.tree_search

    _, emb = small_gallery
    build_tree(tmp_path / "t", emb, TreeConfig("50,4"))
    tree = Tree.load(tmp_path / "t")
    monkeypatch.setattr(geoguess.tree_search, "HNSW_MIN_TOP_NODES", 50)
    assert TreeSearch(tree, LOGIT_SCALE).top == "hnsw"
    monkeypatch.setattr(geoguess.tree_search, "HNSW_MIN_TOP_NODES", 51)
    assert TreeSearch(tree, LOGIT_SCALE).top == "exact"
    with pytest.raises(UsageError):
        TreeSearch(tree, LOGIT_SCALE, top="sideways")


def test_without_hnswlib_trees_build_and_search_exactly(
    small_gallery, tmp_path: Path, monkeypatch
) -> None:
    import sys

    import geoguess.tree_search

    _, emb = small_gallery
    cfg = TreeConfig("12,10")
    with_hnsw = build_tree(tmp_path / "a", emb, cfg)
    monkeypatch.setitem(sys.modules, "hnswlib", None)  # import hnswlib now fails
    monkeypatch.setattr(geoguess.tree_search, "HNSW_MIN_TOP_NODES", 2)
    without = build_tree(tmp_path / "b", emb, cfg)
    assert not any(f.startswith("hnsw-") for f in without["files"])
    assert not list((tmp_path / "b").glob("hnsw-*"))
    # Everything else is the same, byte for byte (tree.json lists the files).
    shared = set(without["files"]) - {"tree.json"}
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert {f: a[f] for f in shared} == {f: b[f] for f in shared}
    assert set(with_hnsw["files"]) - set(without["files"]) == {"hnsw-0.bin", "hnsw-1.bin"}
    for folder in ("a", "b"):  # an index on disk is no use without hnswlib either
        tree = Tree.load(tmp_path / folder)
        search = TreeSearch(tree, LOGIT_SCALE, beam=4)
        assert search.top == "exact"
        assert len(search.search(np.asarray(emb[:2], np.float32), 2)) == 2
        with pytest.raises(SetupError, match="hnsw"):
            TreeSearch(tree, LOGIT_SCALE, top="hnsw")


def test_published_scheme_builds_with_the_location_encoder(tiny_model_home, tmp_path) -> None:
    from geoguess.encoders import LocationEncoder

    coords, emb = _gallery(tiny_model_home)
    coords, emb = coords[:1500], np.asarray(emb[:1500])
    encoder = LocationEncoder(tiny_model_home / "models" / "tiny" / "location_encoder.onnx", "cpu")
    cfg = TreeConfig("5,4", features="capsules", node="gps")
    meta = build_tree(tmp_path / "t", emb, cfg, coords=coords, location_encoder=encoder)
    assert meta["features"] == "capsules" and meta["node"] == "gps"
    tree = Tree.load(tmp_path / "t")
    # GPS keys are location embeddings of real places: unit vectors, like the gallery's.
    np.testing.assert_allclose(np.linalg.norm(tree.nodes[0], axis=1), 1.0, atol=1e-5)
    res = TreeSearch(tree, LOGIT_SCALE, beam=2).search(np.asarray(emb[:3], np.float32), 3)
    assert all(len(r.indices) == 3 for r in res)
    with pytest.raises(UsageError):
        build_tree(tmp_path / "u", emb, cfg)  # needs coordinates and the encoder


# --- model sets ----------------------------------------------------------------------------


def test_built_model_set_lists_and_verifies_its_tree(tiny_home: Path) -> None:
    from geoguess.store import get_model, verify_model

    model = get_model("tiny")
    entry = model.manifest.galleries["mp16-100k"]
    tree_entry = entry.trees[entry.default_tree]
    assert tree_entry.levels == tuple(auto_levels(entry.size))
    for rel in tree_entry.files:
        assert rel in model.manifest.files
        assert rel.startswith(tree_entry.dir + "/")
    _, problems = verify_model("tiny")
    assert problems == []


def test_tampered_tree_file_is_refused(tiny_home_copy: Path) -> None:
    from geoguess.errors import ModelIntegrityError
    from geoguess.geolocator import Geolocator

    model_dir = tiny_home_copy / "models" / "tiny"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    tree_dir = manifest["galleries"]["mp16-100k"]["trees"][
        manifest["galleries"]["mp16-100k"]["default_tree"]
    ]["dir"]
    nodes = model_dir / tree_dir / "nodes-0.npy"
    data = bytearray(nodes.read_bytes())
    data[-1] ^= 0xFF
    nodes.write_bytes(bytes(data))
    geo = Geolocator.load("tiny", search="tree")
    with pytest.raises(ModelIntegrityError):
        geo.search(np.ones((1, 512), np.float32) / np.sqrt(512), 1)


def test_models_tree_rebuilds_identically_and_updates_the_manifest(tiny_home_copy: Path) -> None:
    from geoguess.cli import app
    from geoguess.store import get_model, verify_model

    res = runner.invoke(app, ["models", "tree", "--levels", "10,8"])
    assert res.exit_code == 0, res.output
    first = get_model("tiny").manifest
    entry = first.galleries["mp16-100k"]
    assert entry.default_tree == "10,8"
    assert len(entry.trees) == 2  # the built-in tree stays
    files = {rel: first.files[rel].sha256 for rel in entry.trees["10,8"].files}
    assert len(files) == 9  # tree.json, leaves, offsets, rows, 2 x (nodes, hnsw), children
    res = runner.invoke(app, ["models", "tree", "--levels", "10,8", "--no-default"])
    assert res.exit_code == 0, res.output
    again = get_model("tiny").manifest
    assert {rel: again.files[rel].sha256 for rel in files} == files
    _, problems = verify_model("tiny")
    assert problems == []


def test_search_tree_end_to_end(tiny_home_copy: Path, photos_dir: Path) -> None:
    from geoguess.cli import app
    from geoguess.geolocator import Geolocator

    photo = str(photos_dir / "es_Canon_40D.jpg")
    res = runner.invoke(app, ["locate", "--search", "tree", "--json", "-k", "3", photo])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(record["predictions"]) == 3
    assert record["spread_km"]  # computed from the reranked candidates
    res = runner.invoke(app, ["locate", "--beam", "2", "--json", photo])
    assert res.exit_code == 0, res.output

    from geoguess.tree_search import TreeSearch as TS

    geo = Geolocator.load("tiny", search="tree", beam=3)
    assert isinstance(geo.searcher, TS) and geo.searcher.beam == 3
    assert isinstance(Geolocator.load("tiny", search="flat").searcher, FlatSearch)
    # A location embedding is found by the tree exactly where flat search finds it.
    query = geo.embed_locations(np.array([[48.8566, 2.3522], [-33.87, 151.21]]))
    tree_res, flat_res = geo.searcher.search(query, 1), geo.flat.search(query, 1)
    coords = geo.gallery.coords
    for t, f in zip(tree_res, flat_res):
        assert np.array_equal(coords[t.indices[0]], coords[f.indices[0]])
    with pytest.raises(UsageError):
        Geolocator.load("tiny", search="sideways")


def test_auto_search_uses_the_tree_for_large_galleries(tiny_home: Path, monkeypatch) -> None:
    import geoguess.model
    from geoguess.geolocator import Geolocator
    from geoguess.tree_search import TreeSearch as TS

    assert isinstance(Geolocator.load("tiny").searcher, FlatSearch)  # 100K: exact
    assert isinstance(Geolocator.load("tiny", beam=8).searcher, TS)  # a beam asks for it
    monkeypatch.setattr(geoguess.model, "AUTO_TREE_MIN_POINTS", 50_000)
    assert isinstance(Geolocator.load("tiny").searcher, TS)


def test_search_tree_without_a_tree_is_a_usage_error(tiny_home_copy: Path) -> None:
    from geoguess.galleries import _rewrite_manifest
    from geoguess.geolocator import Geolocator

    def drop(raw: dict) -> None:
        raw["galleries"]["mp16-100k"].pop("default_tree")

    _rewrite_manifest(tiny_home_copy / "models" / "tiny", drop)
    with pytest.raises(UsageError, match="models tree"):
        _ = Geolocator.load("tiny", search="tree").searcher
    assert isinstance(Geolocator.load("tiny").searcher, FlatSearch)
