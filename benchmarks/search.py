"""Research harness for tree search: galleries of millions of points, hnswlib baselines.

Everything ``geoguess bench search`` measures (flat search against trees of several
shapes, proxy or real queries, one-core child processes; see geoguess.bench_search),
plus what only the research needs:

* ``--scale N``: the gallery grown to N points, the real points plus jittered copies
  (Gaussian offsets of ``--jitter-km``) embedded with the model set's real location
  encoder; ``--workdir`` keeps them and the trees, and later runs reuse them (their
  rows then have no build time).
* ``--tops exact,hnsw``: every tree descended twice, its top level scored exactly and
  through the level's hnswlib index. hnswlib's Python API does not say how many
  distances it computed, so the harness replays its search on the saved graph
  (:class:`HnswGraph`) for ``--replay-queries`` queries and adds the mean count to the
  dot products of the hnsw rows.
* ``--top-efs``: the hnsw rows again at each of these ef values (TreeSearch's ``ef``),
  to see which ef keeps agreement at a given top-level width.
* ``--ef``: hnswlib over all gallery points as a second baseline (ef values).
* ``--compare-nodes``: our tree routed by the exact cluster score (the best member's),
  a ceiling for any node key, and our tree with mean-GPS keys.

    python benchmarks/search.py --scale 1000000 --levels auto --levels 10000,4 \
        --tops exact,hnsw --beams 24 --cosines 0.45 --ef '' --workdir /tmp/bench
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoguess.bench_search import (
    DEFAULT_CONFIGS,
    BenchRow,
    GalleryFiles,
    QuerySet,
    SearchBench,
    SearchBenchOptions,
    agreement,
    check_options,
    in_child,
    parse_tree_spec,
    peak_rss_mb,
)
from geoguess.encoders import l2_normalize
from geoguess.reporting import Reporter
from geoguess.search import top_indices
from geoguess.tree import Tree, hnsw_file

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
DEFAULT_EFS = (20, 80, 320)


@dataclass
class ResearchOptions(SearchBenchOptions):
    scale: int | None = None  # gallery size: real points plus jittered copies
    jitter_km: float = 10.0
    hnsw_efs: Sequence[int] = DEFAULT_EFS
    replay_queries: int = 100  # queries per run whose hnswlib distances are counted
    top_efs: Sequence[int] = ()  # extra ef values for trees' hnswlib-routed top level
    compare_nodes: bool = False
    workdir: Path | None = None  # keep (and reuse) scaled galleries and indexes here


def jitter_coords(coords: np.ndarray, n: int, km: float, seed: int) -> np.ndarray:
    """``n`` copies of random rows of ``coords`` moved by Gaussian offsets of ``km``."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, len(coords), n)
    deg = km / 111.2
    lat = coords[src, 0].astype(np.float64) + rng.standard_normal(n) * deg
    lat = np.clip(lat, -89.9, 89.9)
    lon = coords[src, 1].astype(np.float64)
    lon = lon + rng.standard_normal(n) * deg / np.cos(np.radians(lat))
    lon = (lon + 180.0) % 360.0 - 180.0
    return np.stack([lat, lon], axis=1).astype(np.float32)


# --- counting hnswlib's distance computations -------------------------------------------


