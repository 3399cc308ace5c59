"""A hierarchical cluster tree over a GPS gallery, and beam search through it.

The published hierarchical GeoCLIP (ramanakshay/hierarchical-geoclip) clusters the
gallery level by level with k-means on the per-sigma capsule embeddings, keys every
node by the mean lat/lon of its members and walks the tree greedily (top-1 child per
level). A wrong coarse choice can never be undone, which costs up to 14 points of
accuracy at 2500 km.

This module builds the same kind of tree with choices that were measured (see
``geoguess bench search`` and the README):

* **Features**: k-means on PCA-reduced *full* (summed) location embeddings, the space
  that queries are scored in. Clustering on the capsule embeddings (``features=
  "capsules"``, the published scheme, kept for comparison) needs about 6x more leaves
  for the same agreement with exact search.
* **Node keys**: the normalised mean of the members' full embeddings (``node="mean"``).
  The published key, the mean GPS of the members embedded again (``node="gps"``,
  computed on the unit sphere here so the antimeridian does not break it), routes
  much worse: a single point cannot stand for a cluster's spread in embedding space.
* **Search**: beam search keeps the best ``beam`` nodes at every level, then scores
  every leaf under the beam exactly. ``beam=1`` is the published greedy walk.

On disk a tree is a folder of ``.npy`` arrays, one hnswlib index per level and a
``tree.json``; the leaves are the gallery's fp16 embeddings reordered so that every
leaf cluster is one contiguous block of a memory-mapped file, so a query touches only
the clusters it visits. Building is deterministic (fixed seeds, single-threaded
hnswlib), so rebuilding gives bit-identical files.

The hnswlib index of each level (inner product over that level's node keys) is shipped
and open to Python users (:meth:`Tree.hnsw`), but beam search scores candidate nodes
exactly. The top level has at most ~1,000 nodes up to 1M points, where exact scoring
costs about what an hnswlib query does (one core: 10 vs 22 us for 200 nodes, 47 vs
50 us for 800, 56 vs 43 us for 1,000), is exact, is one matrix product for a batch of
queries and, unlike hnswlib's Python API, says how many dot products it computed.
Below the top, the candidates are the beam's children, read in one call.

``search="auto"`` in :class:`geoguess.geolocator.Geolocator` uses the tree for galleries
of :data:`AUTO_TREE_MIN_POINTS` points or more (see there why not for 100K).

Softmax subtlety: flat search normalises over the whole gallery, tree search only over
the reranked candidates, so the probabilities of the same point differ (tree ones are
larger). The ranking of the candidates is the same; agreement with flat search is
measured on the identity of the top-1 point.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import SetupError, UsageError
from .reporting import Reporter
from .search import SearchResult

if TYPE_CHECKING:
    from .encoders import LocationEncoder
    from .geolocator import Geolocator
    from .store import InstalledModel

TREE_FORMAT = 1
TREE_META = "tree.json"
LEAVES = "leaves.npy"
LEAF_OFFSETS = "leaf-offsets.npy"
LEAF_ROWS = "leaf-rows.npy"

#: Beam width used when none is given (chosen with ``geoguess bench search``).
DEFAULT_BEAM = 24

FEATURES = ("embedding", "capsules")
NODE_KEYS = ("mean", "gps")
MAX_DEPTH = 4

# Published PCA sizes per level (42 then 20 components); deeper levels reuse the last.
_CAPSULE_PCA = (42, 20)
_EMBEDDING_PCA = 42

# k-means trains on at most this many points per cluster, then assigns every point.
_KMEANS_SAMPLE_PER_CLUSTER = 256
_KMEANS_ITERS = 20
_CHUNK = 32768

_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 100


# --- configuration ----------------------------------------------------------------------


def parse_levels(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"20,100"`` -> ``(20, 100)``: clusters at level 0, then children per node."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            levels = tuple(int(p) for p in parts)
        except ValueError:
            raise UsageError(f"bad tree levels {text!r}: use numbers like 800 or 20,100") from None
    else:
        levels = tuple(int(x) for x in text)
    if not levels or len(levels) > MAX_DEPTH:
        raise UsageError(f"tree levels {text!r}: give 1 to {MAX_DEPTH} levels, e.g. 20,100")
    if any(k < 2 or k > 1_000_000 for k in levels):
        raise UsageError(f"tree levels {text!r}: every level needs 2 to 1,000,000 branches")
    return levels


def auto_levels(n: int) -> tuple[int, ...]:
    """Our default shape for a gallery of ``n`` points (measurements in the README).

    Two levels with about 25 points per leaf cluster. A query scores the whole top level
    plus ``beam x`` the children of a node; with ``sqrt(25 x leaf clusters)`` nodes at the
    top both terms are about equal for the default beam. 100K points give (316, 13), 1M
    give (1000, 40). Measured at equal agreement with flat search, these compute fewer
    dot products than 800, 20x100, 200x10, 40x25, 100x20 and 200x20 on 100K points, and
    than 100x100, 200x50, 500x20 and 632x63 on 1M, and are the fastest per query.
    """
    if n <= 2000:
        return (max(2, min(40, n // 25)),)
    leaves = max(2, n // 25)
    top = int(np.clip(round(np.sqrt(leaves * 25)), 20, 4000))
    return (top, max(2, round(leaves / top)))


@dataclass(frozen=True)
class TreeConfig:
    levels: tuple[int, ...]
    features: str = "embedding"
    node: str = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", parse_levels(self.levels))
        if self.features not in FEATURES:
            raise UsageError(f"tree features must be one of {', '.join(FEATURES)}")
        if self.node not in NODE_KEYS:
            raise UsageError(f"tree node keys must be one of {', '.join(NODE_KEYS)}")

    @property
    def key(self) -> str:
        """Name of the tree in the manifest, e.g. ``20,100`` or ``800+capsules+gps``."""
        key = ",".join(map(str, self.levels))
        if self.features != "embedding":
            key += f"+{self.features}"
        if self.node != "mean":
            key += f"+{self.node}"
        if self.seed:
            key += f"+seed{self.seed}"
        return key

    @property
    def dirname(self) -> str:
        return "tree-" + self.key.replace(",", "x").replace("+", "-")

    @property
    def needs_encoder(self) -> bool:
        return self.features == "capsules" or self.node == "gps"


# --- k-means ----------------------------------------------------------------------------


def _assign(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for every row of ``x``."""
    half_sq = 0.5 * np.einsum("ij,ij->i", centers, centers)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), _CHUNK):
        out[s : s + _CHUNK] = np.argmax(x[s : s + _CHUNK] @ centers.T - half_sq, axis=1)
    return out


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = np.empty((k, x.shape[1]), dtype=x.dtype)
    first = int(rng.integers(len(x)))
    centers[0] = x[first]
    d2 = np.einsum("ij,ij->i", x - x[first], x - x[first]).astype(np.float64)
    found = 1
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than clusters
            break
        # Inverse-CDF sampling: one uniform draw, reproducible for a given seed.
        pick = int(np.searchsorted(np.cumsum(d2), rng.random() * total))
        pick = min(pick, len(x) - 1)
        centers[j] = x[pick]
        diff = x - x[pick]
        np.minimum(d2, np.einsum("ij,ij->i", diff, diff), out=d2)
        found = j + 1
    return centers[:found]


