"""Scoring an image embedding against a GPS gallery.

Flat search is GeoCLIP's own rule: softmax(logit_scale * cosine) over every gallery
point. It is exact and the reference that faster searches are measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class SearchResult:
    indices: np.ndarray  # (top_k,) gallery rows, best first
    probabilities: np.ndarray  # (top_k,) softmax over the whole gallery
    compared: int  # dot products computed
    # The probability of every candidate the search scored (flat: the whole gallery),
    # for the spread of the answer. ``support_indices`` None means all rows in order.
    support_probs: np.ndarray | None = None
    support_indices: np.ndarray | None = None


class Searcher(Protocol):
    """What the Geolocator searches with: :class:`FlatSearch` or
    :class:`geoguess.tree_search.TreeSearch`."""

    def __len__(self) -> int:
        """Points in the gallery searched."""
        ...

    def search(self, queries: np.ndarray, top_k: int) -> list[SearchResult]:
        """One result per row of ``queries`` ((Q, D) normalised image embeddings)."""
        ...


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first.

    argpartition then sort the k: O(N + k log k) instead of a full sort.
    """
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class FlatSearch:
    """Exact search over normalised gallery embeddings (N, D)."""

    def __init__(self, embeddings: np.ndarray, logit_scale: float) -> None:
        # BLAS wants float32; the Geolocator passes a cached float32 copy of the fp16
        # gallery on disk (geoguess.derived), other callers get one made here.
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.logit_scale = float(logit_scale)

    def __len__(self) -> int:
        return len(self.embeddings)

    def logits(self, queries: np.ndarray) -> np.ndarray:
        return self.logit_scale * (queries @ self.embeddings.T)

    def search(self, queries: np.ndarray, top_k: int) -> list[SearchResult]:
        """``queries``: (Q, D) normalised image embeddings."""
        top_k = max(1, min(int(top_k), len(self)))
        logits = self.logits(np.atleast_2d(queries).astype(np.float32, copy=False))
        out = []
        for row in logits:
            m = row.max()
            exp = np.exp(row - m)
            total = exp.sum()
            order = top_indices(row, top_k)
            probs = exp / total
            out.append(SearchResult(order, probs[order], compared=len(row), support_probs=probs))
        return out


@dataclass(frozen=True)
class DuplicateGroups:
    """Gallery rows that hold the same coordinate (GeoCLIP's MP16 gallery repeats 10,200
    of its 100K points, up to 38 times). ``group[i]`` is row i's group; ``first[g]`` the
    first row of group g, which stands for it."""

    group: np.ndarray  # (N,) int64
    first: np.ndarray  # (G,) int64

    @classmethod
    def of(cls, coords: np.ndarray) -> DuplicateGroups | None:
        """The groups of ``coords`` ((N, 2) float32), or None when all are distinct."""
        # Each float32 pair read as one 64-bit key: equal coordinates, equal keys
        # (unique over a 1-D key is ten times faster than over rows).
        key = np.ascontiguousarray(coords, dtype=np.float32).view(np.uint64).ravel()
        _, first, group = np.unique(key, return_index=True, return_inverse=True)
        if len(first) == len(key):
            return None
        return cls(group.astype(np.int64).ravel(), first.astype(np.int64))


def merge_duplicates(result: SearchResult, groups: DuplicateGroups, top_k: int) -> SearchResult:
    """``result`` with each coordinate one candidate, the probabilities of its copies
    summed, best first; the support (and so the spread) is unchanged.

    With the support's probabilities the sum is over every copy the search scored;
    without them, over the copies among the candidates returned.
    """
    if result.support_probs is not None:
        rows = (
            np.arange(len(groups.group))
            if result.support_indices is None
            else np.asarray(result.support_indices)
        )
        mass = np.bincount(
            groups.group[rows], weights=result.support_probs, minlength=len(groups.first)
        )
        best = top_indices(mass, max(1, min(top_k, int(np.count_nonzero(mass)) or 1)))
        return SearchResult(
            groups.first[best],
            mass[best],
            compared=result.compared,
            support_probs=result.support_probs,
            support_indices=result.support_indices,
        )
    ids = groups.group[result.indices]
    seen: dict[int, int] = {}
    probs: list[float] = []
    for g, p in zip(ids.tolist(), result.probabilities.tolist()):
        if g in seen:
            probs[seen[g]] += p
        else:
            seen[g] = len(probs)
            probs.append(p)
    order = np.argsort(-np.array(probs), kind="stable")[:top_k]
    firsts = groups.first[np.array(list(seen))][order]
    return SearchResult(
        firsts,
        np.array(probs)[order],
        compared=result.compared,
        support_probs=result.support_probs,
        support_indices=result.support_indices,
    )
