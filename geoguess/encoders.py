"""One class per ONNX model: the image encoder and the location encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .providers import Session, open_session


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class ImageEncoder:
    """(N, 3, 224, 224) float32 pixels -> (N, 512) GeoCLIP image embeddings."""

    def __init__(
        self,
        path: Path,
        device: str = "auto",
        *,
        threads: int | None = None,
        source_sha256: str | None = None,
        cache_dir: Path | None = None,
        per_image: bool = False,
    ) -> None:
        """``per_image``: run one image at a time. Dynamically quantised (int8) graphs
        pick one activation scale for the whole input tensor, so a photo's embedding
        would depend on its batch-mates; one at a time keeps every answer reproducible
        whatever the batching, and on a CPU one ViT-L image is already a large GEMM."""
        self.session: Session = open_session(
            path, device, threads=threads, source_sha256=source_sha256, cache_dir=cache_dir
        )
        inp = self.session.inner.get_inputs()[0]
        self._input = inp.name
        # An fp16 graph takes fp16 pixels; cast once here rather than inside the graph.
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.per_image = per_image

    @property
    def provider(self) -> str:
        return self.session.provider

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = pixels.astype(self._dtype, copy=False)
        if self.per_image and len(pixels) > 1:
            outs = [
                self.session.run({self._input: pixels[i : i + 1]})[0] for i in range(len(pixels))
            ]
            return np.concatenate(outs).astype(np.float32, copy=False)
        out = self.session.run({self._input: pixels})[0]
        return out.astype(np.float32, copy=False)


class LocationEncoder:
    """(N, 2) lat/lon degrees -> summed (N, 512) and per-capsule (N, 3, 512) embeddings."""

    def __init__(self, path: Path, device: str = "auto", *, threads: int | None = None) -> None:
        self.session: Session = open_session(path, device, threads=threads)

    def __call__(
        self, latlon: np.ndarray, *, capsules: bool = False, batch: int = 4096
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        latlon = np.ascontiguousarray(latlon, dtype=np.float32).reshape(-1, 2)
        outs, caps = [], []
        names = ["embedding", "capsules"] if capsules else ["embedding"]
        for start in range(0, len(latlon), batch):
            res = self.session.run({"latlon": latlon[start : start + batch]}, names)
            outs.append(res[0])
            if capsules:
                caps.append(res[1])
        emb = np.concatenate(outs) if outs else np.zeros((0, 512), np.float32)
        if capsules:
            return emb, (np.concatenate(caps) if caps else np.zeros((0, 3, 512), np.float32))
        return emb