def _cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Member count and sum of the rows of every cluster."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]), dtype=x.dtype)
    nonempty = np.flatnonzero(counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[nonempty]
    sums[nonempty] = np.add.reduceat(x[order], starts, axis=0)
    return counts, sums


def kmeans(
    x: np.ndarray, k: int, *, seed: int = 0, iters: int = _KMEANS_ITERS
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding; deterministic for a given ``seed``.

    Returns ``(labels, centers)`` with labels in ``0..len(centers)-1`` and no empty
    cluster (duplicate points can leave fewer than ``k`` clusters). Large inputs train
    on a random sample of ``256 * k`` points, then every point is assigned.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, x.shape[1]), np.float32)
    k = max(1, min(int(k), n))
    rng = np.random.default_rng(seed)
    limit = _KMEANS_SAMPLE_PER_CLUSTER * k
    train = x[np.sort(rng.choice(n, limit, replace=False))] if n > limit else x
    centers = _kmeans_pp(train, k, rng)
    labels = _assign(train, centers)
    for _ in range(iters):
        counts, sums = _cluster_sums(train, labels, len(centers))
        keep = counts > 0
        # An emptied centre stays where it was; it may win points back next round.
        centers = np.where(keep[:, None], sums / np.maximum(counts, 1)[:, None], centers).astype(
            np.float32
        )
        new = _assign(train, centers)
        if np.array_equal(new, labels):
            break
        labels = new
    if train is not x:
        labels = _assign(x, centers)
    used, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64), centers[used]


