"""CLIP image preprocessing with Pillow and numpy (no torch, no transformers).

Matches ``transformers.CLIPImageProcessor`` for the OpenAI CLIP checkpoints: resize
the shortest side to 224 with bicubic resampling, centre-crop 224 x 224, scale to
[0, 1], normalise with CLIP's mean and std, channels first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    size: int = 224
    crop: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def from_manifest(cls, cfg: dict[str, Any]) -> Preprocess:
        return cls(
            size=int(cfg["size"]),
            crop=int(cfg["crop"]),
            mean=tuple(float(x) for x in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in cfg["std"]),  # type: ignore[arg-type]
        )

    def to_manifest(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "resample": "bicubic",
        }

    def resize_crop(self, image: Image.Image) -> Image.Image:
        from PIL import Image

        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        # transformers truncates the long side (int(), not round()); match it so the crop
        # window lands on the same pixels.
        new_long = int(self.size * long / short)
        new_size = (self.size, new_long) if w <= h else (new_long, self.size)
        if new_size != image.size:
            image = image.resize(new_size, resample=Image.Resampling.BICUBIC)
        w, h = image.size
        top = (h - self.crop) // 2
        left = (w - self.crop) // 2
        return image.crop((left, top, left + self.crop, top + self.crop))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One RGB Pillow image to a float32 array of shape (3, crop, crop)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        arr = np.asarray(self.resize_crop(image), dtype=np.float32)
        # Fold rescale and normalise into one multiply-add: x/255 - mean) / std.
        scale = np.asarray([1.0 / (255.0 * s) for s in self.std], dtype=np.float32)
        shift = np.asarray([m / s for m, s in zip(self.mean, self.std)], dtype=np.float32)
        arr = arr * scale - shift
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), 3, self.crop, self.crop), dtype=np.float32)
        for i, img in enumerate(images):
            out[i] = self(img)
        return out
