"""k-means, PCA and the mean position on the sphere: the numerics of building a tree.

Pure numpy, deterministic for a given seed (k-means++ seeding by one uniform draw per
centre, eigenvector signs fixed), so that rebuilding a tree gives bit-identical files.
"""

from __future__ import annotations

import numpy as np

# k-means trains on at most this many points per cluster, then assigns every point.
_KMEANS_SAMPLE_PER_CLUSTER = 256
_KMEANS_ITERS = 20
#: Rows per block in the chunked loops (bounds the temporary score matrices).
CHUNK = 32768


def _assign(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for every row of ``x``."""
    half_sq = 0.5 * np.einsum("ij,ij->i", centers, centers)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), CHUNK):
        out[s : s + CHUNK] = np.argmax(x[s : s + CHUNK] @ centers.T - half_sq, axis=1)
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
    for s in range(0, n, CHUNK):
        # float32 products (BLAS), float64 totals: exact enough, and 10x faster.
        block = np.asarray(x[s : s + CHUNK], dtype=np.float32)
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
    for s in range(0, n, CHUNK):
        out[s : s + CHUNK] = (np.asarray(x[s : s + CHUNK], dtype=np.float32) - m32) @ axes
    return out


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