def pca_project(x: np.ndarray, dims: int) -> np.ndarray:
    """Rows of ``x`` projected on their top ``dims`` principal axes (float32).

    The sign of every axis is fixed (largest coefficient positive) so that the result
    does not depend on the eigen-solver's arbitrary signs.
    """
    n, d = x.shape
    dims = min(dims, d)
    mean = np.zeros(d)
    cov = np.zeros((d, d))
    for s in range(0, n, _CHUNK):
        # float32 products (BLAS), float64 totals: exact enough, and 10x faster.
        block = np.asarray(x[s : s + _CHUNK], dtype=np.float32)
        mean += block.sum(0, dtype=np.float64)
        cov += block.T @ block
    mean /= max(n, 1)
    cov = cov / max(n, 1) - np.outer(mean, mean)
    _, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :dims]
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(dims)])
    axes = (axes * np.where(signs == 0, 1.0, signs)).astype(np.float32)
    out = np.empty((n, dims), dtype=np.float32)
    m32 = mean.astype(np.float32)
    for s in range(0, n, _CHUNK):
        out[s : s + _CHUNK] = (np.asarray(x[s : s + _CHUNK], dtype=np.float32) - m32) @ axes
    return out


# --- building ---------------------------------------------------------------------------


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for every pair, without a Python loop."""
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return shift + np.arange(total, dtype=np.int64)


def sphere_mean(latlon: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean position of each group on the unit sphere, as (lat, lon) degrees.

    Averaging degrees would put the mean of Fiji's two sides (179 and -179) at 0.
    """
    lat = np.radians(np.asarray(latlon[:, 0], dtype=np.float64))
    lon = np.radians(np.asarray(latlon[:, 1], dtype=np.float64))
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    sums = np.stack([np.bincount(groups, weights=xyz[:, j], minlength=n_groups) for j in range(3)])
    norm = np.linalg.norm(sums, axis=0)
    # Members spread evenly round the globe have no mean; any point is as good.
    sums = np.where(norm > 1e-12, sums / np.maximum(norm, 1e-12), np.array([[1.0], [0], [0]]))
    return np.stack(
        [np.degrees(np.arcsin(np.clip(sums[2], -1, 1))), np.degrees(np.arctan2(sums[1], sums[0]))],
        axis=1,
    ).astype(np.float32)


def _level_features(
    config: TreeConfig,
    level: int,
    embeddings: np.ndarray,
    capsules: np.ndarray | None,
    cache: dict[int, np.ndarray],
) -> np.ndarray:
    if config.features == "embedding":
        if -1 not in cache:
            cache[-1] = pca_project(embeddings, _EMBEDDING_PCA)
        return cache[-1]
    assert capsules is not None
    cap = min(level, capsules.shape[1] - 1)
    if level not in cache:
        dims = _CAPSULE_PCA[min(level, len(_CAPSULE_PCA) - 1)]
        cache[level] = pca_project(capsules[:, cap], dims)
    return cache[level]


def _f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float16)


