"""The cluster tree over a GPS gallery: its shape, its files and loading them.

A tree is built once per gallery (:mod:`geoguess.tree_build`) and descended with beam
search (:mod:`geoguess.tree_search`). On disk it is a folder of ``.npy`` arrays, an
hnswlib index per level (when hnswlib was installed at build time) and a ``tree.json``:

* ``nodes-<level>.npy``: the node keys of every level (normalised mean of the members'
  embeddings), fp32 at level 0, fp16 below;
* ``children-<level>.npy``: for levels below the top, where the children of every node
  of the level above start (the nodes of a level are stored grouped by parent);
* ``leaves.npy``: the gallery's fp16 embeddings reordered so that every leaf cluster is
  one contiguous block of a memory-mapped file, so a query touches only the clusters it
  visits; ``leaf-offsets.npy`` where each cluster starts, ``leaf-rows.npy`` the gallery
  row of every leaf;
* ``hnsw-<level>.bin``: hnswlib's inner-product index over that level's node keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SetupError, UsageError

TREE_FORMAT = 1
TREE_META = "tree.json"
LEAVES = "leaves.npy"
LEAF_OFFSETS = "leaf-offsets.npy"
LEAF_ROWS = "leaf-rows.npy"

FEATURES = ("embedding", "capsules")
NODE_KEYS = ("mean", "gps")
MAX_DEPTH = 4


def nodes_file(level: int) -> str:
    return f"nodes-{level}.npy"


def children_file(level: int) -> str:
    return f"children-{level}.npy"


def hnsw_file(level: int) -> str:
    return f"hnsw-{level}.bin"


# --- configuration ----------------------------------------------------------------------


def parse_levels(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"20,100"`` -> ``(20, 100)``: clusters at level 0, then children per node."""
    if isinstance(text, str):
        from .number_lists import parse_number_list

        levels = tuple(parse_number_list(text, int, "tree levels", separators=",x"))
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


def hnswlib_available() -> bool:
    """hnswlib is optional (``pip install 'geoguess[hnsw]'``): it ships source only for
    some platforms and needs a C++ compiler there; without it trees are built without
    their hnswlib indexes and descended by exact scoring."""
    import importlib.util

    try:
        return importlib.util.find_spec("hnswlib") is not None
    except ValueError:  # sys.modules["hnswlib"] is None: importing it is blocked
        return False


def ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for every pair, without a Python loop."""
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return shift + np.arange(total, dtype=np.int64)


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
    _hnsw: dict[int, Any] = field(repr=False, default_factory=dict)

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
        nodes = [np.ascontiguousarray(load(nodes_file(i))) for i in range(depth)]
        nodes[0] = nodes[0].astype(np.float32, copy=False)
        children: list[np.ndarray | None] = [None] + [
            load(children_file(i)) for i in range(1, depth)
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

    def children_of(self, level: int, nodes: np.ndarray) -> np.ndarray:
        """Positions in ``level`` of the children of ``nodes`` (positions in level - 1)."""
        offsets = self.children[level]
        assert offsets is not None, "level 0 has no parents"
        return ranges(offsets[nodes], offsets[nodes + 1])

    def leaf_positions(self, nodes: np.ndarray) -> np.ndarray:
        """Positions in ``leaves`` of the members of ``nodes`` (of the last level)."""
        return ranges(self.leaf_offsets[nodes], self.leaf_offsets[nodes + 1])

    def has_hnsw(self, level: int) -> bool:
        """Whether the tree was built with an hnswlib index for ``level``."""
        return hnsw_file(level) in self.meta.get("files", ())

    def hnsw(self, level: int) -> Any:
        """The hnswlib inner-product index over the nodes of ``level`` (loaded on first
        use; needs hnswlib, and the index written when the tree was built)."""
        if level not in self._hnsw:
            import hnswlib

            keys = self.nodes[level]
            index = hnswlib.Index(space="ip", dim=keys.shape[1])
            index.load_index(str(self._paths(hnsw_file(level))), max_elements=len(keys))
            self._hnsw[level] = index
        return self._hnsw[level]
