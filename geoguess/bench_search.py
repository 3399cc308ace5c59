"""``geoguess bench search``: tree search against exact flat search on your gallery.

For every tree configuration and beam width the benchmark builds the tree over the
gallery (held-out query points removed) and reports how often the tree's top-1 is the
flat top-1 (compared by coordinates: the gallery repeats points), the geodesic distance
between the two, the share of the gallery's dot products computed, microseconds per
query on one core, and memory.

Queries are real image embeddings when given. Otherwise they are a **proxy**: the
location embeddings of held-out real gallery coordinates (removed from the index) plus
Gaussian noise scaled so that the cosine to the clean embedding is about 0.95, 0.7,
0.45 and 0.3 (GeoCLIP image embeddings of photos sit far from any single location
embedding, so the noisy levels are the realistic ones).

Timings, memory and builds run in fresh single-core child processes (BLAS and ONNX
Runtime limited to one thread, pinned to one CPU), so that they measure the search
alone: the parent holds the exact reference and is not counted. Query times are the
child's CPU time per query, which other load on the machine does not inflate the way
it inflates wall-clock time.

The research harness built on this (galleries grown to millions of points, hnswlib
over all points, the node-key ceiling, the hnswlib crossover) is ``benchmarks/``.
"""

from __future__ import annotations

import contextlib
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
from .tree import FEATURES, NODE_KEYS, TREE_META, TreeConfig, auto_levels

#: The published hierarchical-geoclip trees: capsule features, mean-GPS node keys.
PUBLISHED = ("800+capsules+gps", "20,100+capsules+gps", "200,10+capsules+gps")
DEFAULT_CONFIGS = (*PUBLISHED, "auto")
DEFAULT_BEAMS = (1, 2, 4, 8, 16, 24, 32)
DEFAULT_COSINES = (0.95, 0.7, 0.45, 0.3)

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
    limit: int | None = None  # use only the first N real gallery points (quick looks, tests)
    flat_queries: int = 100  # queries timed with exact flat search
    seed: int = 0
    # How the top level of the trees is scored (geoguess.tree_search.TOP_ROUTES).
    tops: Sequence[str] = ("auto",)


@dataclass
class BenchRow:
    method: str  # flat | tree | hnsw | tree-oracle
    queries: str  # proxy | real
    gallery_size: int
    levels: str | None = None
    beam: int | None = None
    top: str | None = None  # tree rows: exact | hnsw (how the top level was scored)
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


# --- queries and the exact reference ----------------------------------------------------


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


def agreement(coords: np.ndarray, found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Share of top-1s at the reference's coordinates, and the distances between them."""
    from .geo import geodesic_km_many

    same = np.all(coords[found] == coords[truth], axis=1)
    km = np.zeros(len(found))
    if (~same).any():
        pa, pb = coords[found[~same]], coords[truth[~same]]
        km[~same] = geodesic_km_many(pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1])
    return {
        "agreement": float(np.mean(km == 0)),
        "median_km": float(np.median(km)),
        "p95_km": float(np.quantile(km, 0.95)),
    }


def dir_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


# --- child processes (one core each) ---------------------------------------------------


def peak_rss_mb() -> float:
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


