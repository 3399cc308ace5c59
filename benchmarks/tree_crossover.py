"""Where an hnswlib query beats exact scoring of a tree level's node keys.

For level widths from a few hundred to tens of thousands of nodes, one query asks for
the best ``k`` nodes (``k`` = the beam) two ways, as ``TreeSearch.top_nodes`` does:

* exact: one matrix product with every key (fp32, BLAS), then the top ``k``;
* hnswlib: ``knn_query(k)`` on the level's index (built as trees build it: M=16,
  ef_construction=100, one thread), at the smallest ``ef`` of a ladder whose recall of
  the exact top ``k`` is at least ``--recall`` (0.99).

Two kinds of keys: **clustered**, the last level's keys of trees built over a gallery
of location embeddings (``--scale`` points: the model set's real gallery plus jittered
copies embedded with its real location encoder, as ``benchmarks/search.py`` makes
them) queried with proxy queries (held-out points plus noise, cosine ``--cosine``);
and **random** unit vectors of the same dimension, queried with random unit vectors
(hnswlib's hard case). Times are CPU microseconds per query in a fresh single-core
process; hnswlib's distance computations are counted by replaying its search
(``benchmarks/search.py``'s HnswGraph).

    python benchmarks/tree_crossover.py --model random-tiny --scale 1000000 \\
        --workdir /tmp/bench [--widths 200,500,...] [--beam 24] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import HnswGraph, ResearchBench, ResearchOptions

from geoguess.bench_search import in_child, peak_rss_mb
from geoguess.search import top_indices
from geoguess.tree import Tree, TreeConfig, hnsw_file

DEFAULT_WIDTHS = (200, 500, 1000, 2000, 5000, 10000, 20000, 50000)
BATCH = 16
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)


def child_time(
    keys_path: str, index_path: str, queries_path: str, k: int, ef: int, passes: int = 5
) -> dict:
    """CPU microseconds per query: exact top-k over the keys (one query at a time and in
    batches of BATCH), and hnswlib's knn_query.

    Passes alternate between the two, after one warm-up pass each, and the median pass
    counts, so that a busy spell of a shared machine hits both alike and is discarded.
    """
    import hnswlib

    keys = np.ascontiguousarray(np.load(keys_path), dtype=np.float32)
    queries = np.load(queries_path)
    index = hnswlib.Index(space="ip", dim=keys.shape[1])
    index.load_index(index_path, max_elements=len(keys))
    index.set_num_threads(1)
    index.set_ef(ef)

    def exact_pass() -> float:
        start = time.process_time()
        for q in queries:
            top_indices((q[None] @ keys.T)[0], k)
        return time.process_time() - start

    def batch_pass() -> float:
        # What TreeSearch.search does for a batch (geoguess locates 16 photos at a time).
        start = time.process_time()
        for s in range(0, len(queries), BATCH):
            for row in queries[s : s + BATCH] @ keys.T:
                top_indices(row, k)
        return time.process_time() - start

    def hnsw_pass() -> float:
        start = time.process_time()
        for q in queries:
            index.knn_query(q, k=k, num_threads=1)
        return time.process_time() - start

    exact_pass(), batch_pass(), hnsw_pass()
    times: dict[str, list[float]] = {"exact": [], "exact_batch": [], "hnsw": []}
    for _ in range(passes):
        times["exact"].append(exact_pass())
        times["exact_batch"].append(batch_pass())
        times["hnsw"].append(hnsw_pass())
    out: dict[str, Any] = {
        f"{name}_us": float(np.median(t)) / len(queries) * 1e6 for name, t in times.items()
    }
    out["rss_mb"] = peak_rss_mb()
    return out


def recall_at(index: Any, queries: np.ndarray, exact: np.ndarray, k: int, ef: int) -> float:
    index.set_ef(max(ef, k))
    labels, _ = index.knn_query(queries, k=k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(labels, exact)]))


def measure(
    kind: str,
    keys: np.ndarray,
    index_path: Path,
    queries: np.ndarray,
    k: int,
    target: float,
    work: Path,
    n_replay: int,
) -> dict[str, Any]:
    import hnswlib

    keys = np.ascontiguousarray(keys, dtype=np.float32)
    exact = np.stack([top_indices(row, k) for row in queries @ keys.T])
    index = hnswlib.Index(space="ip", dim=keys.shape[1])
    index.load_index(str(index_path), max_elements=len(keys))
    ef, recall, ladder = None, 0.0, {}
    for step in EF_LADDER:
        if step < k:
            continue
        recall = ladder[step] = recall_at(index, queries, exact, k, step)
        ef = step
        if recall >= target:
            break
    keys_path, queries_path = work / f"keys-{kind}.npy", work / f"queries-{kind}.npy"
    np.save(keys_path, keys)
    np.save(queries_path, queries)
    timed = in_child(child_time, str(keys_path), str(index_path), str(queries_path), k, ef)
    graph = HnswGraph(index_path, keys.shape[1])
    dists = np.mean([graph.search(q, ef, k)[1] for q in queries[:n_replay]])
    return {
        "keys": kind,
        "width": len(keys),
        "k": k,
        "exact_us": timed["exact_us"],
        "exact_batch_us": timed["exact_batch_us"],
        "hnsw_us": timed["hnsw_us"],
        "ef": ef,
        "recall": recall,
        "hnsw_distances": float(dists),
        "exact_over_hnsw": timed["exact_us"] / timed["hnsw_us"],
        "recall_by_ef": ladder,
    }


def _shape(width: int) -> str:
    """Two levels whose second has about ``width`` nodes (k-means per parent is cheap)."""
    top = max(2, round(np.sqrt(width)))
    return f"{top},{max(2, round(width / top))}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--gallery")
    ap.add_argument("--scale", type=int, default=1_000_000)
    ap.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)))
    ap.add_argument("--beam", type=int, default=24, help="k: the nodes a query keeps")
    ap.add_argument("--recall", type=float, default=0.99)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--cosine", type=float, default=0.45)
    ap.add_argument("--kinds", default="clustered,random")
    ap.add_argument("--replay-queries", type=int, default=50)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    kinds = [k for k in args.kinds.split(",") if k.strip()]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)

    from geoguess.cli.common import RichReporter
    from geoguess.tree_build import build_tree, save_hnsw

    rows = []
    rep = RichReporter()
    if "clustered" in kinds:
        bench = ResearchBench(
            ResearchOptions(
                model=args.model,
                gallery=args.gallery,
                configs=("auto",),  # the gallery only: no capsule embeddings
                scale=args.scale,
                cosines=(args.cosine,),
                n_queries=args.queries,
                seed=args.seed,
                workdir=work,
            ),
            rep,
            lambda row: None,
        )
        gallery, query_sets, _ = bench.prepare(work)
        emb = np.load(gallery.emb_path, mmap_mode="r")
        queries = query_sets[0].vectors
    for width in widths:
        if "clustered" in kinds:
            tree_dir = work / f"crossover-tree-{gallery.size}-{_shape(width).replace(',', 'x')}"
            if not (tree_dir / "tree.json").is_file():
                with rep.task(f"Building tree {_shape(width)} over {gallery.size:,} points"):
                    build_tree(tree_dir, emb, TreeConfig(_shape(width), seed=args.seed))
            tree = Tree.load(tree_dir)
            last = tree.depth - 1
            with rep.task(f"Measuring {len(tree.nodes[last]):,} clustered keys"):
                row = measure(
                    "clustered",
                    tree.nodes[last],
                    tree_dir / hnsw_file(last),
                    queries,
                    args.beam,
                    args.recall,
                    work,
                    args.replay_queries,
                )
            rows.append(row)
            _print(row, args.json)
        if "random" in kinds:
            rng = np.random.default_rng(args.seed + width)
            keys = rng.standard_normal((width, 512)).astype(np.float32)
            keys /= np.linalg.norm(keys, axis=1, keepdims=True)
            rq = rng.standard_normal((args.queries, 512)).astype(np.float32)
            rq /= np.linalg.norm(rq, axis=1, keepdims=True)
            path = work / f"random-{width}.bin"
            with rep.task(f"Measuring {width:,} random keys"):
                save_hnsw(path, keys, args.seed)
                row = measure(
                    "random", keys, path, rq, args.beam, args.recall, work, args.replay_queries
                )
            path.unlink()
            rows.append(row)
            _print(row, args.json)
    if not args.json:
        print(format_rows(rows))
    return 0


_HEAD = (
    "keys",
    "width",
    "k",
    "exact us",
    f"exact us (batch {BATCH})",
    "hnsw us",
    "ef",
    "recall",
    "hnsw dists",
    "exact/hnsw",
)


def format_rows(rows: list[dict[str, Any]]) -> str:
    cells = [list(_HEAD)] + [
        [
            r["keys"],
            f"{r['width']:,}",
            str(r["k"]),
            f"{r['exact_us']:,.1f}",
            f"{r['exact_batch_us']:,.1f}",
            f"{r['hnsw_us']:,.1f}",
            str(r["ef"]),
            f"{r['recall']:.3f}",
            f"{r['hnsw_distances']:,.0f}",
            f"{r['exact_over_hnsw']:.2f}",
        ]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEAD))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def _print(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
    else:
        print(format_rows([row]).splitlines()[1], file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
