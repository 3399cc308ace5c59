"""Optional refinement of GeoCLIP's answer by a vision language model, through litellm.

Retrieval-augmented prompting after Img2Loc, with G3's geo-diversification (several
prompts with different numbers of references, several answers each) and
geo-verification (the location encoder picks the final answer)::

    from geoguess import Geolocator
    from geoguess.llm import LLMSettings, refine

    geo = Geolocator.load()
    emb = geo.embed_images([image])[0]
    result = refine(geo, "photo.jpg", emb, LLMSettings(model="gpt-4o"))
    print(result.best.lat, result.best.lon, result.best.source_label)

Modules: ``retrieval`` (similar and dissimilar gallery points), ``prompts`` (messages
and the photo sent), ``parsing`` (coordinates out of answers), ``client`` (litellm,
retries, usage), ``cache`` (answers on disk), ``verify`` (geo-verification),
``privacy`` (notice, key redaction), ``pipeline`` (the whole refinement).

Importing this package does not import litellm; the first :class:`Refiner` does.
"""

from __future__ import annotations

from .client import LLMError, Usage
from .parsing import AnswerError, ParsedAnswer, parse_answer
from .pipeline import (
    RefinedCandidate,
    Refinement,
    Refiner,
    RejectedAnswer,
    refine,
)
from .privacy import CONSENT_ENV, is_local_endpoint, privacy_notice, redact
from .retrieval import Reference, Retrieval, retrieve, similar_and_dissimilar
from .settings import LLMSettings

__all__ = [
    "CONSENT_ENV",
    "AnswerError",
    "LLMError",
    "LLMSettings",
    "ParsedAnswer",
    "Reference",
    "RefinedCandidate",
    "Refinement",
    "Refiner",
    "RejectedAnswer",
    "Retrieval",
    "Usage",
    "is_local_endpoint",
    "parse_answer",
    "privacy_notice",
    "redact",
    "refine",
    "retrieve",
    "similar_and_dissimilar",
]
