"""Building a cluster tree over a GPS gallery (deterministic: same inputs, same files).

The published hierarchical GeoCLIP (ramanakshay/hierarchical-geoclip) clusters the
gallery level by level with k-means on the per-sigma capsule embeddings, keys every
node by the mean lat/lon of its members and walks the tree greedily (top-1 child per
level). A wrong coarse choice can never be undone, which costs up to 14 points of
accuracy at 2500 km.

This module builds the same kind of tree with choices that were measured (see
``geoguess bench search``, ``benchmarks/search.py`` and the README):

* **Features**: k-means on PCA-reduced *full* (summed) location embeddings, the space
  that queries are scored in. Clustering on the capsule embeddings (``features=
  "capsules"``, the published scheme, kept for comparison) needs about 6x more leaves
  for the same agreement with exact search.
* **Node keys**: the normalised mean of the members' full embeddings (``node="mean"``).
  The published key, the mean GPS of the members embedded again (``node="gps"``,
  computed on the unit sphere here so the antimeridian does not break it), routes
  much worse: a single point cannot stand for a cluster's spread in embedding space.

Building is deterministic (fixed seeds, single-threaded hnswlib), so rebuilding gives
bit-identical files; the layout is described in :mod:`geoguess.tree`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .clustering import CHUNK, kmeans, pca_project, sphere_mean
from .errors import UsageError
from .reporting import Reporter
from .tree import (
    LEAF_OFFSETS,
    LEAF_ROWS,
    LEAVES,
    TREE_FORMAT,
    TREE_META,
    TreeConfig,
    children_file,
    hnsw_file,
    hnswlib_available,
    nodes_file,
)

if TYPE_CHECKING:
    from .encoders import LocationEncoder

# Published PCA sizes per level (42 then 20 components); deeper levels reuse the last.
_CAPSULE_PCA = (42, 20)
_EMBEDDING_PCA = 42

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 100


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


def save_hnsw(path: Path, vectors: np.ndarray, seed: int) -> None:
    """hnswlib's inner-product index over ``vectors`` (labels = rows), as trees ship it."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(
        max_elements=max(1, len(vectors)),
        ef_construction=HNSW_EF_CONSTRUCTION,
        M=HNSW_M,
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
            capsules = _capsule_embeddings(coords, location_encoder, len(config.levels), rep)
    out_dir.mkdir(parents=True, exist_ok=True)
    with rep.task(f"Clustering {n:,} points into levels {config.key}"):
        group, parents_per_level = _cluster_levels(config, embeddings, capsules)
    n_leaves = len(parents_per_level[-1])
    leaf_rows, leaf_offsets, sums = _write_leaves(out_dir, embeddings, group, n_leaves, rep)
    _write_npy(out_dir / LEAF_ROWS, leaf_rows)
    _write_npy(out_dir / LEAF_OFFSETS, leaf_offsets)
    files = [TREE_META, LEAVES, LEAF_OFFSETS, LEAF_ROWS]
    with rep.task("Writing node keys and hnswlib indexes"):
        nodes_per_level = _write_levels(
            out_dir, config, sums, group, parents_per_level, coords, location_encoder, files
        )

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
        "hnsw": {"space": "ip", "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
        "files": sorted(files),
    }
    (out_dir / TREE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _capsule_embeddings(
    coords: np.ndarray, location_encoder: LocationEncoder, n_levels: int, rep: Reporter
) -> np.ndarray:
    n = len(coords)
    with rep.task(f"Embedding {n:,} coordinates per capsule", total=n) as adv:
        parts = []
        for s in range(0, n, 8192):
            _, caps = location_encoder(coords[s : s + 8192], capsules=True)
            # The tree uses capsules 0 and 1 at most (levels deeper than 2 reuse 1).
            parts.append(caps[:, : min(n_levels, caps.shape[1])].copy())
            adv(len(caps))
    return np.concatenate(parts)


def _cluster_levels(
    config: TreeConfig, embeddings: np.ndarray, capsules: np.ndarray | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Level by level, every node of the level above split with k-means on its members.

    Returns each point's leaf node and, per level, each node's parent (nodes of a level
    numbered parent by parent)."""
    n = len(embeddings)
    features: dict[int, np.ndarray] = {}
    group = np.zeros(n, dtype=np.int64)  # node of the current level for every point
    n_groups = 1
    parents_per_level: list[np.ndarray] = []
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
    return group, parents_per_level


def _write_leaves(
    out_dir: Path, embeddings: np.ndarray, group: np.ndarray, n_groups: int, rep: Reporter
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaf blocks: gallery rows ordered by leaf (stable, so gallery order within
    one), as fp16. Returns the rows, each leaf's offset, and each leaf's embedding sum."""
    n, dim = embeddings.shape
    leaf_rows = np.argsort(group, kind="stable").astype(np.int64)
    leaf_offsets = np.searchsorted(group[leaf_rows], np.arange(n_groups + 1)).astype(np.int64)
    leaves = np.lib.format.open_memmap(out_dir / LEAVES, "w+", np.float16, (n, dim))
    sums = np.zeros((n_groups, dim), dtype=np.float64)
    with rep.task("Writing leaf blocks", total=n) as adv:
        start_cluster = 0
        while start_cluster < n_groups:
            # Whole clusters per chunk, so that reduceat sees complete blocks.
            a = int(leaf_offsets[start_cluster])
            end_cluster = int(np.searchsorted(leaf_offsets, a + CHUNK, side="right")) - 1
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
    return leaf_rows, leaf_offsets, sums


def _write_levels(
    out_dir: Path,
    config: TreeConfig,
    leaf_sums: np.ndarray,
    group: np.ndarray,
    parents_per_level: list[np.ndarray],
    coords: np.ndarray | None,
    location_encoder: LocationEncoder | None,
    files: list[str],
) -> list[int]:
    """Every level's node keys, child offsets and hnswlib index (their names added to
    ``files``); returns the number of nodes per level."""
    dim = leaf_sums.shape[1]
    # Node keys bottom-up: a node's member sum is the sum of its children's.
    level_sums: list[np.ndarray] = [leaf_sums]
    level_groups: list[np.ndarray] = [group]
    for level in range(len(config.levels) - 1, 0, -1):
        par = parents_per_level[level]
        up = np.zeros((len(parents_per_level[level - 1]), dim), dtype=np.float64)
        np.add.at(up, par, level_sums[0])
        level_sums.insert(0, up)
        level_groups.insert(0, par[level_groups[0]])
    nodes_per_level = []
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
        _write_npy(out_dir / nodes_file(level), keys if level == 0 else _f16(keys))
        files.append(nodes_file(level))
        if level > 0:
            # Nodes of a level are stored grouped by parent (k-means ran per parent).
            par = parents_per_level[level]
            offsets = np.searchsorted(par, np.arange(len(level_sums[level - 1]) + 1))
            _write_npy(out_dir / children_file(level), offsets.astype(np.int64))
            files.append(children_file(level))
        if hnswlib_available():
            save_hnsw(out_dir / hnsw_file(level), keys, config.seed)
            files.append(hnsw_file(level))
        nodes_per_level.append(len(keys))
    return nodes_per_level
