"""``geoguess bench search``: tree search against exact flat search, in numbers.

For every tree configuration and beam width the benchmark reports how often the tree's
top-1 is the flat top-1 (compared by coordinates: the gallery repeats points), the
geodesic distance between the two, the share of the gallery's dot products computed,
microseconds per query on one core, and memory. hnswlib over all gallery points is a
second baseline.

Queries are real image embeddings when given. Otherwise they are a **proxy**: the
location embeddings of held-out real gallery coordinates (removed from the index) plus
Gaussian noise scaled so that the cosine to the clean embedding is about 0.95, 0.7,
0.45 and 0.3 (GeoCLIP image embeddings of photos sit far from any single location
embedding, so the noisy levels are the realistic ones).

Larger galleries (``scale``) are the real points plus jittered copies of them (Gaussian
offsets of ``jitter_km``), embedded with the model set's real location encoder.

Timings, memory and builds run in fresh single-core child processes (BLAS and ONNX
Runtime limited to one thread, pinned to one CPU), so that they measure the search
alone: the parent holds the exact reference and is not counted. Query times are the
child's CPU time per query, which other load on the machine does not inflate the way
it inflates wall-clock time.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import l2_normalize
from .errors import UsageError
from .reporting import Reporter
from .tree import FEATURES, NODE_KEYS, TreeConfig, _ranges, _top, auto_levels

_top_rows = _top

#: The published hierarchical-geoclip trees: capsule features, mean-GPS node keys.
PUBLISHED = ("800+capsules+gps", "20,100+capsules+gps", "200,10+capsules+gps")
DEFAULT_CONFIGS = (*PUBLISHED, "auto")
DEFAULT_BEAMS = (1, 2, 4, 8, 16, 24, 32)
DEFAULT_COSINES = (0.95, 0.7, 0.45, 0.3)
DEFAULT_EFS = (20, 80, 320)
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200

_ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}


@dataclass
class SearchBenchOptions:
    model: str | None = None
    gallery: str | None = None
    configs: Sequence[str] = DEFAULT_CONFIGS
    beams: Sequence[int] = DEFAULT_BEAMS
    queries: Path | None = None  # real image embeddings (.npy, (Q, 512))
    cosines: Sequence[float] = DEFAULT_COSINES
    n_queries: int = 1000
    scale: int | None = None  # gallery size: real points plus jittered copies
    limit: int | None = None  # use only the first N real gallery points (quick looks, tests)
    jitter_km: float = 10.0
    hnsw_efs: Sequence[int] = DEFAULT_EFS
    replay_queries: int = 100  # queries per level whose hnswlib dot products are counted
    flat_queries: int = 100  # queries timed with exact flat search
    compare_nodes: bool = False
    seed: int = 0
    workdir: Path | None = None  # keep (and reuse) scaled galleries and indexes here


@dataclass
class BenchRow:
    method: str  # flat | tree | hnsw | tree-oracle
    queries: str  # proxy | real
    gallery_size: int
    levels: str | None = None
    beam: int | None = None
    ef: int | None = None
    proxy_cosine: float | None = None
    measured_cosine: float | None = None
    n_queries: int = 0
    agreement: float | None = None
    share_compared: float | None = None
    compared_mean: float | None = None
    us_per_query: float | None = None
    median_km: float | None = None
    p95_km: float | None = None
    rss_mb: float | None = None
    disk_mb: float | None = None
    build_s: float | None = None
    build_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 6)
        return d


def parse_tree_spec(spec: str, n: int) -> TreeConfig:
    """``"20,100+capsules+gps"`` or ``"auto"`` -> TreeConfig for a gallery of ``n`` points."""
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise UsageError(f"empty tree configuration {spec!r}")
    levels: Any = auto_levels(n) if parts[0] == "auto" else parts[0]
    features, node = "embedding", "mean"
    for p in parts[1:]:
        if p in FEATURES:
            features = p
        elif p in NODE_KEYS:
            node = p
        else:
            raise UsageError(
                f"tree configuration {spec!r}: unknown option {p!r} "
                f"(use {', '.join(FEATURES + NODE_KEYS)})"
            )
    return TreeConfig(levels, features=features, node=node)


# --- queries and galleries --------------------------------------------------------------


def proxy_queries(clean: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """Normalised ``clean`` rows plus isotropic noise; cosine to clean ~= ``cosine``.

    With noise of norm s in D dimensions the cosine is 1 / sqrt(1 + s^2), so the
    per-dimension deviation is sqrt((1 / cosine^2 - 1) / D).
    """
    clean = l2_normalize(np.asarray(clean, dtype=np.float32))
    sigma = np.sqrt((1.0 / cosine**2 - 1.0) / clean.shape[1])
    noise = np.random.default_rng(seed).standard_normal(clean.shape).astype(np.float32)
    return l2_normalize(clean + sigma * noise).astype(np.float32)


def held_out_split(coords: np.ndarray, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows to query with (one per held-out place) and rows to index (all other places).

    Every row sharing a held-out coordinate leaves the index, so a query never finds
    its own point.
    """
    _, first, inverse = np.unique(coords, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    n_places = len(first)
    if n_queries >= n_places:
        raise UsageError(f"asked for {n_queries} held-out queries; gallery has {n_places} places")
    chosen = np.sort(np.random.default_rng(seed).choice(n_places, n_queries, replace=False))
    query_rows = first[chosen]
    index_rows = np.flatnonzero(~np.isin(inverse, chosen))
    return query_rows, index_rows


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


def exact_top1(gallery: np.ndarray, queries: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Row of the best gallery point for every query (fp32 dot products, like FlatSearch)."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.zeros(len(queries), dtype=np.int64)
    for s in range(0, len(gallery), chunk):
        scores = queries @ np.asarray(gallery[s : s + chunk], dtype=np.float32).T
        a = scores.argmax(axis=1)
        v = scores[np.arange(len(queries)), a]
        better = v > best
        best[better] = v[better]
        arg[better] = a[better] + s
    return arg


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


# --- child processes (one core each) ---------------------------------------------------


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _pin_one_core() -> None:
    with contextlib.suppress(AttributeError, OSError):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})


