"""Beam search through a cluster tree, then exact scoring of the leaves under the beam.

Beam search keeps the best ``beam`` nodes at every level, then scores every leaf under
the beam exactly; ``beam=1`` is the published greedy walk, which cannot undo a wrong
coarse choice. Below the top the candidates are the beam's children, read in one call
(:class:`geoguess.gather_dot.RowScorer`).

The top level is scored one of two ways. Exactly: one matrix product with all its node
keys, which is exact, one BLAS call for a batch of queries and counted. Or through the
level's hnswlib index (``knn_query`` for the best ``beam`` nodes), which pays once the
level is wide: :data:`HNSW_MIN_TOP_NODES`. Levels below the top are always scored
exactly, since their candidates are the children of the beam, not the whole level.

Softmax subtlety: flat search normalises over the whole gallery, tree search only over
the reranked candidates, so the probabilities of the same point differ (tree ones are
larger). The ranking of the candidates is the same; agreement with flat search is
measured on the identity of the top-1 point.
"""

from __future__ import annotations

import numpy as np

from .errors import SetupError, UsageError
from .gather_dot import RowScorer
from .search import SearchResult, top_indices
from .tree import Tree, hnswlib_available

#: Beam width used when none is given (chosen with ``geoguess bench search``).
DEFAULT_BEAM = 24

TOP_ROUTES = ("auto", "exact", "hnsw")

#: ``top="auto"`` queries the top level's hnswlib index from this many nodes up and
#: scores the level exactly below. Measured with ``python benchmarks/tree_crossover.py
#: --scale 1000000`` on the keys of trees over 1M location embeddings (proxy queries,
#: k = 24, one core, 2-core machine): per query, hnswlib at recall >= 0.99 costs 47 vs
#: 66 us for 1,000 nodes, 79 vs 138 for 2,000, 134 vs 364 for 5,000, 168 vs 2,390 for
#: 10,000 and 1,583 vs 13,550 for 50,000; exact scoring of a batch of 16 queries (one
#: matrix product, as geoguess locates photos) costs 51, 68, 260, 545 and 2,730 us per
#: query. 3,000 nodes is where hnswlib wins both ways; below it exact scoring is about
#: as fast, and exact and counted. (On random unit vectors hnswlib never wins: at
#: recall 0.99 it computes about as many distances as the level has nodes.) Rerun on a
#: 2-core Intel Xeon with AMX (300 queries): hnswlib 28, 36, 58, 82 and 342 us against
#: 30, 58, 141, 251 and 1,738 for batched exact scoring, so there the crossover is near
#: 1,000 nodes; keeping 3,000 costs under 25 us per query between the two.
HNSW_MIN_TOP_NODES = 3_000

#: The smallest ef that kept hnswlib's recall of the exact best 8, 24 and 32 nodes at
#: >= 0.99 for levels up to each width (same measurements); it grows with the width
#: and hardly with the beam. Wider levels get the last value, which was not measured.
HNSW_EF_BY_WIDTH = ((1_000, 48), (2_000, 64), (10_000, 96), (20_000, 192), (50_000, 768))


def hnsw_ef(beam: int, width: int) -> int:
    """hnswlib's ef for the best ``beam`` of ``width`` nodes: :data:`HNSW_EF_BY_WIDTH`,
    and at least twice the beam."""
    ef = next((e for w, e in HNSW_EF_BY_WIDTH if width <= w), HNSW_EF_BY_WIDTH[-1][1])
    return max(ef, 2 * beam)


class TreeSearch:
    """Beam search through a :class:`~geoguess.tree.Tree`; a
    :class:`~geoguess.search.Searcher`, like :class:`~geoguess.search.FlatSearch`.

    ``top``: ``exact`` scores every top-level node; ``hnsw`` asks the top level's hnswlib
    index for the best ``beam`` nodes (``ef`` defaults to :func:`hnsw_ef`); ``auto``
    uses hnswlib when it is installed, the tree has the index and the top level has
    at least :data:`HNSW_MIN_TOP_NODES` nodes.

    ``compared`` counts the dot products geoguess computes: node keys scored exactly and
    leaves. hnswlib's Python API does not report its distance computations, so an
    hnswlib-routed top level adds none (``benchmarks/search.py`` counts them by
    replaying hnswlib's search). Probabilities are a softmax over the reranked
    candidates only (see the module docstring).
    """

    def __init__(
        self,
        tree: Tree,
        logit_scale: float,
        *,
        beam: int | None = None,
        threads: int = 1,
        top: str = "auto",
        ef: int | None = None,
    ) -> None:
        self.tree = tree
        self.logit_scale = float(logit_scale)
        self.beam = int(beam or DEFAULT_BEAM)
        if self.beam < 1:
            raise UsageError(f"beam must be at least 1, got {self.beam}")
        if top not in TOP_ROUTES:
            raise UsageError(f"top must be one of {', '.join(TOP_ROUTES)}, got {top!r}")
        self.threads = threads
        self._scorer = RowScorer(tree.nodes[0].shape[1], threads=threads)
        usable = tree.has_hnsw(0) and hnswlib_available()
        if top == "hnsw" and not usable:
            raise SetupError(
                "this tree has no hnswlib index or hnswlib is not installed "
                "(pip install 'geoguess[hnsw]', then rebuild the tree)"
            )
        wide = len(tree.nodes[0]) >= HNSW_MIN_TOP_NODES
        self.top = "hnsw" if top == "hnsw" or (top == "auto" and usable and wide) else "exact"
        self.ef = int(ef or hnsw_ef(self.beam, len(tree.nodes[0])))
        if self.top == "hnsw":
            tree.hnsw(0)  # open (and check) the index now, not at the first query

    def __len__(self) -> int:
        return self.tree.size

    def top_nodes(self, queries: np.ndarray) -> tuple[np.ndarray, int]:
        """(Q, <= beam) best top-level nodes of every query, best first, and the dot
        products spent on each query (0 when hnswlib chose them)."""
        keys = self.tree.nodes[0]
        k = min(self.beam, len(keys))
        if self.top == "hnsw":
            index = self.tree.hnsw(0)
            index.set_ef(max(self.ef, k))
            labels, _ = index.knn_query(queries, k=k, num_threads=self.threads)
            return labels.astype(np.int64), 0
        scores = queries @ keys.T
        return np.stack([top_indices(row, k) for row in scores]), len(keys)

    def candidates(self, query: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, int]:
        """Leaf positions under the beam below top-level nodes ``chosen`` for one query,
        and the dot products spent on the levels below the top."""
        tree, beam, spent = self.tree, self.beam, 0
        for level in range(1, tree.depth):
            kids = tree.children_of(level, chosen)
            spent += len(kids)
            scores = self._scorer(tree.nodes[level], kids, query)
            chosen = kids[top_indices(scores, beam)]
        return tree.leaf_positions(chosen), spent

    def search(self, queries: np.ndarray, top_k: int) -> list[SearchResult]:
        """``queries``: (Q, D) normalised image embeddings."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        tops, top_spent = self.top_nodes(q)
        out = []
        for row, chosen in zip(q, tops):
            positions, spent = self.candidates(row, chosen)
            logits = self.logit_scale * self._scorer(self.tree.leaves, positions, row)
            exp = np.exp(logits - logits.max())
            probs = exp / exp.sum()
            order = top_indices(logits, max(1, min(int(top_k), len(logits))))
            rows = self.tree.leaf_rows[positions]
            out.append(
                SearchResult(
                    indices=rows[order],
                    probabilities=probs[order],
                    compared=top_spent + spent + len(positions),
                    support_probs=probs,
                    support_indices=rows,
                )
            )
        return out
