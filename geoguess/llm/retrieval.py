"""Retrieval for the prompts: the gallery places most and least like the photo.

Img2Loc shows the model the coordinates of the k most similar database entries and of
the k most dissimilar ones ("negative samples": places the photo is probably far
from). Here the database is the model set's GPS gallery, scored by cosine between the
image embedding and each gallery point's location embedding: the same score GeoCLIP
ranks by, so the similar list is GeoCLIP's own top-k.

The dissimilar list is the k *lowest* cosines, lowest first. (G3's code built it by
searching with a negated query over a negated index, which cancels out and returns
the similar list again.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..model import GeoModel
    from ..places import Place

__all__ = ["Reference", "Retrieval", "gallery_scores", "retrieve", "similar_and_dissimilar"]


@dataclass(frozen=True)
class Reference:
    """One gallery point shown to the model."""

    lat: float
    lon: float
    similarity: float  # cosine between the image and the point's location embedding
    index: int  # row in the gallery
    place: Place | None

    @property
    def place_text(self) -> str:
        from ..places import describe

        return describe(self.place) if self.place else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "similarity": round(self.similarity, 6),
            "place": self.place_text or None,
        }


@dataclass(frozen=True)
class Retrieval:
    similar: list[Reference]  # most similar first
    dissimilar: list[Reference]  # least similar first


def similar_and_dissimilar(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the k highest scores (highest first) and the k lowest (lowest first).

    Exact, O(N + k log k). With fewer than 2k rows the two lists overlap; that only
    happens with toy galleries.
    """
    scores = np.asarray(scores).ravel()
    n = len(scores)
    k = max(0, min(int(k), n))
    if k == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    if k < n:
        top = np.argpartition(-scores, k - 1)[:k]
        bottom = np.argpartition(scores, k - 1)[:k]
    else:
        top = bottom = np.arange(n)
    # Ties break on the row number so the prompts (and their cache keys) are stable.
    top = top[np.lexsort((top, -scores[top]))]
    bottom = bottom[np.lexsort((bottom, scores[bottom]))]
    return top.astype(np.int64), bottom.astype(np.int64)


#: Up to this many gallery rows, an fp32 copy of the gallery (what flat search uses) is
#: made for retrieval; above it, the fp16 gallery is scored in chunks instead.
FLAT_MAX_ROWS = 250_000
_CHUNK_ROWS = 65_536


def gallery_scores(geo: GeoModel, emb: np.ndarray) -> np.ndarray:
    """Cosine of a normalised embedding with every gallery point: all N, not a top-k."""
    # Reuse flat search's fp32 copy when it is already built (the cached property's
    # value); build it for galleries small enough that 4 bytes a value is cheap.
    flat = vars(geo).get("flat")
    embeddings = geo.gallery.embeddings
    if flat is None and len(embeddings) <= FLAT_MAX_ROWS:
        flat = geo.flat
    if flat is not None:
        return flat.embeddings @ emb
    return np.concatenate(
        [
            np.asarray(embeddings[i : i + _CHUNK_ROWS], dtype=np.float32) @ emb
            for i in range(0, len(embeddings), _CHUNK_ROWS)
        ]
    )


def retrieve(geo: GeoModel, embedding: np.ndarray, k: int) -> Retrieval:
    """The k most and k least similar gallery points to a normalised image embedding."""
    from ..places import nearest_places

    emb = np.asarray(embedding, dtype=np.float32).ravel()
    scores = gallery_scores(geo, emb)
    top, bottom = similar_and_dissimilar(scores, k)
    rows = np.concatenate([top, bottom])
    if len(rows) == 0:
        return Retrieval([], [])
    coords = np.asarray(geo.gallery.coords[rows], dtype=np.float64)
    places = nearest_places(coords[:, 0], coords[:, 1])
    refs = [
        Reference(float(c[0]), float(c[1]), float(scores[r]), int(r), p)
        for r, c, p in zip(rows, coords, places)
    ]
    return Retrieval(refs[: len(top)], refs[len(top) :])