@contextlib.contextmanager
def _one_core_pool() -> Iterator[Any]:
    """A fresh single-worker process with BLAS limited to one thread."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update(_ONE_THREAD)
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=_pin_one_core) as pool:
            yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with _one_core_pool() as pool:
        return pool.submit(fn, *args).result()


def _child_build(
    out_dir: str,
    emb_path: str,
    config: TreeConfig,
    coords_path: str,
    capsules_path: str | None,
    encoder_path: str | None,
) -> dict[str, Any]:
    from .encoders import LocationEncoder
    from .tree import build_tree

    emb = np.load(emb_path, mmap_mode="r")
    coords = np.load(coords_path)
    caps = np.load(capsules_path, mmap_mode="r") if capsules_path else None
    enc = LocationEncoder(Path(encoder_path), "cpu", threads=1) if encoder_path else None
    start = time.perf_counter()
    meta = build_tree(
        Path(out_dir), emb, config, coords=coords, location_encoder=enc, capsules=caps
    )
    return {
        "meta": meta,
        "build_s": time.perf_counter() - start,
        "rss_mb": _peak_rss_mb(),
    }


def _child_tree(
    tree_dir: str, query_paths: list[str], beams: list[int], logit_scale: float
) -> dict[str, Any]:
    from .tree import Tree, TreeSearch

    base = _peak_rss_mb()
    tree = Tree.load(Path(tree_dir))
    out: dict[str, Any] = {"runs": {}}
    for qp in query_paths:
        queries = np.load(qp)
        for beam in beams:
            search = TreeSearch(tree, logit_scale, beam=beam)
            for q in queries[: min(20, len(queries))]:  # warm caches and pages
                search.search(q[None], 1)
            top1 = np.empty(len(queries), dtype=np.int64)
            compared = np.empty(len(queries), dtype=np.int64)
            start = time.process_time()
            for i, q in enumerate(queries):
                res = search.search(q[None], 1)[0]
                top1[i] = res.indices[0]
                compared[i] = res.compared
            elapsed = time.process_time() - start
            out["runs"][f"{qp}|{beam}"] = {
                "top1": top1,
                "compared": compared,
                "us": elapsed / len(queries) * 1e6,
            }
    out["rss_mb"] = _peak_rss_mb()
    out["base_rss_mb"] = base
    return out


def _child_flat(emb_path: str, query_path: str, n: int, logit_scale: float) -> dict[str, Any]:
    from .search import FlatSearch

    base = _peak_rss_mb()
    flat = FlatSearch(np.load(emb_path, mmap_mode="r"), logit_scale)
    queries = np.load(query_path)[:n]
    flat.search(queries[:2], 1)
    start = time.process_time()
    for q in queries:
        flat.search(q[None], 1)
    return {
        "us": (time.process_time() - start) / max(len(queries), 1) * 1e6,
        "rss_mb": _peak_rss_mb(),
        "base_rss_mb": base,
    }


def _child_hnsw(
    index_path: str, dim: int, n: int, query_paths: list[str], efs: list[int]
) -> dict[str, Any]:
    import hnswlib

    base = _peak_rss_mb()
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
    out["rss_mb"] = _peak_rss_mb()
    out["base_rss_mb"] = base
    return out


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class _Queries:
    kind: str  # proxy | real
    cosine: float | None
    measured: float | None
    vectors: np.ndarray
    path: Path


@dataclass
class _Gallery:
    emb_path: Path
    coords_path: Path
    capsules_path: Path | None
    size: int


def _distances(coords: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from .geo import geodesic_km_many

    same = np.all(coords[a] == coords[b], axis=1)
    km = np.zeros(len(a))
    if (~same).any():
        pa, pb = coords[a[~same]], coords[b[~same]]
        km[~same] = geodesic_km_many(pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1])
    return km


def _agreement(coords: np.ndarray, found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    km = _distances(coords, found, truth)
    return {
        "agreement": float(np.mean(km == 0)),
        "median_km": float(np.median(km)),
        "p95_km": float(np.quantile(km, 0.95)),
    }


def _dir_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


class _Bench:
    def __init__(
        self, opts: SearchBenchOptions, reporter: Reporter, emit: Callable[[BenchRow], None]
    ) -> None:
        from .geolocator import Geolocator

        self.opts = opts
        self.rep = reporter
        self.emit = emit
        self.geo = Geolocator.load(opts.model, gallery=opts.gallery)
        self.encoder_path = self.geo.model.file(self.geo.model.manifest.location_encoder)
        self.rows: list[BenchRow] = []

    def out(self, row: BenchRow) -> None:
        self.rows.append(row)
        self.emit(row)

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

    def prepare(self, work: Path) -> tuple[_Gallery, list[_Queries], np.ndarray]:
        opts = self.opts
        gallery = self.geo.gallery
        limit = opts.limit or len(gallery.coords)
        coords_all = np.asarray(gallery.coords[:limit], dtype=np.float32)
        need_caps = any(
            parse_tree_spec(c, len(coords_all)).features == "capsules" for c in opts.configs
        )
        queries: list[_Queries] = []
        if opts.queries is not None:
            real = np.load(opts.queries, allow_pickle=False).astype(np.float32)
            if real.ndim != 2 or real.shape[1] != gallery.embeddings.shape[1]:
                raise UsageError(f"{opts.queries}: expected (Q, {gallery.embeddings.shape[1]})")
            index_rows = np.arange(len(coords_all))
            path = work / "queries-real.npy"
            np.save(path, l2_normalize(real).astype(np.float32))
            queries.append(_Queries("real", None, None, np.load(path), path))
        else:
            query_rows, index_rows = held_out_split(coords_all, opts.n_queries, opts.seed)
            clean = np.asarray(gallery.embeddings[query_rows], dtype=np.float32)
            clean = l2_normalize(clean)
            for i, c in enumerate(opts.cosines):
                vec = proxy_queries(clean, c, opts.seed + 1 + i)
                path = work / f"queries-proxy-{c}.npy"
                np.save(path, vec)
                measured = float(np.mean(np.sum(vec * clean, axis=1)))
                queries.append(_Queries("proxy", c, measured, vec, path))
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
            emb = np.lib.format.open_memmap(
                emb_path.with_suffix(".tmp.npy"),
                "w+",
                np.float16,
                (size, gallery.embeddings.shape[1]),
            )
            caps = (
                np.lib.format.open_memmap(
                    caps_path.with_suffix(".tmp.npy"), "w+", np.float16, (size, 2, emb.shape[1])
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
                self._embed(full, emb, caps)
                caps.flush()
                os.replace(caps_path.with_suffix(".tmp.npy"), caps_path)
            emb.flush()
            del emb, caps
            np.save(coords_path, full)
            os.replace(emb_path.with_suffix(".tmp.npy"), emb_path)
        g = _Gallery(emb_path, coords_path, caps_path, size)
        return g, queries, np.load(coords_path)

    def run(self) -> list[BenchRow]:
        opts = self.opts
        keep = opts.workdir is not None
        work = Path(opts.workdir) if keep else Path(tempfile.mkdtemp(prefix="geoguess-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            gallery, queries, coords = self.prepare(work)
            emb = np.load(gallery.emb_path, mmap_mode="r")
            truth = {}
            with self.rep.task("Exact flat search (reference)"):
                for q in queries:
                    truth[q.path] = exact_top1(emb, q.vectors)
            self.flat_rows(gallery, queries)
            configs = list(opts.configs)
            if opts.compare_nodes:
                configs += [c for c in ("auto+gps",) if c not in configs]
            for spec in configs:
                self.tree_rows(spec, gallery, queries, truth, coords, work, emb)
            if opts.hnsw_efs:
                self.hnsw_rows(gallery, queries, truth, coords, work, emb)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
        return self.rows

    def _base(self, q: _Queries, size: int, **kw: Any) -> BenchRow:
        return BenchRow(
            queries=q.kind,
            gallery_size=size,
            proxy_cosine=q.cosine,
            measured_cosine=None if q.measured is None else round(q.measured, 4),
            n_queries=len(q.vectors),
            **kw,
        )

    def flat_rows(self, gallery: _Gallery, queries: list[_Queries]) -> None:
        with self.rep.task("Timing exact flat search (one core)"):
            res = _in_child(
                _child_flat,
                str(gallery.emb_path),
                str(queries[0].path),
                self.opts.flat_queries,
                self.geo.logit_scale,
            )
        for q in queries:
            row = self._base(q, gallery.size, method="flat")
            row.agreement, row.share_compared, row.compared_mean = 1.0, 1.0, float(gallery.size)
            row.median_km = row.p95_km = 0.0
            row.us_per_query = res["us"]
            row.rss_mb = res["rss_mb"]
            row.notes.append(f"process base {res['base_rss_mb']:.0f} MB")
            self.out(row)

    def tree_rows(
        self,
        spec: str,
        gallery: _Gallery,
        queries: list[_Queries],
        truth: dict[Path, np.ndarray],
        coords: np.ndarray,
        work: Path,
        emb: np.ndarray,
    ) -> None:
        config = parse_tree_spec(spec, gallery.size)
        label = config.key if not spec.startswith("auto") else f"{config.key} (ours)"
        out_dir = work / f"tree-{gallery.size}-{config.dirname}"
        shutil.rmtree(out_dir, ignore_errors=True)
        with self.rep.task(f"Building tree {label} over {gallery.size:,} points"):
            built = _in_child(
                _child_build,
                str(out_dir),
                str(gallery.emb_path),
                config,
                str(gallery.coords_path),
                str(gallery.capsules_path) if config.features == "capsules" else None,
                str(self.encoder_path) if config.node == "gps" else None,
            )
        disk = _dir_mb(out_dir)
        beams = sorted({int(b) for b in self.opts.beams})
        with self.rep.task(f"Querying tree {label} (one core)"):
            res = _in_child(
                _child_tree,
                str(out_dir),
                [str(q.path) for q in queries],
                beams,
                self.geo.logit_scale,
            )
        for q in queries:
            for beam in beams:
                run = res["runs"][f"{q.path}|{beam}"]
                row = self._base(q, gallery.size, method="tree", levels=label, beam=beam)
                row.__dict__.update(_agreement(coords, run["top1"], truth[q.path]))
                row.compared_mean = float(run["compared"].mean())
                row.share_compared = row.compared_mean / gallery.size
                row.us_per_query = run["us"]
                row.rss_mb = res["rss_mb"]
                row.disk_mb = disk
                row.build_s = built["build_s"]
                row.build_rss_mb = built["rss_mb"]
                self.out(row)
        if self.opts.compare_nodes and spec == "auto":
            self.oracle_rows(label, out_dir, gallery, queries, truth, coords, emb, beams)
        if not self.opts.workdir:
            shutil.rmtree(out_dir, ignore_errors=True)

    def oracle_rows(
        self,
        label: str,
        tree_dir: Path,
        gallery: _Gallery,
        queries: list[_Queries],
        truth: dict[Path, np.ndarray],
        coords: np.ndarray,
        emb: np.ndarray,
        beams: list[int],
    ) -> None:
        """Routing by the exact cluster score (max over members): the ceiling for keys."""
        from .tree import Tree

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
                        chosen = _top_rows(node_max[0][j], b)
                        for level in range(1, tree.depth):
                            off = tree.children[level]
                            assert off is not None
                            kids = _ranges(off[chosen], off[chosen + 1])
                            chosen = kids[_top_rows(node_max[level][j][kids], b)]
                        pos = _ranges(tree.leaf_offsets[chosen], tree.leaf_offsets[chosen + 1])
                        found[b][c0 + j] = rows[pos[np.argmax(scores[j, pos])]]
                        cost[b][c0 + j] = sizes[chosen].sum()
            for b in beams:
                row = self._base(q, gallery.size, method="tree-oracle", levels=label, beam=b)
                row.__dict__.update(_agreement(coords, found[b], truth[q.path]))
                row.compared_mean = float(cost[b].mean())
                row.share_compared = row.compared_mean / gallery.size
                row.notes.append("node scores = exact max over members (ceiling, not a method)")
                self.out(row)

    def hnsw_rows(
        self,
        gallery: _Gallery,
        queries: list[_Queries],
        truth: dict[Path, np.ndarray],
        coords: np.ndarray,
        work: Path,
        emb: np.ndarray,
    ) -> None:
        import hnswlib

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
            res = _in_child(
                _child_hnsw, str(path), dim, gallery.size, [str(q.path) for q in queries], efs
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
                row = self._base(q, gallery.size, method="hnsw", ef=ef)
                row.levels = f"all points, M={HNSW_M}"
                row.__dict__.update(_agreement(coords, run["top1"], truth[q.path]))
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


def run_search_bench(
    opts: SearchBenchOptions,
    reporter: Reporter | None = None,
    emit: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Run the benchmark; ``emit`` receives every row as soon as it is measured."""
    if opts.n_queries < 1:
        raise UsageError("n_queries must be at least 1")
    for spec in opts.configs:
        parse_tree_spec(spec, 1000)
    return _Bench(opts, reporter or Reporter(), emit or (lambda row: None)).run()
