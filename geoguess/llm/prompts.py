"""What the model is sent: the photo as a data URL, and one prompt per reference count.

G3's geo-diversification asks the same question several times with different numbers
of retrieved references, (0, 0), (5, 5), (10, 10) and (15, 15) similar and dissimilar
points, so that the candidates do not all lean on the same hints. The prompt asks for
a JSON object with the coordinates, the model's name for the place, and one sentence
of reasoning, which is kept and shown to the user.

The photo is re-encoded as a JPEG of bounded size before it leaves the machine: this
drops its EXIF block (GPS, camera serial numbers, the owner's name) and turns HEIC,
TIFF and others into a format every provider accepts.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .retrieval import Reference, Retrieval

__all__ = [
    "DEFAULT_REFERENCE_COUNTS",
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "EncodedImage",
    "PromptSpec",
    "build_messages",
    "encode_image",
    "user_text",
]

#: (similar, dissimilar) references per prompt, after G3.
DEFAULT_REFERENCE_COUNTS: tuple[tuple[int, int], ...] = ((0, 0), (5, 5), (10, 10), (15, 15))

#: Bumped whenever the wording changes, so cached answers to old wording are not reused.
PROMPT_VERSION = 1

SYSTEM_PROMPT = (
    "You are an expert in photo geolocation. You work out where a photo was taken from "
    "visual clues: landscape, vegetation, climate and light, architecture, road markings "
    "and signs, writing and language, vehicles, clothing."
)

_QUESTION = (
    "Where was this photo taken? Study the image and give your best estimate of the "
    "coordinates of the place. Always give a best guess, even when unsure; never refuse."
)
_SIMILAR_INTRO = (
    "For reference, a geolocation model finds the photo most similar to these places "
    "(latitude, longitude, nearest town), most similar first. They may help, but trust "
    "what you see:"
)
_DISSIMILAR_INTRO = (
    "The same model finds the photo least similar to these places; the photo was "
    "probably taken far from them:"
)
_ANSWER_FORMAT = (
    "Answer with only a JSON object and no other text, in this form:\n"
    '{"latitude": <decimal degrees, north positive>, '
    '"longitude": <decimal degrees, east positive>, '
    '"place": "<town, region, country>", '
    '"reason": "<one sentence: the clues you used>"}'
)


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of the diversified set: how many references of each kind it shows."""

    number: int  # position in the set, from 1
    similar: int
    dissimilar: int

    @property
    def label(self) -> str:
        return f"prompt {self.number} ({self.similar}+{self.dissimilar} refs)"

    def to_dict(self) -> dict[str, int]:
        return {"prompt": self.number, "similar": self.similar, "dissimilar": self.dissimilar}


@dataclass(frozen=True)
class EncodedImage:
    data_url: str  # data:image/jpeg;base64,...
    sha256: str  # of the original file's bytes: the cache key's image part
    width: int
    height: int
    jpeg_bytes: int


def encode_image(source: str | Path | bytes, *, max_side: int, quality: int = 90) -> EncodedImage:
    """The photo, upright, at most ``max_side`` pixels on its long side, as a JPEG data URL.

    Raises :class:`~geoguess.errors.ImageError` when the photo cannot be decoded.
    """
    from PIL import Image

    from ..images import load_image

    raw = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    name = str(source) if isinstance(source, (str, Path)) else None
    # A short side of max_side guarantees the long side too, and lets big JPEGs decode
    # at a reduced DCT scale.
    image = load_image(raw, name=name, target_size=max_side)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    # No exif= argument: the re-encoded file carries no metadata at all.
    image.save(buf, format="JPEG", quality=quality, optimize=True)
    data = buf.getvalue()
    return EncodedImage(
        data_url="data:image/jpeg;base64," + base64.b64encode(data).decode("ascii"),
        sha256=hashlib.sha256(raw).hexdigest(),
        width=image.size[0],
        height=image.size[1],
        jpeg_bytes=len(data),
    )


def _reference_lines(refs: list[Reference]) -> list[str]:
    lines = []
    for i, r in enumerate(refs, 1):
        where = f" ({r.place_text})" if r.place_text else ""
        lines.append(f"{i}. {r.lat:.5f}, {r.lon:.5f}{where}")
    return lines


def user_text(spec: PromptSpec, retrieval: Retrieval) -> str:
    """The text of one prompt; the references are the first ``spec`` ones of each list."""
    parts = [_QUESTION]
    similar = retrieval.similar[: spec.similar]
    dissimilar = retrieval.dissimilar[: spec.dissimilar]
    if similar:
        parts.append("\n".join([_SIMILAR_INTRO, *_reference_lines(similar)]))
    if dissimilar:
        parts.append("\n".join([_DISSIMILAR_INTRO, *_reference_lines(dissimilar)]))
    parts.append(_ANSWER_FORMAT)
    return "\n\n".join(parts)


def build_messages(text: str, image: EncodedImage) -> list[dict[str, Any]]:
    """OpenAI-style chat messages (litellm translates them for other providers)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": image.data_url}},
            ],
        },
    ]