class HnswGraph:
    """Read-only view of a saved hnswlib index (format of hnswlib 0.8), for replays.

    hnswlib's Python API does not report how many distances a query computed. Replaying
    its search (``searchKnn`` + ``searchBaseLayerST``) on the saved graph counts them;
    the replay's answer is checked against hnswlib's own.
    """

    def __init__(self, path: Path, dim: int) -> None:
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        head = raw[:96]
        u64 = head[:48].view(np.uint64)
        self.offset_level0 = int(u64[0])
        n = int(u64[2])
        self.size_per_element = int(u64[3])
        self.label_offset = int(u64[4])
        self.offset_data = int(u64[5])
        self.max_level = int(head[48:52].view(np.int32)[0])
        self.entry = int(head[52:56].view(np.uint32)[0])
        tail = head[56:96]
        self.max_m = int(tail[:8].view(np.uint64)[0])
        self.max_m0 = int(tail[8:16].view(np.uint64)[0])
        self.n = n
        level0 = raw[96 : 96 + n * self.size_per_element].reshape(n, self.size_per_element)
        self.links0 = np.asarray(level0[:, : 4 * (self.max_m0 + 1)]).view(np.uint32)
        self.vectors = np.asarray(level0[:, self.offset_data : self.offset_data + 4 * dim]).view(
            np.float32
        )
        self.labels = np.asarray(level0[:, self.label_offset : self.label_offset + 8]).view(
            np.uint64
        )[:, 0]
        # Upper levels: per element a uint32 byte count, then that many bytes of lists.
        self.upper: dict[int, np.ndarray] = {}
        size_links = self.max_m * 4 + 4
        pos = 96 + n * self.size_per_element
        sizes_seen = 0
        for i in range(n):
            size = int(raw[pos : pos + 4].view(np.uint32)[0])
            pos += 4
            if size:
                self.upper[i] = (
                    np.asarray(raw[pos : pos + size])
                    .view(np.uint32)
                    .reshape(size // size_links, self.max_m + 1)
                )
                pos += size
                sizes_seen += 1

    def _dist(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return 1.0 - self.vectors[ids] @ q

    def search(self, q: np.ndarray, ef: int, k: int = 1) -> tuple[list[int], int]:
        """(labels best first, distances computed) for one query."""
        q = np.asarray(q, dtype=np.float32)
        count = 1
        cur = self.entry
        cur_d = float(self._dist(q, np.array([cur]))[0])
        for level in range(self.max_level, 0, -1):
            changed = True
            while changed:
                changed = False
                row = self.upper[cur][level - 1]
                ids = row[1 : 1 + (int(row[0]) & 0xFFFF)].astype(np.int64)
                count += len(ids)
                d = self._dist(q, ids)
                for cand, dist in zip(ids.tolist(), d.tolist()):
                    if dist < cur_d:
                        cur_d, cur, changed = dist, cand, True
        ef = max(ef, k)
        visited = np.zeros(self.n, dtype=bool)
        visited[cur] = True
        d0 = float(self._dist(q, np.array([cur]))[0])
        count += 1
        top = [(-d0, -cur)]  # max-heap on (dist, id), like std::priority_queue
        cands = [(d0, -cur)]  # min-heap on dist, ties to the larger id
        lower = d0
        while cands:
            dist, neg_id = cands[0]
            if dist > lower:
                break
            heapq.heappop(cands)
            row = self.links0[-neg_id]
            ids = row[1 : 1 + (int(row[0]) & 0xFFFF)].astype(np.int64)
            fresh = ids[~visited[ids]]
            if not len(fresh):
                continue
            visited[fresh] = True
            count += len(fresh)
            for cand, dd in zip(fresh.tolist(), self._dist(q, fresh).tolist()):
                if len(top) < ef or lower > dd:
                    heapq.heappush(cands, (dd, -cand))
                    heapq.heappush(top, (-dd, -cand))
                    if len(top) > ef:
                        heapq.heappop(top)
                    lower = -top[0][0]
        best = sorted(((-d, -i) for d, i in top))[:k]
        return [int(self.labels[i]) for _, i in best], count


def child_hnsw(
    index_path: str, dim: int, n: int, query_paths: list[str], efs: list[int]
) -> dict[str, Any]:
    import hnswlib

    base = peak_rss_mb()
    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(index_path, max_elements=n)
    index.set_num_threads(1)
    out: dict[str, Any] = {"runs": {}}
    for qp in query_paths:
        queries = np.load(qp)
        for ef in efs:
            index.set_ef(ef)
            index.knn_query(queries[:20], k=1, num_threads=1)
            top1 = np.empty(len(queries), dtype=np.int64)
            start = time.process_time()
            for i, q in enumerate(queries):
                labels, _ = index.knn_query(q, k=1, num_threads=1)
                top1[i] = labels[0, 0]
            out["runs"][f"{qp}|{ef}"] = {
                "top1": top1,
                "us": (time.process_time() - start) / len(queries) * 1e6,
            }
    out["rss_mb"] = peak_rss_mb()
    out["base_rss_mb"] = base
    return out


def child_tree_efs(
    tree_dir: str, query_paths: list[str], beams: list[int], logit_scale: float, efs: list[int]
) -> dict[str, Any]:
    """Like geoguess.bench_search.child_tree for ``top="hnsw"``, at every ef of ``efs``;
    keyed ``"<path>|<beam>|<ef>"``. Its own process: its peak RSS is the hnsw route's."""
    from geoguess.tree_search import TreeSearch

    tree = Tree.load(Path(tree_dir))
    out: dict[str, Any] = {"runs": {}}
    for qp in query_paths:
        queries = np.load(qp)
        for beam in beams:
            for ef in efs:
                search = TreeSearch(tree, logit_scale, beam=beam, top="hnsw", ef=ef)
                # An untimed pass over every query first: a large tree's leaves are
                # mostly on disk, and whichever route ran first would pay for reading them.
                for q in queries:
                    search.search(q[None], 1)
                top1 = np.empty(len(queries), dtype=np.int64)
                compared = np.empty(len(queries), dtype=np.int64)
                start = time.process_time()
                for i, q in enumerate(queries):
                    res = search.search(q[None], 1)[0]
                    top1[i], compared[i] = res.indices[0], res.compared
                out["runs"][f"{qp}|{beam}|{ef}"] = {
                    "top1": top1,
                    "compared": compared,
                    "us": (time.process_time() - start) / len(queries) * 1e6,
                }
    out["rss_mb"] = peak_rss_mb()
    return out


# --- the harness ------------------------------------------------------------------------


class ResearchBench(SearchBench):
    opts: ResearchOptions

    def _embed(self, coords: np.ndarray, emb_out: np.ndarray, caps_out: np.ndarray | None) -> None:
        enc = self.geo.location_encoder
        step = 8192
        with self.rep.task(f"Embedding {len(coords):,} coordinates", total=len(coords)) as adv:
            for s in range(0, len(coords), step):
                if caps_out is not None:
                    summed, caps = enc(coords[s : s + step], capsules=True)
                    caps_out[s : s + len(summed)] = caps[:, :2].astype(np.float16)
                else:
                    summed = enc(coords[s : s + step])
                emb_out[s : s + len(summed)] = l2_normalize(summed).astype(np.float16)
                adv(len(summed))

    def prepare(self, work: Path) -> tuple[GalleryFiles, list[QuerySet], np.ndarray]:
        opts = self.opts
        gallery = self.geo.gallery
        limit = opts.limit or len(gallery.coords)
        coords_all = np.asarray(gallery.coords[:limit], dtype=np.float32)
        need_caps = any(
            parse_tree_spec(c, len(coords_all)).features == "capsules" for c in opts.configs
        )
        queries, index_rows = self.make_queries(work, coords_all)
        coords = coords_all[index_rows]
        size = max(int(opts.scale or 0), len(coords))
        tag = f"{self.geo.model.name}-{self.geo.gallery_name}-{limit}-{size}-{opts.seed}"
        tag += f"-{opts.jitter_km}"
        tag += "-real" if opts.queries is not None else f"-{opts.n_queries}"
        emb_path = work / f"gallery-{tag}.npy"
        coords_path = work / f"coords-{tag}.npy"
        caps_path = work / f"capsules-{tag}.npy" if need_caps else None
        if not (
            emb_path.is_file()
            and coords_path.is_file()
            and (caps_path is None or caps_path.is_file())
        ):
            extra = jitter_coords(coords, size - len(coords), opts.jitter_km, opts.seed + 99)
            full = np.concatenate([coords, extra]) if len(extra) else coords
            dim = gallery.embeddings.shape[1]
            emb = np.lib.format.open_memmap(
                emb_path.with_suffix(".tmp.npy"), "w+", np.float16, (size, dim)
            )
            caps = (
                np.lib.format.open_memmap(
                    caps_path.with_suffix(".tmp.npy"), "w+", np.float16, (size, 2, dim)
                )
                if caps_path
                else None
            )
            if caps is None:
                # The real points keep their stored embeddings; only the copies are new.
                emb[: len(coords)] = np.asarray(gallery.embeddings[index_rows])
                if len(extra):
                    self._embed(extra, emb[len(coords) :], None)
            else:
                assert caps_path is not None
                self._embed(full, emb, caps)
                caps.flush()
                os.replace(caps_path.with_suffix(".tmp.npy"), caps_path)
            emb.flush()
            del emb, caps
            np.save(coords_path, full)
            os.replace(emb_path.with_suffix(".tmp.npy"), emb_path)
        g = GalleryFiles(emb_path, coords_path, caps_path, size)
        return g, queries, np.load(coords_path)

    def run(self) -> list[BenchRow]:
        import tempfile

        opts = self.opts
        keep = opts.workdir is not None
        work = Path(opts.workdir) if keep else Path(tempfile.mkdtemp(prefix="geoguess-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            gallery, queries, coords = self.prepare(work)
            truth = self.reference(gallery, queries)
            self.flat_rows(gallery, queries)
            configs = list(opts.configs)
            if opts.compare_nodes:
                configs += [c for c in ("auto+gps",) if c not in configs]
            for spec in configs:
                tree_dir, rows = self.tree_rows(
                    spec, gallery, queries, truth, coords, work, reuse=keep
                )
                if opts.top_efs and rows:
                    rows += self.top_ef_rows(rows[0], tree_dir, queries, truth, coords)
                for row in rows:
                    if row.top == "hnsw":
                        self.count_hnsw(row, tree_dir, _query_set(row, queries))
                    self.out(row)
                if opts.compare_nodes and spec == "auto" and rows:
                    beams = sorted({int(b) for b in opts.beams})
                    label = str(rows[0].levels)
                    self.oracle_rows(label, tree_dir, gallery, queries, truth, coords, beams)
                if not keep:
                    shutil.rmtree(tree_dir, ignore_errors=True)
            if opts.hnsw_efs:
                self.hnsw_rows(gallery, queries, truth, coords, work)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
        return self.rows

    def count_hnsw(self, row: BenchRow, tree_dir: Path, q: QuerySet) -> None:
        """Add hnswlib's distance computations at the top level (replayed) to the row."""
        keys = np.load(tree_dir / "nodes-0.npy")
        graph = HnswGraph(tree_dir / hnsw_file(0), keys.shape[1])
        n = min(self.opts.replay_queries, len(q.vectors))
        k = min(int(row.beam or 1), len(keys))
        counts, same = [], 0
        index = Tree.load(tree_dir).hnsw(0)
        index.set_ef(max(int(row.ef or k), k))
        for vec in q.vectors[:n]:
            labels, count = graph.search(vec, max(int(row.ef or k), k), k)
            got, _ = index.knn_query(vec, k=k, num_threads=1)
            same += labels == got[0].tolist()
            counts.append(count)
        if not counts:
            return
        extra = float(np.mean(counts))
        assert row.compared_mean is not None
        row.compared_mean += extra
        row.share_compared = row.compared_mean / row.gallery_size
        row.notes.append(
            f"top level by hnswlib: {extra:.0f} distance computations per query, counted by "
            f"replaying {n} queries ({same}/{n} replays give hnswlib's nodes), included"
        )

    def top_ef_rows(
        self,
        like: BenchRow,
        tree_dir: Path,
        queries: list[QuerySet],
        truth: dict[Path, np.ndarray],
        coords: np.ndarray,
    ) -> list[BenchRow]:
        """Rows of the tree in ``tree_dir`` with its top level routed by hnswlib at every
        ef of ``--top-efs`` (``like``: one of its rows, for the labels)."""
        beams = sorted({int(b) for b in self.opts.beams})
        efs = sorted({int(e) for e in self.opts.top_efs})
        with self.rep.task(f"Querying tree {like.levels} at ef {efs} (one core)"):
            res = in_child(
                child_tree_efs,
                str(tree_dir),
                [str(q.path) for q in queries],
                beams,
                self.geo.logit_scale,
                efs,
            )
        rows = []
        for q in queries:
            for beam in beams:
                for ef in efs:
                    row = self.tree_row(
                        q,
                        res["runs"][f"{q.path}|{beam}|{ef}"],
                        res,
                        (coords, truth[q.path]),
                        size=like.gallery_size,
                        levels=like.levels,
                        beam=beam,
                        disk_mb=like.disk_mb,
                    )
                    row.top, row.ef = "hnsw", ef
                    row.notes.append("ef set by --top-efs; RAM MB of a hnsw-only process")
                    rows.append(row)
        return rows

    def oracle_rows(
        self,
        label: str,
        tree_dir: Path,
        gallery: GalleryFiles,
        queries: list[QuerySet],
        truth: dict[Path, np.ndarray],
        coords: np.ndarray,
        beams: list[int],
    ) -> None:
        """Routing by the exact cluster score (max over members): the ceiling for keys."""
        tree = Tree.load(tree_dir)
        rows = tree.leaf_rows
        sizes = np.diff(tree.leaf_offsets)
        for q in queries:
            found = {b: np.empty(len(q.vectors), dtype=np.int64) for b in beams}
            cost = {b: np.empty(len(q.vectors)) for b in beams}
            for c0 in range(0, len(q.vectors), 64):
                vecs = q.vectors[c0 : c0 + 64]
                # Scores of every leaf, in leaf order, then the maximum of every node.
                scores = np.empty((len(vecs), tree.size), dtype=np.float32)
                for s in range(0, tree.size, 65536):
                    block = np.asarray(tree.leaves[s : s + 65536], dtype=np.float32)
                    scores[:, s : s + 65536] = vecs @ block.T
                node_max = [np.maximum.reduceat(scores, tree.leaf_offsets[:-1], axis=1)]
                for level in range(tree.depth - 1, 0, -1):
                    starts = tree.children[level]
                    assert starts is not None
                    node_max.insert(0, np.maximum.reduceat(node_max[0], starts[:-1], axis=1))
                for b in beams:
                    for j in range(len(vecs)):
                        chosen = top_indices(node_max[0][j], b)
                        for level in range(1, tree.depth):
                            kids = tree.children_of(level, chosen)
                            chosen = kids[top_indices(node_max[level][j][kids], b)]
                        pos = tree.leaf_positions(chosen)
                        found[b][c0 + j] = rows[pos[np.argmax(scores[j, pos])]]
                        cost[b][c0 + j] = sizes[chosen].sum()
            for b in beams:
                row = self.base_row(q, gallery.size, method="tree-oracle", levels=label, beam=b)
                row.__dict__.update(agreement(coords, found[b], truth[q.path]))
                row.compared_mean = float(cost[b].mean())
                row.share_compared = row.compared_mean / gallery.size
                row.notes.append("node scores = exact max over members (ceiling, not a method)")
                self.out(row)

    def hnsw_rows(
        self,
        gallery: GalleryFiles,
        queries: list[QuerySet],
        truth: dict[Path, np.ndarray],
        coords: np.ndarray,
        work: Path,
    ) -> None:
        import hnswlib

        emb = np.load(gallery.emb_path, mmap_mode="r")
        path = work / f"hnsw-{gallery.size}-M{HNSW_M}.bin"
        dim = emb.shape[1]
        build_s = None
        if not path.is_file():
            with self.rep.task(f"Building hnswlib (M={HNSW_M}) over {gallery.size:,} points"):
                start = time.perf_counter()
                index = hnswlib.Index(space="ip", dim=dim)
                index.init_index(
                    max_elements=gallery.size,
                    ef_construction=HNSW_EF_CONSTRUCTION,
                    M=HNSW_M,
                    random_seed=self.opts.seed + 100,
                )
                for s in range(0, gallery.size, 65536):
                    block = np.asarray(emb[s : s + 65536], dtype=np.float32)
                    index.add_items(block, np.arange(s, s + len(block)))
                index.save_index(str(path))
                build_s = time.perf_counter() - start
                del index
        efs = sorted({int(e) for e in self.opts.hnsw_efs})
        with self.rep.task("Querying hnswlib (one core)"):
            res = in_child(
                child_hnsw, str(path), dim, gallery.size, [str(q.path) for q in queries], efs
            )
        graph = HnswGraph(path, dim)
        n_replay = min(self.opts.replay_queries, min(len(q.vectors) for q in queries))
        for q in queries:
            for ef in efs:
                run = res["runs"][f"{q.path}|{ef}"]
                counts, same = [], 0
                for i in range(n_replay):
                    labels, count = graph.search(q.vectors[i], ef, 1)
                    counts.append(count)
                    same += labels[0] == run["top1"][i]
                row = self.base_row(q, gallery.size, method="hnsw", ef=ef)
                row.levels = f"all points, M={HNSW_M}"
                row.__dict__.update(agreement(coords, run["top1"], truth[q.path]))
                if counts:
                    row.compared_mean = float(np.mean(counts))
                    row.share_compared = row.compared_mean / gallery.size
                    row.notes.append(
                        f"dot products counted by replaying {n_replay} queries "
                        f"({same}/{n_replay} replays match hnswlib's answer)"
                    )
                row.us_per_query = run["us"]
                row.rss_mb = res["rss_mb"]
                row.disk_mb = path.stat().st_size / 1e6
                row.build_s = build_s
                self.out(row)


def _query_set(row: BenchRow, queries: list[QuerySet]) -> QuerySet:
    return next(q for q in queries if (q.kind, q.cosine) == (row.queries, row.proxy_cosine))


def run_research_bench(
    opts: ResearchOptions,
    reporter: Reporter | None = None,
    emit: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Run the harness; ``emit`` receives every row as soon as it is measured."""
    check_options(opts.n_queries, opts.configs)
    return ResearchBench(opts, reporter or Reporter(), emit or (lambda row: None)).run()


# --- command line -----------------------------------------------------------------------

_COLUMNS = (
    ("method", "method", "{}"),
    ("levels", "tree / index", "{}"),
    ("beam", "beam", "{}"),
    ("top", "top", "{}"),
    ("ef", "ef", "{}"),
    ("proxy_cosine", "cos", "{}"),
    ("agreement", "top-1 = flat", "{:.3f}"),
    ("share_compared", "dot products", "{:.3%}"),
    ("compared_mean", "dots/query", "{:,.0f}"),
    ("us_per_query", "us/query", "{:,.0f}"),
    ("rss_mb", "RAM MB", "{:,.0f}"),
    ("disk_mb", "disk MB", "{:,.0f}"),
    ("build_s", "build s", "{:.1f}"),
)


def format_table(rows: Sequence[BenchRow]) -> str:
    """Rows as a plain-text table (one line per row)."""
    cells = [[head for _, head, _ in _COLUMNS]]
    for r in rows:
        d = r.to_dict()
        cells.append(["" if d[k] is None else fmt.format(d[k]) for k, _, fmt in _COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def main(argv: Sequence[str] | None = None) -> int:
    from geoguess.number_lists import parse_number_list

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--gallery")
    ap.add_argument("--levels", action="append", help="tree configuration (repeat)")
    ap.add_argument("--beams", default="1,2,4,8,16,24,32")
    ap.add_argument("--tops", default="exact", help="top-level routes: exact, hnsw, auto")
    ap.add_argument("--queries", type=Path, help="real image embeddings (.npy, Q x 512)")
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--cosines", default="0.95,0.7,0.45,0.3")
    ap.add_argument("--scale", type=int)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--jitter-km", type=float, default=10.0)
    ap.add_argument("--ef", default="20,80,320", help="hnswlib over all points ('' to skip)")
    ap.add_argument("--replay-queries", type=int, default=100)
    ap.add_argument(
        "--top-efs", default="", help="hnswlib ef values for trees' top level (hnsw rows)"
    )
    ap.add_argument(
        "--flat-queries",
        type=int,
        default=100,
        help="queries timed with flat search (0: not timed, when the gallery's float32 "
        "copy would not fit in memory; agreement is still against exact search)",
    )
    ap.add_argument("--compare-nodes", action="store_true")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    args = ap.parse_args(argv)
    opts = ResearchOptions(
        model=args.model,
        gallery=args.gallery,
        configs=tuple(args.levels) if args.levels else DEFAULT_CONFIGS,
        beams=parse_number_list(args.beams, int, "--beams"),
        tops=[t.strip() for t in args.tops.split(",") if t.strip()],
        queries=args.queries,
        cosines=parse_number_list(args.cosines, float, "--cosines"),
        n_queries=args.n_queries,
        scale=args.scale,
        limit=args.limit,
        jitter_km=args.jitter_km,
        hnsw_efs=parse_number_list(args.ef, int, "--ef"),
        replay_queries=args.replay_queries,
        top_efs=parse_number_list(args.top_efs, int, "--top-efs"),
        flat_queries=args.flat_queries,
        compare_nodes=args.compare_nodes,
        workdir=args.workdir,
        seed=args.seed,
    )

    def emit(row: BenchRow) -> None:
        # JSON rows are the data; table rows go to stderr as progress, the table follows.
        if args.json:
            print(json.dumps(row.to_dict()), flush=True)
        else:
            print(format_table([row]).splitlines()[1], file=sys.stderr, flush=True)

    from geoguess.cli.common import RichReporter

    rows = run_research_bench(opts, RichReporter(), emit)
    if not args.json:
        print(format_table(rows))
        for note in sorted({n for r in rows for n in r.notes}):
            print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