def _write_npy(path: Path, array: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


def hnswlib_available() -> bool:
    """hnswlib is optional (``pip install 'geoguess[hnsw]'``): it ships source only for
    some platforms and needs a C++ compiler there, and search never needs it."""
    import importlib.util

    return importlib.util.find_spec("hnswlib") is not None


def _save_hnsw(path: Path, vectors: np.ndarray, seed: int) -> None:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(
        max_elements=max(1, len(vectors)),
        ef_construction=_HNSW_EF_CONSTRUCTION,
        M=_HNSW_M,
        random_seed=100 + seed,
    )
    # One thread: hnswlib's graph depends on insertion order, which threads would vary.
    index.add_items(vectors, np.arange(len(vectors)), num_threads=1)
    index.save_index(str(path))


def build_tree(
    out_dir: Path,
    embeddings: np.ndarray,
    config: TreeConfig,
    *,
    coords: np.ndarray | None = None,
    location_encoder: LocationEncoder | None = None,
    capsules: np.ndarray | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Build a tree over ``embeddings`` (N, D) normalised (fp16 or fp32) into ``out_dir``.

    ``coords`` and ``location_encoder`` are needed for capsule features or GPS node
    keys; ``capsules`` (N, >=1, D), the per-capsule embeddings, saves recomputing them.
    Returns the tree's description (written to ``tree.json`` too); its ``files`` are
    relative to ``out_dir``.
    """
    rep = reporter or Reporter()
    n, dim = embeddings.shape
    if n == 0:
        raise UsageError("cannot build a tree over an empty gallery")
    if (config.features == "capsules" and capsules is None) or config.node == "gps":
        if coords is None or location_encoder is None:
            raise UsageError(f"tree {config.key} needs the gallery coordinates and encoder")
        if config.features == "capsules" and capsules is None:
            with rep.task(f"Embedding {n:,} coordinates per capsule", total=n) as adv:
                parts = []
                for s in range(0, n, 8192):
                    _, caps = location_encoder(coords[s : s + 8192], capsules=True)
                    # The tree uses capsules 0 and 1 at most (levels deeper than 2 reuse 1).
                    parts.append(caps[:, : min(len(config.levels), caps.shape[1])].copy())
                    adv(len(caps))
                capsules = np.concatenate(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    features: dict[int, np.ndarray] = {}

    # Level by level: split every node of the level above with k-means on its members.
    group = np.zeros(n, dtype=np.int64)  # node of the current level for every point
    n_groups = 1
    parents_per_level: list[np.ndarray] = []
    with rep.task(f"Clustering {n:,} points into levels {config.key}"):
        for level, k in enumerate(config.levels):
            feats = _level_features(config, level, embeddings, capsules, features)
            order = np.argsort(group, kind="stable")
            bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
            new_group = np.empty(n, dtype=np.int64)
            parents = []
            next_id = 0
            for p in range(n_groups):
                members = order[bounds[p] : bounds[p + 1]]
                labels, centers = kmeans(feats[members], k, seed=config.seed * 7919 + p)
                new_group[members] = labels + next_id
                parents.extend([p] * len(centers))
                next_id += len(centers)
            group, n_groups = new_group, next_id
            parents_per_level.append(np.asarray(parents, dtype=np.int64))

    # Leaves: gallery rows ordered by leaf cluster (stable, so gallery order within one).
    leaf_rows = np.argsort(group, kind="stable").astype(np.int64)
    leaf_offsets = np.searchsorted(group[leaf_rows], np.arange(n_groups + 1)).astype(np.int64)
    leaves = np.lib.format.open_memmap(out_dir / LEAVES, "w+", np.float16, (n, dim))
    sums = np.zeros((n_groups, dim), dtype=np.float64)
    with rep.task("Writing leaf blocks", total=n) as adv:
        start_cluster = 0
        while start_cluster < n_groups:
            # Whole clusters per chunk, so that reduceat sees complete blocks.
            a = int(leaf_offsets[start_cluster])
            end_cluster = int(np.searchsorted(leaf_offsets, a + _CHUNK, side="right")) - 1
            end_cluster = min(max(end_cluster, start_cluster + 1), n_groups)
            b = int(leaf_offsets[end_cluster])
            block = np.asarray(embeddings[leaf_rows[a:b]], dtype=np.float16)
            leaves[a:b] = block
            local = leaf_offsets[start_cluster:end_cluster] - a
            sums[start_cluster:end_cluster] = np.add.reduceat(
                block.astype(np.float64), local, axis=0
            )
            adv(b - a)
            start_cluster = end_cluster
    leaves.flush()
    del leaves

    # Node keys bottom-up: a node's member sum is the sum of its children's.
    level_sums: list[np.ndarray] = [sums]
    level_groups: list[np.ndarray] = [group]
    for level in range(len(config.levels) - 1, 0, -1):
        par = parents_per_level[level]
        n_par = len(parents_per_level[level - 1])
        child_sums = level_sums[0]
        up = np.zeros((n_par, dim), dtype=np.float64)
        np.add.at(up, par, child_sums)
        level_sums.insert(0, up)
        level_groups.insert(0, par[level_groups[0]])
    files = [TREE_META, LEAVES, LEAF_OFFSETS, LEAF_ROWS]
    _write_npy(out_dir / LEAF_ROWS, leaf_rows)
    _write_npy(out_dir / LEAF_OFFSETS, leaf_offsets)
    nodes_per_level = []
    with rep.task("Writing node keys and hnswlib indexes"):
        for level, level_sum in enumerate(level_sums):
            if config.node == "gps":
                assert coords is not None and location_encoder is not None
                centres = sphere_mean(coords, level_groups[level], len(level_sum))
                keys = np.asarray(location_encoder(centres), dtype=np.float64)
            else:
                keys = level_sum
            norms = np.linalg.norm(keys, axis=1, keepdims=True)
            keys = (keys / np.maximum(norms, 1e-12)).astype(np.float32)
            # Keys below the top are read per query like leaves: fp16 halves that traffic;
            # the rounding (1e-3 relative) is far below the gaps that routing decides on.
            _write_npy(out_dir / f"nodes-{level}.npy", keys if level == 0 else _f16(keys))
            files.append(f"nodes-{level}.npy")
            if level > 0:
                # Nodes of a level are stored grouped by parent (k-means ran per parent).
                par = parents_per_level[level]
                offsets = np.searchsorted(par, np.arange(len(level_sums[level - 1]) + 1))
                _write_npy(out_dir / f"children-{level}.npy", offsets.astype(np.int64))
                files.append(f"children-{level}.npy")
            if hnswlib_available():
                _save_hnsw(out_dir / f"hnsw-{level}.bin", keys, config.seed)
                files.append(f"hnsw-{level}.bin")
            nodes_per_level.append(len(keys))

    sizes = np.diff(leaf_offsets)
    meta = {
        "format": TREE_FORMAT,
        "key": config.key,
        "levels": list(config.levels),
        "features": config.features,
        "node": config.node,
        "seed": config.seed,
        "pca_dims": list(_CAPSULE_PCA) if config.features == "capsules" else [_EMBEDDING_PCA],
        "size": int(n),
        "dim": int(dim),
        "nodes_per_level": nodes_per_level,
        "leaf_cluster_size": {
            "min": int(sizes.min()),
            "mean": round(float(sizes.mean()), 2),
            "max": int(sizes.max()),
        },
        "hnsw": {"space": "ip", "M": _HNSW_M, "ef_construction": _HNSW_EF_CONSTRUCTION},
        "files": sorted(files),
    }
    (out_dir / TREE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


# --- loading ----------------------------------------------------------------------------


def _plain_path(folder: Path) -> Callable[[str], Path]:
    return lambda name: folder / name


@dataclass
class Tree:
    """A loaded tree: node keys in memory, leaves memory-mapped."""

    meta: dict[str, Any]
    nodes: list[np.ndarray]  # per level (K_l, D) normalised; fp32 at level 0, fp16 below
    children: list[np.ndarray | None]  # per level: offsets into that level, by parent
    leaves: np.ndarray  # (N, D) float16 memmap, grouped by leaf cluster
    leaf_offsets: np.ndarray  # (K_last + 1,)
    leaf_rows: np.ndarray  # (N,) gallery row of every leaf
    _paths: Callable[[str], Path] = field(repr=False, default=_plain_path(Path(".")))

    @classmethod
    def load(cls, folder: Path, open_file: Callable[[str], Path] | None = None) -> Tree:
        """Open a tree folder; ``open_file(name)`` may check each file before use."""
        path_of = open_file or _plain_path(Path(folder))
        try:
            meta = json.loads(path_of(TREE_META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SetupError(f"{folder}: cannot read {TREE_META}: {exc}") from exc
        if meta.get("format") != TREE_FORMAT:
            raise SetupError(
                f"{folder}: tree format {meta.get('format')!r} is not {TREE_FORMAT}; "
                "rebuild it with: geoguess models tree"
            )

        def load(name: str, mmap: bool = False) -> np.ndarray:
            return np.load(path_of(name), mmap_mode="r" if mmap else None, allow_pickle=False)

        depth = len(meta["levels"])
        # Level 0 is scored for a whole batch with BLAS (fp32); deeper levels through
        # RowScorer, which reads their fp16 keys directly.
        nodes = [np.ascontiguousarray(load(f"nodes-{i}.npy")) for i in range(depth)]
        nodes[0] = nodes[0].astype(np.float32, copy=False)
        children: list[np.ndarray | None] = [None] + [
            load(f"children-{i}.npy") for i in range(1, depth)
        ]
        tree = cls(
            meta=meta,
            nodes=nodes,
            children=children,
            leaves=load(LEAVES, mmap=True),
            leaf_offsets=load(LEAF_OFFSETS),
            leaf_rows=load(LEAF_ROWS),
            _paths=path_of,
        )
        if len(tree.leaves) != meta["size"] or len(tree.leaf_offsets) != len(nodes[-1]) + 1:
            raise SetupError(f"{folder}: tree files do not match {TREE_META}")
        return tree

    @property
    def size(self) -> int:
        return len(self.leaves)

    @property
    def depth(self) -> int:
        return len(self.nodes)

    def hnsw(self, level: int) -> Any:
        """The hnswlib inner-product index over the nodes of ``level`` (written when
        hnswlib was installed at build time)."""
        return self._hnsw_indexes[level]

    @cached_property
    def _hnsw_indexes(self) -> list[Any]:
        import hnswlib

        out = []
        for level, keys in enumerate(self.nodes):
            index = hnswlib.Index(space="ip", dim=keys.shape[1])
            index.load_index(str(self._paths(f"hnsw-{level}.bin")), max_elements=len(keys))
            out.append(index)
        return out


# --- scoring fp16 rows without converting them in numpy ---------------------------------
#
# numpy converts float16 to float32 one element at a time (about 2 ns each here), which
# alone would cost 2 ms for the 2,000 leaves a query reads. ONNX Runtime's Cast uses the
# CPU's conversion instructions and reads the memory-mapped file without copying it, so
# one tiny graph (Gather rows -> Cast -> MatMul) scores the leaves of a beam in one call.
# The graph is encoded here by hand so that the runtime needs no ``onnx`` package.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_int(field_no: int, value: int) -> bytes:
    return _varint(field_no << 3) + _varint(value)


def _pb_bytes(field_no: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint((field_no << 3) | 2) + _varint(len(data)) + data


_ONNX_FLOAT, _ONNX_FLOAT16, _ONNX_INT64 = 1, 10, 7


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    shape = b"".join(
        _pb_bytes(1, _pb_bytes(2, d) if isinstance(d, str) else _pb_int(1, d)) for d in dims
    )
    tensor = _pb_int(1, elem_type) + _pb_bytes(2, shape)
    return _pb_bytes(1, name) + _pb_bytes(2, _pb_bytes(1, tensor))


def _node(op: str, inputs: Sequence[str], outputs: Sequence[str], **ints: int) -> bytes:
    body = b"".join(_pb_bytes(1, i) for i in inputs) + b"".join(_pb_bytes(2, o) for o in outputs)
    body += _pb_bytes(3, op.lower()) + _pb_bytes(4, op)
    for name, value in ints.items():
        # AttributeProto: name=1, i=3, type=20 (INT = 2)
        body += _pb_bytes(5, _pb_bytes(1, name) + _pb_int(3, value) + _pb_int(20, 2))
    return body


def gather_dot_model(elem_type: int = _ONNX_FLOAT16, dim: int = 512) -> bytes:
    """ONNX graph: scores = float32(rows_of(table)) @ query; inputs table, rows, query."""
    nodes = [_node("Gather", ["table", "rows"], ["picked"], axis=0)]
    picked = "picked"
    if elem_type != _ONNX_FLOAT:
        nodes.append(_node("Cast", ["picked"], ["picked32"], to=_ONNX_FLOAT))
        picked = "picked32"
    nodes.append(_node("MatMul", [picked, "query"], ["scores"]))
    graph = b"".join(_pb_bytes(1, n) for n in nodes) + _pb_bytes(2, "gather_dot")
    graph += _pb_bytes(11, _value_info("table", elem_type, ["n", dim]))
    graph += _pb_bytes(11, _value_info("rows", _ONNX_INT64, ["m"]))
    graph += _pb_bytes(11, _value_info("query", _ONNX_FLOAT, [dim, "q"]))
    graph += _pb_bytes(12, _value_info("scores", _ONNX_FLOAT, ["m", "q"]))
    # ModelProto: ir_version=1, producer_name=2, graph=7, opset_import=8 (version=2)
    return (
        _pb_int(1, 8)
        + _pb_bytes(2, "geoguess")
        + _pb_bytes(7, graph)
        + _pb_bytes(8, _pb_bytes(1, "") + _pb_int(2, 17))
    )


class RowScorer:
    """``scores(table, rows, q)`` = table[rows] @ q in float32, through ONNX Runtime."""

    def __init__(self, dim: int, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sessions = {
            dtype: ort.InferenceSession(
                gather_dot_model(elem, dim), opts, providers=["CPUExecutionProvider"]
            )
            for dtype, elem in ((np.float16, _ONNX_FLOAT16), (np.float32, _ONNX_FLOAT))
        }

    def __call__(self, table: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        session = self._sessions[table.dtype.type]
        out = session.run(None, {"table": table, "rows": rows, "query": query.reshape(-1, 1)})[0]
        return out[:, 0]


# --- search -----------------------------------------------------------------------------


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class TreeSearch:
    """Beam search through a :class:`Tree`, then exact scoring of the leaves under the beam.

    Same interface as :class:`geoguess.search.FlatSearch`. ``compared`` counts every
    dot product (node keys and leaves); probabilities are a softmax over the reranked
    candidates only (see the module docstring).
    """

    def __init__(
        self, tree: Tree, logit_scale: float, *, beam: int | None = None, threads: int = 1
    ) -> None:
        self.tree = tree
        self.logit_scale = float(logit_scale)
        self.beam = int(beam or DEFAULT_BEAM)
        if self.beam < 1:
            raise UsageError(f"beam must be at least 1, got {self.beam}")
        self._scorer = RowScorer(tree.nodes[0].shape[1], threads=threads)

    def __len__(self) -> int:
        return self.tree.size

    def candidates(self, query: np.ndarray, level0_scores: np.ndarray) -> tuple[np.ndarray, int]:
        """Leaf positions under the beam for one query, and the node dot products spent."""
        tree, beam = self.tree, self.beam
        spent = len(level0_scores)
        chosen = _top(level0_scores, beam)
        for level in range(1, tree.depth):
            offsets = tree.children[level]
            assert offsets is not None
            kids = _ranges(offsets[chosen], offsets[chosen + 1])
            spent += len(kids)
            scores = self._scorer(tree.nodes[level], kids, query)
            chosen = kids[_top(scores, beam)]
        return _ranges(tree.leaf_offsets[chosen], tree.leaf_offsets[chosen + 1]), spent

    def search(self, queries: np.ndarray, top_k: int) -> list[SearchResult]:
        """``queries``: (Q, D) normalised image embeddings."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        level0 = q @ self.tree.nodes[0].T
        out = []
        for row, scores0 in zip(q, level0):
            positions, spent = self.candidates(row, scores0)
            logits = self.logit_scale * self._scorer(self.tree.leaves, positions, row)
            exp = np.exp(logits - logits.max())
            probs = exp / exp.sum()
            order = _top(logits, max(1, min(int(top_k), len(logits))))
            rows = self.tree.leaf_rows[positions]
            out.append(
                SearchResult(
                    indices=rows[order],
                    probabilities=probs[order],
                    compared=spent + len(positions),
                    support_probs=probs,
                    support_indices=rows,
                )
            )
        return out


# --- choosing the search of a Geolocator ------------------------------------------------

#: ``search="auto"`` uses a gallery's tree from this size on, flat search below it.
#: Measured with ``geoguess bench search`` (README): the tree meets its targets on 100K
#: and 1M points, but on 100K exact search costs ~12-19 ms against ~700 ms for the
#: ViT-L/14 image encoder, so exactness (and GeoCLIP's own probabilities) win there; on
#: 1M it costs ~190 ms and 2 GB of fp32 RAM against ~0.5 ms for the tree.
AUTO_TREE_MIN_POINTS = 500_000


def load_installed_tree(model: InstalledModel, entry: dict[str, Any]) -> Tree:
    """Open a tree listed in a model set's manifest, checking each file's sha256."""
    folder = str(entry["dir"])
    return Tree.load(model.path / folder, open_file=lambda name: model.file(f"{folder}/{name}"))


def open_searcher(geo: Geolocator, mode: str = "auto", beam: int | None = None) -> Any:
    """The search a Geolocator uses: ``flat``, ``tree`` or ``auto``.

    ``auto`` picks the gallery's tree when it has one and either the gallery has at
    least :data:`AUTO_TREE_MIN_POINTS` points or a beam was asked for; otherwise flat.
    """
    if mode == "flat":
        return geo.flat
    entry = geo.model.manifest.galleries[geo.gallery_name]
    trees = entry.get("trees", {})
    key = entry.get("default_tree")
    large = int(entry.get("size") or 0) >= AUTO_TREE_MIN_POINTS
    if mode == "auto" and (not (large or beam) or key not in trees):
        return geo.flat
    if key not in trees:
        raise UsageError(
            f"gallery {geo.gallery_name!r} of model set {geo.model.name!r} has no search "
            f"tree; build one with: geoguess models tree --gallery {geo.gallery_name}"
        )
    return TreeSearch(load_installed_tree(geo.model, trees[key]), geo.logit_scale, beam=beam)
