"""`geoguess bench search` (geoguess.bench_search) and the research harness built on it
(benchmarks/search.py, benchmarks/tree_crossover.py)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geoguess.errors import UsageError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark(name: str):
    # Child processes (spawn) import the module by name too: it must be on sys.path.
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def test_bench_search_measures_trees_against_flat(tiny_home: Path) -> None:
    from geoguess.bench_search import SearchBenchOptions, run_search_bench

    rows = run_search_bench(
        SearchBenchOptions(
            model="tiny",
            configs=("auto", "8+capsules+gps"),
            beams=(1, 4),
            cosines=(0.45,),
            n_queries=20,
            limit=3000,
            flat_queries=5,
        )
    )
    assert {r.method for r in rows} == {"flat", "tree"}
    for r in rows:
        d = r.to_dict()
        assert d["queries"] == "proxy" and d["gallery_size"] < 3000
        assert d["proxy_cosine"] == 0.45 and 0.35 < d["measured_cosine"] < 0.55
        assert 0 <= d["agreement"] <= 1 and 0 < d["share_compared"] <= 1
    trees = [r for r in rows if r.method == "tree" and r.levels.startswith("8+capsules")]
    assert [r.beam for r in trees] == [1, 4] and {r.top for r in trees} == {"exact"}
    assert trees[1].share_compared > trees[0].share_compared
    assert all(r.us_per_query > 0 and r.rss_mb > 0 and r.disk_mb > 0 for r in trees)


def test_flat_timing_can_be_skipped_and_agreement_is_still_exact(tiny_home: Path) -> None:
    """flat_queries=0, for galleries whose float32 copy would not fit in memory: no flat
    row, while tree rows are still compared with exact search."""
    from geoguess.bench_search import SearchBenchOptions, run_search_bench

    options = dict(model="tiny", configs=("auto",), beams=(1,), cosines=(0.45,))
    options.update(n_queries=20, limit=3000)
    timed = run_search_bench(SearchBenchOptions(**options, flat_queries=5))
    untimed = run_search_bench(SearchBenchOptions(**options, flat_queries=0))
    assert [r.method for r in untimed] == ["tree"]
    tree = [r for r in timed if r.method == "tree"]
    assert [r.agreement for r in untimed] == [r.agreement for r in tree]


def test_bench_search_cli_prints_the_table(tiny_home: Path) -> None:
    from geoguess.cli import app

    args = ["bench", "search", "--model", "tiny", "--levels", "auto", "--beams", "2"]
    args += ["--cosines", "0.7", "--n-queries", "10", "--limit", "2000"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "top-1 = flat" in res.stdout and "top level" in res.stdout


def test_hnsw_replay_counts_and_matches_hnswlib(tmp_path: Path) -> None:
    hnswlib = pytest.importorskip("hnswlib")
    search = _benchmark("search")

    rng = np.random.default_rng(0)
    data = rng.normal(size=(3000, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = hnswlib.Index(space="ip", dim=32)
    index.init_index(max_elements=3000, ef_construction=100, M=8, random_seed=1)
    index.add_items(data, np.arange(3000), num_threads=1)
    path = tmp_path / "h.bin"
    index.save_index(str(path))
    graph = search.HnswGraph(path, 32)
    queries = rng.normal(size=(30, 32)).astype(np.float32)
    for ef, k in ((10, 1), (50, 1), (60, 24)):
        index.set_ef(ef)
        labels, _ = index.knn_query(queries, k=k, num_threads=1)
        counts, same = [], 0
        for q, lab in zip(queries, labels):
            got, count = graph.search(q, ef, k)
            same += got == lab.tolist()
            counts.append(count)
        assert same >= 29
        assert 10 < np.mean(counts) < 3000


def test_research_harness_runs_end_to_end(tiny_home: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("hnswlib")
    search = _benchmark("search")

    args = ["--model", "tiny", "--levels", "auto", "--levels", "8+capsules+gps"]
    args += ["--beams", "1,4", "--tops", "exact,hnsw", "--cosines", "0.45"]
    args += ["--n-queries", "20", "--limit", "3000", "--scale", "3500", "--ef", "16"]
    args += ["--replay-queries", "5", "--flat-queries", "5", "--compare-nodes"]
    args += ["--workdir", str(tmp_path / "work"), "--json"]
    assert search.main(args) == 0
    rows = [search.BenchRow(**json.loads(line)) for line in capsys.readouterr().out.splitlines()]
    by_method: dict[str, list] = {}
    for r in rows:
        by_method.setdefault(r.method, []).append(r)
    assert set(by_method) == {"flat", "tree", "tree-oracle", "hnsw"}
    assert all(r.gallery_size == 3500 for r in rows)
    trees = [r for r in by_method["tree"] if r.levels.startswith("8+capsules")]
    routes = [(1, "exact"), (1, "hnsw"), (4, "exact"), (4, "hnsw")]
    assert [(r.beam, r.top) for r in trees] == routes
    exact, hnsw = trees[2], trees[3]
    # hnswlib's replayed distance computations are added to the hnsw rows' dot products.
    assert any("replaying 5 queries" in n for n in hnsw.notes)
    assert hnsw.compared_mean > exact.compared_mean - 8
    assert all(r.agreement == 1.0 for r in by_method["tree-oracle"])
    assert by_method["hnsw"][0].compared_mean > 0
    table = search.format_table(rows)
    assert len(table.splitlines()) == len(rows) + 1
    with pytest.raises(UsageError, match="--beams"):
        search.main(["--beams", "1,x"])