def in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a fresh single-core process (``fn`` importable by name)."""
    with _one_core_pool() as pool:
        return pool.submit(fn, *args).result()


def child_build(
    out_dir: str,
    emb_path: str,
    config: TreeConfig,
    coords_path: str,
    capsules_path: str | None,
    encoder_path: str | None,
) -> dict[str, Any]:
    from .encoders import LocationEncoder
    from .tree_build import build_tree

    emb = np.load(emb_path, mmap_mode="r")
    coords = np.load(coords_path)
    caps = np.load(capsules_path, mmap_mode="r") if capsules_path else None
    enc = LocationEncoder(Path(encoder_path), "cpu", threads=1) if encoder_path else None
    start = time.perf_counter()
    meta = build_tree(
        Path(out_dir), emb, config, coords=coords, location_encoder=enc, capsules=caps
    )
    return {"meta": meta, "build_s": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def child_tree(
    tree_dir: str,
    query_paths: list[str],
    beams: list[int],
    logit_scale: float,
    tops: Sequence[str] = ("auto",),
) -> dict[str, Any]:
    """Top-1 rows, dot products and CPU microseconds per query for every
    (queries, beam, top) run; keyed ``"<path>|<beam>|<top asked>"``."""
    from .tree import Tree
    from .tree_search import TreeSearch

    base = peak_rss_mb()
    tree = Tree.load(Path(tree_dir))
    out: dict[str, Any] = {"runs": {}}
    for qp in query_paths:
        queries = np.load(qp)
        for beam in beams:
            for top in tops:
                search = TreeSearch(tree, logit_scale, beam=beam, top=top)
                # An untimed pass over every query first: a large tree's leaves are
                # mostly on disk, and whichever route ran first would pay for reading them.
                for q in queries:
                    search.search(q[None], 1)
                top1 = np.empty(len(queries), dtype=np.int64)
                compared = np.empty(len(queries), dtype=np.int64)
                start = time.process_time()
                for i, q in enumerate(queries):
                    res = search.search(q[None], 1)[0]
                    top1[i] = res.indices[0]
                    compared[i] = res.compared
                elapsed = time.process_time() - start
                out["runs"][f"{qp}|{beam}|{top}"] = {
                    "top1": top1,
                    "compared": compared,
                    "us": elapsed / len(queries) * 1e6,
                    "top": search.top,
                    "ef": search.ef,
                }
    out["rss_mb"] = peak_rss_mb()
    out["base_rss_mb"] = base
    return out


def child_flat(emb_path: str, query_path: str, n: int, logit_scale: float) -> dict[str, Any]:
    from .search import FlatSearch

    base = peak_rss_mb()
    flat = FlatSearch(np.load(emb_path, mmap_mode="r"), logit_scale)
    queries = np.load(query_path)[:n]
    flat.search(queries[:2], 1)
    start = time.process_time()
    for q in queries:
        flat.search(q[None], 1)
    return {
        "us": (time.process_time() - start) / max(len(queries), 1) * 1e6,
        "rss_mb": peak_rss_mb(),
        "base_rss_mb": base,
    }


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class QuerySet:
    kind: str  # proxy | real
    cosine: float | None
    measured: float | None
    vectors: np.ndarray
    path: Path


@dataclass
class GalleryFiles:
    emb_path: Path
    coords_path: Path
    capsules_path: Path | None
    size: int


class SearchBench:
    """Flat rows, then tree rows for every configuration (``benchmarks/search.py``
    reuses the pieces with galleries and baselines of its own)."""

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

    def make_queries(self, work: Path, coords_all: np.ndarray) -> tuple[list[QuerySet], np.ndarray]:
        """The query sets, and the gallery rows left in the index."""
        opts, gallery = self.opts, self.geo.gallery
        queries: list[QuerySet] = []
        if opts.queries is not None:
            real = np.load(opts.queries, allow_pickle=False).astype(np.float32)
            if real.ndim != 2 or real.shape[1] != gallery.embeddings.shape[1]:
                raise UsageError(f"{opts.queries}: expected (Q, {gallery.embeddings.shape[1]})")
            path = work / "queries-real.npy"
            np.save(path, l2_normalize(real).astype(np.float32))
            queries.append(QuerySet("real", None, None, np.load(path), path))
            return queries, np.arange(len(coords_all))
        query_rows, index_rows = held_out_split(coords_all, opts.n_queries, opts.seed)
        clean = l2_normalize(np.asarray(gallery.embeddings[query_rows], dtype=np.float32))
        for i, c in enumerate(opts.cosines):
            vec = proxy_queries(clean, c, opts.seed + 1 + i)
            path = work / f"queries-proxy-{c}.npy"
            np.save(path, vec)
            measured = float(np.mean(np.sum(vec * clean, axis=1)))
            queries.append(QuerySet("proxy", c, measured, vec, path))
        return queries, index_rows

    def prepare(self, work: Path) -> tuple[GalleryFiles, list[QuerySet], np.ndarray]:
        """The indexed gallery's files, the query sets and the indexed coordinates."""
        gallery = self.geo.gallery
        limit = self.opts.limit or len(gallery.coords)
        coords_all = np.asarray(gallery.coords[:limit], dtype=np.float32)
        queries, index_rows = self.make_queries(work, coords_all)
        coords = coords_all[index_rows]
        emb_path, coords_path = work / "gallery.npy", work / "coords.npy"
        np.save(emb_path, np.asarray(gallery.embeddings[index_rows]))
        np.save(coords_path, coords)
        caps_path = None
        if any(parse_tree_spec(c, len(coords)).features == "capsules" for c in self.opts.configs):
            caps_path = work / "capsules.npy"
            self.embed_capsules(coords, caps_path)
        return GalleryFiles(emb_path, coords_path, caps_path, len(coords)), queries, coords

    def embed_capsules(self, coords: np.ndarray, path: Path) -> None:
        """Capsules 0 and 1 of every point (all that the published trees use), fp16."""
        enc = self.geo.location_encoder
        dim = self.geo.gallery.embeddings.shape[1]
        out = np.lib.format.open_memmap(path, "w+", np.float16, (len(coords), 2, dim))
        step = 8192
        with self.rep.task(f"Embedding {len(coords):,} coordinates", total=len(coords)) as adv:
            for s in range(0, len(coords), step):
                _, caps = enc(coords[s : s + step], capsules=True)
                out[s : s + len(caps)] = caps[:, :2].astype(np.float16)
                adv(len(caps))
        out.flush()

    def run(self) -> list[BenchRow]:
        work = Path(tempfile.mkdtemp(prefix="geoguess-bench-"))
        try:
            gallery, queries, coords = self.prepare(work)
            truth = self.reference(gallery, queries)
            self.flat_rows(gallery, queries)
            for spec in self.opts.configs:
                tree_dir, rows = self.tree_rows(spec, gallery, queries, truth, coords, work)
                for row in rows:
                    self.out(row)
                shutil.rmtree(tree_dir, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.rows

    def reference(self, gallery: GalleryFiles, queries: list[QuerySet]) -> dict[Path, np.ndarray]:
        """Exact top-1 of every query set (by its path)."""
        emb = np.load(gallery.emb_path, mmap_mode="r")
        with self.rep.task("Exact flat search (reference)"):
            return {q.path: exact_top1(emb, q.vectors) for q in queries}

    def base_row(self, q: QuerySet, size: int, **kw: Any) -> BenchRow:
        return BenchRow(
            queries=q.kind,
            gallery_size=size,
            proxy_cosine=q.cosine,
            measured_cosine=None if q.measured is None else round(q.measured, 4),
            n_queries=len(q.vectors),
            **kw,
        )

    def tree_row(
        self,
        q: QuerySet,
        run: dict[str, Any],
        measured: dict[str, Any],
        found: tuple[np.ndarray, np.ndarray],
        *,
        size: int,
        levels: str,
        beam: int,
        disk_mb: float | None,
    ) -> BenchRow:
        """The row of one tree query run (``run``: a child's run for ``q`` at ``beam``;
        ``measured``: that child's result; ``found``: gallery coordinates and the flat
        top-1 of ``q``)."""
        coords, truth = found
        row = self.base_row(q, size, method="tree", levels=levels, beam=beam)
        row.__dict__.update(agreement(coords, run["top1"], truth))
        row.compared_mean = float(run["compared"].mean())
        row.share_compared = row.compared_mean / size
        row.us_per_query = run["us"]
        row.rss_mb = measured["rss_mb"]
        row.disk_mb = disk_mb
        return row

    def flat_rows(self, gallery: GalleryFiles, queries: list[QuerySet]) -> None:
        if self.opts.flat_queries < 1:
            # Agreement is still measured against exact search (streamed in chunks); only
            # timing it is skipped, for galleries whose float32 copy would not fit in RAM.
            self.rep.message("exact flat search not timed (flat_queries 0)")
            return
        with self.rep.task("Timing exact flat search (one core)"):
            res = in_child(
                child_flat,
                str(gallery.emb_path),
                str(queries[0].path),
                self.opts.flat_queries,
                self.geo.logit_scale,
            )
        for q in queries:
            row = self.base_row(q, gallery.size, method="flat")
            row.agreement, row.share_compared, row.compared_mean = 1.0, 1.0, float(gallery.size)
            row.median_km = row.p95_km = 0.0
            row.us_per_query = res["us"]
            row.rss_mb = res["rss_mb"]
            row.notes.append(f"process base {res['base_rss_mb']:.0f} MB")
            self.out(row)

    def tree_rows(
        self,
        spec: str,
        gallery: GalleryFiles,
        queries: list[QuerySet],
        truth: dict[Path, np.ndarray],
        coords: np.ndarray,
        work: Path,
        reuse: bool = False,
    ) -> tuple[Path, list[BenchRow]]:
        """Build the tree ``spec`` under ``work`` (``reuse``: unless a finished build of
        it is there) and measure it: its folder and its rows (not emitted yet), one per
        query set, beam and top-level route."""
        config = parse_tree_spec(spec, gallery.size)
        label = config.key if not spec.startswith("auto") else f"{config.key} (ours)"
        out_dir = work / f"tree-{gallery.size}-{config.dirname}"
        built: dict[str, Any] = {"build_s": None, "rss_mb": None}
        if not (reuse and (out_dir / TREE_META).is_file()):
            shutil.rmtree(out_dir, ignore_errors=True)
            with self.rep.task(f"Building tree {label} over {gallery.size:,} points"):
                built = in_child(
                    child_build,
                    str(out_dir),
                    str(gallery.emb_path),
                    config,
                    str(gallery.coords_path),
                    str(gallery.capsules_path) if config.features == "capsules" else None,
                    str(self.encoder_path) if config.node == "gps" else None,
                )
        disk = dir_mb(out_dir)
        beams = sorted({int(b) for b in self.opts.beams})
        tops = list(dict.fromkeys(self.opts.tops))
        with self.rep.task(f"Querying tree {label} (one core)"):
            res = in_child(
                child_tree,
                str(out_dir),
                [str(q.path) for q in queries],
                beams,
                self.geo.logit_scale,
                tops,
            )
        rows = []
        for q in queries:
            for beam in beams:
                for top in tops:
                    run = res["runs"][f"{q.path}|{beam}|{top}"]
                    row = self.tree_row(
                        q,
                        run,
                        res,
                        (coords, truth[q.path]),
                        size=gallery.size,
                        levels=label,
                        beam=beam,
                        disk_mb=disk,
                    )
                    row.top = run["top"]
                    row.ef = run["ef"] if run["top"] == "hnsw" else None
                    row.build_s = built["build_s"]
                    row.build_rss_mb = built["rss_mb"]
                    rows.append(row)
        return out_dir, rows


def check_options(n_queries: int, configs: Sequence[str]) -> None:
    """UsageError for a query count or tree spec that cannot run, before any work."""
    if n_queries < 1:
        raise UsageError("n_queries must be at least 1")
    for spec in configs:
        parse_tree_spec(spec, 1000)


def run_search_bench(
    opts: SearchBenchOptions,
    reporter: Reporter | None = None,
    emit: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Run the benchmark; ``emit`` receives every row as soon as it is measured."""
    check_options(opts.n_queries, opts.configs)
    return SearchBench(opts, reporter or Reporter(), emit or (lambda row: None)).run()
