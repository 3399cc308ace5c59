"""Refining a GeoCLIP answer with a vision language model (Img2Loc / G3 style).

For one photo: retrieve the gallery points most and least like it, ask the model
several prompts with different numbers of those references (several answers each),
read coordinates out of the answers, then let the location encoder choose among the
model's answers and GeoCLIP's own top candidates (geo-verification).

Nothing about the model's availability stops a run: when every request fails or no
answer can be read, the result falls back to GeoCLIP's answer and says why.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .client import Completion, LLMClient, Usage
from .parsing import AnswerError, parse_answer
from .privacy import redact
from .prompts import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    EncodedImage,
    PromptSpec,
    build_messages,
    encode_image,
    user_text,
)
from .retrieval import Retrieval, retrieve
from .settings import LLMSettings
from .verify import rank_by_score, verification_scores

if TYPE_CHECKING:
    from ..locate import LocateResult
    from ..model import GeoModel
    from ..places import Place

__all__ = [
    "RefinedCandidate",
    "Refinement",
    "Refiner",
    "RejectedAnswer",
    "refine",
]

ImageInput = str | Path | bytes

_REJECTED_TEXT_CHARS = 200


@dataclass
class RefinedCandidate:
    """One coordinate in the verification pool."""

    lat: float
    lon: float
    source: str  # "llm" or "retrieval"
    score: float = float("nan")  # cosine with the image embedding (higher is better)
    rank: int | None = None  # retrieval: GeoCLIP rank, from 1
    prompt: PromptSpec | None = None  # llm: which prompt
    sample: int | None = None  # llm: which answer to that prompt, from 1
    model_place: str | None = None  # llm: the model's own name for the place
    reason: str | None = None  # llm: the model's explanation
    place: Place | None = None  # nearest known town (offline)
    distance_from_retrieval_km: float = 0.0  # to GeoCLIP's top answer

    @property
    def source_label(self) -> str:
        if self.source == "retrieval":
            return f"retrieval #{self.rank}"
        assert self.prompt is not None
        return f"{self.prompt.label}, sample {self.sample}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "score": round(self.score, 6),
            "source": self.source,
            "rank": self.rank,
            "prompt": self.prompt.to_dict() if self.prompt else None,
            "sample": self.sample,
            "place": self.place.to_dict() if self.place else None,
            "model_place": self.model_place,
            "reason": self.reason,
            "distance_from_retrieval_km": round(self.distance_from_retrieval_km, 1),
        }


@dataclass(frozen=True)
class RejectedAnswer:
    """An answer that gave no usable coordinates, and why."""

    prompt: PromptSpec
    sample: int
    problem: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt.to_dict(),
            "sample": self.sample,
            "problem": self.problem,
            "text": self.text,
        }


@dataclass
class Refinement:
    """The outcome for one photo; ``to_dict()`` is the ``llm`` key of ``--json``."""

    file: str
    model: str
    settings: LLMSettings
    candidates: list[RefinedCandidate] = field(default_factory=list)  # best first
    rejected: list[RejectedAnswer] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    prompts: list[PromptSpec] = field(default_factory=list)
    references: Retrieval | None = None
    fallback: bool = False  # no usable answer from the model: GeoCLIP's answer stands
    error: str | None = None  # the photo itself could not be refined

    @property
    def best(self) -> RefinedCandidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def llm_answers(self) -> int:
        return sum(c.source == "llm" for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        refs = self.references
        return {
            "model": self.model,
            "best": best.to_dict() if best else None,
            "fallback": self.fallback,
            "candidates": [c.to_dict() for c in self.candidates],
            "rejected": [r.to_dict() for r in self.rejected],
            "warnings": list(self.warnings),
            "usage": self.usage.to_dict(),
            "prompts": [p.to_dict() for p in self.prompts],
            "references": None
            if refs is None
            else {
                "similar": [r.to_dict() for r in refs.similar],
                "dissimilar": [r.to_dict() for r in refs.dissimilar],
            },
            "settings": self.settings.to_dict(),
            "error": self.error,
        }


class Refiner:
    """Refines photos with one model and settings; thread-safe, reusable across photos.

    Requests from every photo share one pool of ``settings.concurrency`` workers, so a
    scan calling :meth:`refine` from several threads (or :meth:`refine_results`) never
    has more requests in flight than that. ``usage`` totals every photo refined.
    Raises SetupError when litellm is missing, UsageError for an unknown model.
    """

    def __init__(self, settings: LLMSettings, *, cache_dir: Path | None = None) -> None:
        from .cache import AnswerCache

        self.settings = settings
        self.client = LLMClient(settings, AnswerCache(cache_dir, enabled=settings.cache))
        self.usage = Usage()
        self._lock = threading.Lock()
        self._requests = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="geoguess-llm"
        )
        self._photos: ThreadPoolExecutor | None = None

    def __enter__(self) -> Refiner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._photos is not None:
            self._photos.shutdown(wait=True, cancel_futures=True)
        self._requests.shutdown(wait=True, cancel_futures=True)

    @property
    def json_mode(self) -> bool:
        return self.client.json_mode

    # --- one photo --------------------------------------------------------------------

    def refine(
        self,
        geo: GeoModel,
        source: ImageInput,
        embedding: np.ndarray,
        *,
        name: str | None = None,
    ) -> Refinement:
        """Refine one photo given its normalised image embedding; never raises for it.

        ``source`` is the photo (a path or the file's bytes): it is re-encoded and sent
        to the model.
        """
        s = self.settings
        label = name or (str(source) if isinstance(source, (str, Path)) else "<bytes>")
        out = Refinement(label, s.model, s)
        out.prompts = [PromptSpec(i, sim, dis) for i, (sim, dis) in enumerate(s.references, 1)]
        out.references = retrieval = retrieve(geo, embedding, s.max_references)
        try:
            image = encode_image(source, max_side=s.image_max_side, quality=s.image_quality)
        except (InputError, OSError) as exc:
            problem = exc.problem if isinstance(exc, InputError) else str(exc)
            out.error = redact(f"cannot prepare the photo for the model: {problem}")
            image = None
        answers: list[tuple[PromptSpec, Completion]] = []
        if image is not None:
            answers = self._ask(out.prompts, retrieval, image)
        llm = self._read_answers(answers, out)
        self._verify(geo, embedding, llm, out)
        with self._lock:
            self.usage.add(out.usage)
        return out

    def _ask(
        self, specs: list[PromptSpec], retrieval: Retrieval, image: EncodedImage
    ) -> list[tuple[PromptSpec, Completion]]:
        s = self.settings
        futures: list[tuple[PromptSpec, Future[Completion]]] = []
        for spec in specs:
            text = user_text(spec, retrieval)
            cache_id = {
                "prompt_version": PROMPT_VERSION,
                "system": SYSTEM_PROMPT,
                "text": text,
                "image": image.sha256,
                "image_max_side": s.image_max_side,
                "image_quality": s.image_quality,
            }
            messages = build_messages(text, image)
            futures.append(
                (spec, self._requests.submit(self.client.complete, messages, s.samples, cache_id))
            )
        answers = []
        for spec, fut in futures:
            try:
                answers.append((spec, fut.result()))
            except Exception as exc:  # a bug or an unexpected library error: not fatal
                answers.append((spec, Completion([], Usage(), error=redact(str(exc)))))
        return answers

    def _read_answers(
        self, answers: list[tuple[PromptSpec, Completion]], out: Refinement
    ) -> list[RefinedCandidate]:
        llm = []
        for spec, done in answers:
            out.usage.add(done.usage)
            out.warnings.extend(w for w in done.warnings if w not in out.warnings)
            if done.error:
                got = f" (got {len(done.texts)} of {self.settings.samples} answers)"
                out.warnings.append(f"{spec.label}: {done.error}{got if done.texts else ''}")
            for sample, text in enumerate(done.texts, 1):
                try:
                    parsed = parse_answer(text)
                except AnswerError as exc:
                    clipped = " ".join(text.split())[:_REJECTED_TEXT_CHARS]
                    out.rejected.append(RejectedAnswer(spec, sample, str(exc), clipped))
                    continue
                llm.append(
                    RefinedCandidate(
                        parsed.lat,
                        parsed.lon,
                        "llm",
                        prompt=spec,
                        sample=sample,
                        model_place=parsed.place,
                        reason=parsed.reason,
                    )
                )
        return llm

    def _verify(
        self,
        geo: GeoModel,
        embedding: np.ndarray,
        llm: list[RefinedCandidate],
        out: Refinement,
    ) -> None:
        from ..geo import haversine_km
        from ..places import nearest_places

        # GeoCLIP's own candidates, as the table shows them (repeated gallery points
        # merged unless the Geolocator keeps raw rows), compete with the model's.
        answers = _answers(geo, embedding, max(self.settings.verify_top, 1))
        top = answers[: self.settings.verify_top] if llm else answers
        if not llm:
            out.fallback = True
            if out.error is None:
                out.warnings.append(
                    "no usable answer from the model; the answer is GeoCLIP's (retrieval)"
                )
        pool = top + llm
        if not pool:
            return
        scores = verification_scores(geo, embedding, [(c.lat, c.lon) for c in pool])
        lats = np.array([c.lat for c in pool])
        lons = np.array([c.lon for c in pool])
        places = nearest_places(lats, lons)
        anchor = answers[0] if answers else None
        dist = (
            np.atleast_1d(haversine_km(anchor.lat, anchor.lon, lats, lons))
            if anchor
            else np.zeros(len(pool))
        )
        for c, score, place, d in zip(pool, scores, places, dist):
            c.score, c.place, c.distance_from_retrieval_km = float(score), place, float(d)
        # Without a model's answer, GeoCLIP's ranking stands: its best guess stays
        # first even where a lone gallery row has a higher cosine than a merged one.
        order = range(len(pool)) if out.fallback else rank_by_score(scores)
        out.candidates = [pool[i] for i in order]

    def refine_result(
        self, geo: GeoModel, result: LocateResult, source: ImageInput | None = None
    ) -> LocateResult:
        """Refine a located photo in place (sets ``result.llm``) and return it.

        Needs ``result.embedding`` (set by :func:`geoguess.locate.finish`); ``source``
        defaults to ``result.file``. Results with an error or no embedding are returned
        unchanged.
        """
        if result.error is None and result.embedding is not None:
            src = result.file if source is None else source
            try:
                result.llm = self.refine(geo, src, result.embedding, name=result.file)
            except Exception as exc:  # a scan of thousands must not end on one photo
                problem = redact(f"unexpected error: {type(exc).__name__}: {exc}")
                result.llm = Refinement(
                    result.file, self.settings.model, self.settings, error=problem, fallback=True
                )
        return result

    def refine_results(
        self,
        geo: GeoModel,
        results: Iterable[LocateResult],
        sources: Iterable[ImageInput | None] | None = None,
    ) -> Iterator[LocateResult]:
        """Refine located photos several at once; yields them in input order.

        ``sources`` (parallel to ``results``) gives the photo where ``result.file`` is
        not a path, e.g. bytes read from stdin. At most ``2 * concurrency`` photos are
        in progress, so a long scan does not hold every photo in memory. Closing the
        generator early cancels the photos not yet started and closes ``results`` when
        it is a generator (a scan pipeline), so its threads stop too.
        """
        with self._lock:
            if self._photos is None:
                self._photos = ThreadPoolExecutor(
                    max_workers=self.settings.concurrency,
                    thread_name_prefix="geoguess-llm-photo",
                )
        srcs: Iterator[ImageInput | None] = (
            iter(sources) if sources is not None else itertools.repeat(None)
        )
        window: collections.deque[Future[LocateResult]] = collections.deque()
        try:
            for result, source in zip(results, srcs):
                window.append(self._photos.submit(self.refine_result, geo, result, source))
                if len(window) >= 2 * self.settings.concurrency:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()
            close = getattr(results, "close", None)
            if callable(close):
                close()


def _answers(geo: GeoModel, embedding: np.ndarray, k: int) -> list[RefinedCandidate]:
    """GeoCLIP's best ``k`` candidates for the photo, best first."""
    (found,) = geo.search(np.asarray(embedding, dtype=np.float32).reshape(1, -1), k)
    return [
        RefinedCandidate(p.lat, p.lon, "retrieval", rank=i)
        for i, p in enumerate(geo.predictions(found), 1)
    ]


def refine(
    geo: GeoModel,
    source: ImageInput,
    embedding: np.ndarray,
    settings: LLMSettings,
    *,
    name: str | None = None,
) -> Refinement:
    """Refine one photo; see :class:`Refiner` to refine many with shared limits."""
    with Refiner(settings) as refiner:
        return refiner.refine(geo, source, embedding, name=name)
