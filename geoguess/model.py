"""The loaded model set: encoders, gallery and search, below the photo-level API.

Everything that works on photos (``locate``, ``scan``, the LLM, maps, evaluation) takes
one of these; :class:`geoguess.geolocator.Geolocator` adds those photo methods on top,
so this module depends on none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from . import derived
from .encoders import ImageEncoder, LocationEncoder, l2_normalize
from .errors import SetupError, UsageError
from .manifest import GalleryEntry, check_precision
from .preprocess import Preprocess
from .providers import providers_for
from .search import DuplicateGroups, FlatSearch, Searcher, SearchResult, merge_duplicates
from .store import InstalledModel, get_model

if TYPE_CHECKING:
    from PIL import Image

    from .areas import Areas


@dataclass(frozen=True)
class Prediction:
    lat: float
    lon: float
    probability: float
    index: int  # row in the gallery

    def to_dict(self) -> dict[str, Any]:
        return {
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "probability": float(self.probability),
        }


@dataclass(frozen=True)
class Gallery:
    name: str
    coords: np.ndarray  # (N, 2) float32 lat/lon
    open_embeddings: Callable[[], np.ndarray] = field(repr=False, compare=False)

    @cached_property
    def embeddings(self) -> np.ndarray:
        """(N, D) float16, normalised, memory-mapped; checked and opened on first use,
        so a start that finds the float32 copy in the derived cache never reads them."""
        return self.open_embeddings()


#: ``search="auto"`` uses a gallery's tree from this size on, flat search below it.
#: Measured with ``geoguess bench search`` (README): the tree meets its targets on 100K
#: and 1M points, but on 100K exact search costs ~12-19 ms against ~700 ms for the
#: ViT-L/14 image encoder, so exactness (and GeoCLIP's own probabilities) win there; on
#: 1M it costs ~190 ms and 2 GB of fp32 RAM against ~0.5 ms for the tree.
AUTO_TREE_MIN_POINTS = 500_000
SEARCH_MODES = ("auto", "flat", "tree")


def _check_search_mode(mode: str) -> None:
    if mode not in SEARCH_MODES:
        raise UsageError(f"search must be auto, flat or tree, got {mode!r}")


def model_record(geo: Any) -> dict[str, Any]:
    """The ``model`` record of JSON output and of a scan's settings: which model set,
    encoder precision and gallery made an answer, and whether its weights are random.
    ``geo`` is a :class:`GeoModel` or anything with the same attributes (a Ray scan)."""
    return {
        "name": geo.model.name,
        "precision": geo.precision,
        "gallery": geo.gallery_name,
        "random_weights": geo.random_weights,
    }


def default_precision(model: InstalledModel, on_cuda: bool) -> str:
    have = model.manifest.image_encoders
    order = ("fp16", "fp32") if on_cuda else ("int8", "fp32")
    for p in order:
        if p in have:
            return p
    return next(iter(have))


class GeoModel:
    """A loaded model set: image encoder, location encoder and a gallery.

    Encoders load lazily, so ``Geolocator.load()`` is cheap until the first prediction.
    """

    def __init__(
        self,
        model: InstalledModel,
        *,
        precision: str | None = None,
        device: str = "auto",
        gallery: str | None = None,
        threads: int | None = None,
        search: str = "auto",
        beam: int | None = None,
        exact_decode: bool = False,
        merge_duplicates: bool = True,
    ) -> None:
        """``exact_decode``: decode JPEGs at full resolution, as GeoCLIP's own
        preprocessing does, instead of at a reduced DCT scale (see geoguess.locate).
        ``merge_duplicates``: a coordinate the gallery holds several times is one
        candidate with the probabilities of its copies summed; False gives GeoCLIP's
        raw gallery rows, as its own ``predict`` does."""
        self.model = model
        self.merge_duplicates = merge_duplicates
        self.exact_decode = exact_decode
        self.device = device
        self.threads = threads
        manifest = model.manifest
        on_cuda = providers_for(device)[0] == "CUDAExecutionProvider"
        check_precision(precision)
        self.precision = precision or default_precision(model, on_cuda)
        if self.precision not in manifest.image_encoders:
            raise UsageError(
                f"model set {model.name!r} has no {self.precision} image encoder "
                f"(it has: {', '.join(manifest.image_encoders)})"
            )
        self.gallery_name, _ = manifest.gallery(gallery, model_name=model.name)
        self.preprocess = Preprocess.from_manifest(manifest.preprocess)
        self.logit_scale = manifest.logit_scale
        _check_search_mode(search)
        if beam is not None and beam < 1:
            raise UsageError(f"beam must be at least 1, got {beam}")
        self.search_mode = search
        self.beam = beam

    @classmethod
    def load(cls, model: str | None = None, **kwargs: Any) -> Self:
        """Open an installed model set by name (default: ``GEOGUESS_MODEL`` or the default)."""
        return cls(get_model(model), **kwargs)

    @property
    def random_weights(self) -> bool:
        return self.model.manifest.random_weights

    @cached_property
    def image_encoder(self) -> ImageEncoder:
        rel = self.model.manifest.image_encoders[self.precision]
        return ImageEncoder(
            self.model.file(rel),
            self.device,
            threads=self.threads,
            source_sha256=self.model.content_sha256(rel),
            cache_dir=derived.cache_dir(),
            per_image=self.precision == "int8",
        )

    @cached_property
    def location_encoder(self) -> LocationEncoder:
        return LocationEncoder(
            self.model.file(self.model.manifest.location_encoder), self.device, threads=self.threads
        )

    @property
    def gallery_entry(self) -> GalleryEntry:
        """The manifest's entry of the gallery searched (its files, size and trees)."""
        return self.model.manifest.galleries[self.gallery_name]

    @cached_property
    def gallery(self) -> Gallery:
        entry = self.gallery_entry
        coords = np.load(self.model.file(entry.coords), allow_pickle=False)

        def embeddings() -> np.ndarray:
            path = self.model.file(entry.embeddings)
            return np.load(path, mmap_mode="r", allow_pickle=False)

        return Gallery(self.gallery_name, coords, embeddings)

    @cached_property
    def areas(self) -> Areas | None:
        """Each gallery point's country and region (None for galleries built before
        geoguess stored them: rebuild the gallery to get them)."""
        from .areas import load_areas

        rel = self.gallery_entry.areas
        if rel is None:
            return None
        path = self.model.file(rel)
        try:
            return load_areas(path, len(self.gallery.coords))
        except (OSError, ValueError, KeyError) as exc:
            raise SetupError(
                f"{path}: cannot read the gallery's areas ({exc}); "
                f"rebuild model set {self.model.name!r}"
            ) from exc

    @cached_property
    def point_names(self) -> np.ndarray | None:
        """A custom gallery's own name for each point (its CSV's NAME column), if any."""
        rel = self.gallery_entry.names
        if rel is None:
            return None
        return np.load(self.model.file(rel), allow_pickle=False)

    @cached_property
    def gallery_vectors(self) -> np.ndarray:
        """The gallery points as (3, N) unit vectors, for the spread of each answer."""
        from .geo import to_unit_vectors

        coords = self.gallery.coords
        return np.ascontiguousarray(to_unit_vectors(coords[:, 0], coords[:, 1]).T)

    @cached_property
    def flat(self) -> FlatSearch:
        rel = self.gallery_entry.embeddings
        gallery = self.gallery
        wide = derived.float32_embeddings(
            lambda: gallery.embeddings, self.model.manifest.files[rel].sha256
        )
        return FlatSearch(wide, self.logit_scale)

    @cached_property
    def searcher(self) -> Searcher:
        """FlatSearch or TreeSearch, as ``search`` and ``beam`` ask (see open_searcher)."""
        return self.open_searcher(self.search_mode, self.beam)

    def open_searcher(self, mode: str = "auto", beam: int | None = None) -> Searcher:
        """The search over this gallery: ``flat``, ``tree`` or ``auto``.

        ``auto`` picks the gallery's tree when it has one and either the gallery has at
        least :data:`AUTO_TREE_MIN_POINTS` points or a beam was asked for; otherwise flat.
        """
        _check_search_mode(mode)
        if mode == "flat":
            return self.flat
        entry = self.gallery_entry
        tree_entry = entry.trees.get(entry.default_tree or "")
        large = entry.size >= AUTO_TREE_MIN_POINTS
        if mode == "auto" and (not (large or beam) or tree_entry is None):
            return self.flat
        if tree_entry is None:
            raise UsageError(
                f"gallery {self.gallery_name!r} of model set {self.model.name!r} has no "
                f"search tree; build one with: geoguess models tree --gallery {self.gallery_name}"
            )
        from .tree import Tree
        from .tree_search import TreeSearch

        folder = tree_entry.dir
        # Every tree file is checked against the manifest's sha256 before use.
        tree = Tree.load(
            self.model.path / folder, open_file=lambda name: self.model.file(f"{folder}/{name}")
        )
        return TreeSearch(tree, self.logit_scale, beam=beam)

    @property
    def provider(self) -> str:
        return self.image_encoder.provider

    @property
    def default_batch_size(self) -> int:
        """Photos per encoder run when the caller does not say: a GPU wants large
        batches; on a CPU one ViT-L image is already a large GEMM, so batches only need
        to be big enough for the decoders to run ahead."""
        return 64 if self.image_encoder.session.on_cuda else 16

    # --- embeddings ---------------------------------------------------------------------

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.preprocess.batch(images)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, 224, 224) preprocessed pixels -> (N, 512) normalised embeddings."""
        return l2_normalize(self.image_encoder(pixels))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_pixels(self.pixels(images))

    def embed_locations(self, latlon: np.ndarray) -> np.ndarray:
        """(N, 2) lat/lon degrees -> (N, 512) normalised location embeddings."""
        return l2_normalize(self.location_encoder(np.asarray(latlon, dtype=np.float32)))

    # --- prediction ---------------------------------------------------------------------

    def search(self, embeddings: np.ndarray, top_k: int = 5) -> list[SearchResult]:
        """Raw gallery search for (Q, D) normalised embeddings."""
        if top_k < 1:
            raise UsageError(f"top-k must be at least 1, got {top_k}")
        found = self.searcher.search(embeddings, top_k)
        groups = self.duplicate_groups if self.merge_duplicates else None
        if groups is None:
            return found
        if any(r.support_probs is None for r in found):
            # Merging within the candidates alone would return fewer than asked for;
            # ask for more so that k distinct places remain.
            found = self.searcher.search(embeddings, top_k * 4)
        return [merge_duplicates(r, groups, top_k) for r in found]

    @cached_property
    def duplicate_groups(self) -> DuplicateGroups | None:
        """Rows of the gallery sharing a coordinate (None when there are none)."""
        return DuplicateGroups.of(self.gallery.coords)

    def predictions(self, result: SearchResult) -> list[Prediction]:
        coords = self.gallery.coords
        return [
            Prediction(float(coords[i, 0]), float(coords[i, 1]), float(p), int(i))
            for i, p in zip(result.indices, result.probabilities)
        ]

    def predict_embeddings(self, embeddings: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        return [self.predictions(r) for r in self.search(embeddings, top_k)]

    def predict_images(
        self, images: Sequence[Image.Image], top_k: int = 5
    ) -> list[list[Prediction]]:
        return self.predict_embeddings(self.embed_images(images), top_k)
