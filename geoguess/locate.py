"""Locating photos: decode, read EXIF, encode, search, name the places.

The work is split into :func:`prepare` (decoding and preprocessing, CPU-bound and
thread-friendly: Pillow releases the GIL), the encoder batch, and :func:`finish`
(search, place names, spread), so a folder scan can overlap them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .areas import AreaShare
    from .exif import PhotoMetadata
    from .model import GeoModel, Prediction
    from .places import Place
    from .search import SearchResult

Source = str | Path | bytes | BinaryIO

#: Probability mass levels reported as the spread of the candidates.
SPREAD_LEVELS = (0.5, 0.9)

#: JPEGs decode at the largest DCT reduction (1/2, 1/4, 1/8) that keeps the short side at
#: least this many times the model's input size. The final resize then still shrinks
#: the photo at least twofold through CLIP's antialiased bicubic filter, so pixels stay
#: within a few grey levels of a full decode (cosine to it 1.000000 on a 3264 x 2448
#: photo with the ViT-L/14 geometry) while a 12 MP photo decodes about four times
#: faster. ``Geolocator(exact_decode=True)`` / ``--exact-decode`` decodes in full.
DECODE_FACTOR = 2


@dataclass
class Candidate:
    prediction: Prediction
    place: Place | None
    distance_from_best_km: float
    # A custom gallery's own name for the point (its CSV's NAME column), when it has one.
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = self.prediction.to_dict()
        d["place"] = self.place.to_dict() if self.place else None
        d["label"] = self.label
        d["distance_from_best_km"] = round(self.distance_from_best_km, 1)
        return d


@dataclass
class LocateResult:
    file: str
    candidates: list[Candidate] = field(default_factory=list)
    metadata: PhotoMetadata | None = None
    exif_place: Place | None = None
    spread_km: dict[float, float] = field(default_factory=dict)
    error: str | None = None
    # The answer's probability summed by country and by region, largest first
    # (geoguess.areas); empty when the gallery has no areas.
    countries: list[AreaShare] = field(default_factory=list)
    regions: list[AreaShare] = field(default_factory=list)
    # The normalised image embedding, kept so that later steps (LLM refinement) need
    # not encode the photo again. Not part of to_dict().
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    # A geoguess.llm.Refinement when --llm was asked for; to_dict() adds it as "llm".
    llm: Any = None

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def exif_gps(self) -> tuple[float, float] | None:
        gps = self.metadata.gps if self.metadata else None
        return (gps.lat, gps.lon) if gps else None

    @property
    def exif_error_km(self) -> float | None:
        """Distance from the best guess to the photo's own EXIF GPS, when it has one."""
        from .geo import haversine_km

        if self.best is None or self.exif_gps is None:
            return None
        p = self.best.prediction
        return float(haversine_km(p.lat, p.lon, *self.exif_gps))

    @property
    def confidence(self) -> str | None:
        """How sure the answer is, in words: the accuracy level (street, city, region,
        country, continent, world) of the radius holding half the probability."""
        from .geo import accuracy_level

        return accuracy_level(self.spread_km.get(0.5))

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` record. Fields are only ever added, never renamed."""
        gps = self.exif_gps
        err = self.exif_error_km
        record = {
            "file": self.file,
            "predictions": [c.to_dict() for c in self.candidates],
            "spread_km": {f"p{int(q * 100)}": round(r, 1) for q, r in self.spread_km.items()},
            "confidence": self.confidence,
            "countries": [a.to_dict() for a in self.countries],
            "regions": [a.to_dict() for a in self.regions],
            "exif_gps": None if gps is None else {"lat": gps[0], "lon": gps[1]},
            "exif_place": self.exif_place.to_dict() if self.exif_place else None,
            "exif_error_km": None if err is None else round(err, 1),
            "exif": self.metadata.to_dict() if self.metadata else None,
            "error": self.error,
        }
        if self.llm is not None:
            record["llm"] = self.llm.to_dict()
        return record


@dataclass
class Prepared:
    name: str
    pixels: np.ndarray | None
    metadata: PhotoMetadata | None
    error: str | None = None


def display_name(source: Source, name: str | None = None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    return "<stdin>"


def prepare(geo: GeoModel, source: Source, *, name: str | None = None) -> Prepared:
    """Decode and preprocess one photo and read its metadata; never raises for bad input.

    Large JPEGs decode at a reduced scale unless ``geo.exact_decode`` (see
    :data:`DECODE_FACTOR`).
    """
    from .exif import read_metadata
    from .images import load_image

    label = display_name(source, name)
    if not isinstance(source, (str, Path, bytes)):
        source = source.read()  # a stream is read once, then used for pixels and EXIF
    metadata = read_metadata(source, name=label)
    try:
        target = None if geo.exact_decode else DECODE_FACTOR * geo.preprocess.size
        image = load_image(source, name=label, target_size=target)
        pixels = geo.preprocess(image)
    except InputError as exc:
        return Prepared(label, None, metadata, exc.problem)
    return Prepared(label, pixels, metadata)


def finish(
    geo: GeoModel,
    prepared: Prepared,
    embedding: np.ndarray | None,
    *,
    top_k: int = 5,
    found: SearchResult | None = None,
) -> LocateResult:
    """Search the gallery for one embedding and describe the answer.

    ``found`` is this embedding's row of a batched ``geo.search`` done by the caller
    (one matrix product over the gallery for a whole batch is several times cheaper
    than one per photo); without it the embedding is searched here.
    """
    from .geo import haversine_km, spread_radii
    from .places import nearest_places

    result = LocateResult(
        prepared.name, metadata=prepared.metadata, error=prepared.error, embedding=embedding
    )
    gps = result.exif_gps
    if embedding is None:
        if gps is not None:
            result.exif_place = nearest_places([gps[0]], [gps[1]])[0]
        return result
    if found is None:
        found = geo.search(embedding[None, :], top_k)[0]
    preds = geo.predictions(found)
    lats = np.array([p.lat for p in preds])
    lons = np.array([p.lon for p in preds])
    q_lats, q_lons = list(lats), list(lons)
    if gps is not None:
        q_lats.append(gps[0])
        q_lons.append(gps[1])
    places = nearest_places(q_lats, q_lons)
    dist = haversine_km(lats[0], lons[0], lats, lons)
    names = geo.point_names
    result.candidates = [
        Candidate(
            p, places[i], float(dist[i]), None if names is None else str(names[p.index]) or None
        )
        for i, p in enumerate(preds)
    ]
    if gps is not None:
        result.exif_place = places[-1]
    # Spread over everything the search scored, not just the k shown, so that it does
    # not change with --top-k.
    coords = geo.gallery.coords
    if found.support_probs is not None:
        vectors = geo.gallery_vectors
        support = coords
        if found.support_indices is not None:
            support = coords[found.support_indices]
            vectors = vectors[:, found.support_indices]
        result.spread_km = spread_radii(
            support[:, 0],
            support[:, 1],
            found.support_probs,
            center=(preds[0].lat, preds[0].lon),
            levels=SPREAD_LEVELS,
            vectors=vectors,
        )
        areas = geo.areas
        if areas is not None:
            result.countries, result.regions = areas.shares(
                found.support_probs, found.support_indices
            )
    return result


def locate(
    geo: GeoModel, source: Source, *, top_k: int = 5, name: str | None = None
) -> LocateResult:
    """Locate one photo (a path, bytes, or a binary stream)."""
    return locate_many(geo, [source], top_k=top_k, names=[name])[0]


def locate_many(
    geo: GeoModel,
    sources: Sequence[Source],
    *,
    top_k: int = 5,
    names: Sequence[str | None] | None = None,
) -> list[LocateResult]:
    """Locate several photos with one encoder batch; bad inputs get an ``error``."""
    names = names or [None] * len(sources)
    prepared = [prepare(geo, s, name=n) for s, n in zip(sources, names)]
    ok = [i for i, p in enumerate(prepared) if p.pixels is not None]
    embeddings: dict[int, np.ndarray] = {}
    found: dict[int, SearchResult] = {}
    if ok:
        emb = geo.embed_pixels(np.stack([prepared[i].pixels for i in ok]))
        # One pass over the gallery for the whole batch, as scan does.
        results = geo.search(emb, top_k)
        embeddings = {i: emb[j] for j, i in enumerate(ok)}
        found = {i: results[j] for j, i in enumerate(ok)}
    return [
        finish(geo, p, embeddings.get(i), top_k=top_k, found=found.get(i))
        for i, p in enumerate(prepared)
    ]


def locate_batches(
    geo: GeoModel,
    sources: Sequence[Source],
    *,
    top_k: int = 5,
    names: Sequence[str | None] | None = None,
    batch_size: int | None = None,
) -> Iterator[tuple[Sequence[Source], list[LocateResult]]]:
    """:func:`locate_many` over consecutive batches (``geo.default_batch_size`` photos),
    yielding each batch's sources with their results in input order: memory stays
    bounded for a long list, and a refiner can see the photos it refines."""
    size = batch_size or geo.default_batch_size
    all_names = list(names) if names is not None else [None] * len(sources)
    for start in range(0, len(sources), size):
        batch = sources[start : start + size]
        yield batch, locate_many(geo, batch, top_k=top_k, names=all_names[start : start + size])
