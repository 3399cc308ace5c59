"""The CLIP vision backbone's weights: a Hugging Face folder, the hub, or random.

Weights are read tensor by tensor from ``model.safetensors`` (or a sharded
checkpoint), so a 1.7 GB CLIP checkpoint is never loaded whole, and its text tower is
never read at all. Random backbones exist for tests and benchmarks only: they have
the real geometry (and so the real cost) but carry no knowledge; a model set built
from one is marked ``random_init`` so nothing presents its output as a location.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError, UsageError
from ..preprocess import CLIP_MEAN, CLIP_STD, Preprocess

# Vision geometries for random:<name>. projection_dim stays 768 because GeoCLIP's
# MLP head takes 768 inputs.
RANDOM_GEOMETRIES: dict[str, dict[str, int]] = {
    "vit-l14": dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
        projection_dim=768,
    ),
    "vit-b32": dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        patch_size=32,
        image_size=224,
        projection_dim=768,
    ),
    "tiny": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=32,
        image_size=224,
        projection_dim=768,
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
ACTIVATIONS = ("quick_gelu", "gelu")


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int
    image_size: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> VisionConfig:
        # A CLIPModel checkpoint nests the vision tower's settings; a vision-only one
        # (CLIPVisionModelWithProjection) has them at the top.
        vision = data.get("vision_config", data)
        try:
            cfg = cls(
                hidden_size=int(vision["hidden_size"]),
                intermediate_size=int(vision["intermediate_size"]),
                num_hidden_layers=int(vision["num_hidden_layers"]),
                num_attention_heads=int(vision["num_attention_heads"]),
                patch_size=int(vision["patch_size"]),
                image_size=int(vision.get("image_size", 224)),
                hidden_act=str(vision.get("hidden_act", "quick_gelu")),
                layer_norm_eps=float(vision.get("layer_norm_eps", 1e-5)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{source}: not a CLIP vision config (bad field {exc})") from None
        if cfg.hidden_act not in ACTIVATIONS:
            raise ExportError(
                f"{source}: activation {cfg.hidden_act!r} is not supported "
                f"(supported: {', '.join(ACTIVATIONS)})"
            )
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ExportError(f"{source}: hidden_size is not a multiple of the head count")
        return cfg

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def vision_tensor_names(cfg: VisionConfig) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor the image encoder reads, with its shape (PyTorch layout)."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    e = "vision_model.embeddings."
    yield e + "class_embedding", (d,)
    yield e + "patch_embedding.weight", (d, 3, cfg.patch_size, cfg.patch_size)
    yield e + "position_embedding.weight", (cfg.grid**2 + 1, d)
    for ln in ("pre_layrnorm", "post_layernorm"):
        yield f"vision_model.{ln}.weight", (d,)
        yield f"vision_model.{ln}.bias", (d,)
    for i in range(cfg.num_hidden_layers):
        p = f"vision_model.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield f"{p}self_attn.{proj}.weight", (d, d)
            yield f"{p}self_attn.{proj}.bias", (d,)
        for ln in ("layer_norm1", "layer_norm2"):
            yield f"{p}{ln}.weight", (d,)
            yield f"{p}{ln}.bias", (d,)
        yield f"{p}mlp.fc1.weight", (f, d)
        yield f"{p}mlp.fc1.bias", (f,)
        yield f"{p}mlp.fc2.weight", (d, f)
        yield f"{p}mlp.fc2.bias", (d,)


class Weights:
    """Tensors by name, as float32 numpy arrays, read only when asked for."""

    def __init__(self, cfg: VisionConfig) -> None:
        self.cfg = cfg

    def __getitem__(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def check(self, projection_dim: int = 768) -> None:
        """Every tensor present with the expected shape, before any work starts."""
        for name, shape in vision_tensor_names(self.cfg):
            self._expect(name, shape)
        self._expect("visual_projection.weight", (projection_dim, self.cfg.hidden_size))

    def _expect(self, name: str, shape: tuple[int, ...]) -> None:
        got = self.shape(name)
        if got is None:
            raise ExportError(f"{self.source}: tensor {name} is missing")
        if got != shape:
            if name == "visual_projection.weight":
                raise ExportError(
                    f"{self.source}: the visual projection has {got[0]} outputs; "
                    f"GeoCLIP's head needs {shape[0]}"
                )
            raise ExportError(f"{self.source}: tensor {name} has shape {got}, expected {shape}")

    def shape(self, name: str) -> tuple[int, ...] | None:
        raise NotImplementedError

    source = "backbone"


class SafetensorsWeights(Weights):
    """A Hugging Face CLIP folder: one ``model.safetensors`` or an indexed set of shards.

    Each tensor is read through a file handle opened for that read alone: a handle
    memory-maps its file, and pages read through a long-lived map stay resident, so
    writing three graphs from one open checkpoint held all 1.2 GB of weights in memory
    on top of the graph being written.
    """

    def __init__(self, folder: Path, cfg: VisionConfig) -> None:
        super().__init__(cfg)
        self.source = str(folder)
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ExportError(f"{index}: unreadable shard index: {exc}") from None
            shards = sorted(set(weight_map.values()))
        elif (folder / "model.safetensors").is_file():
            shards = ["model.safetensors"]
        else:
            raise ExportError(
                f"{folder}: no model.safetensors (geoguess reads safetensors weights only; "
                "pytorch_model.bin files are pickles it does not load)"
            )
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for shard in shards:
            path = folder / shard
            with self._open(path) as handle:
                for key in handle.keys():  # noqa: SIM118  (a safe_open handle, not a dict)
                    self._where[key] = path
                    self._shapes[key] = tuple(handle.get_slice(key).get_shape())

    @staticmethod
    def _open(path: Path) -> Any:
        from safetensors import safe_open

        try:
            return safe_open(str(path), framework="np")
        except Exception as exc:  # safetensors raises its own error types
            raise ExportError(f"{path}: not a readable safetensors file: {exc}") from None

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self._shapes.get(name)

    def __getitem__(self, name: str) -> np.ndarray:
        path = self._where.get(name)
        if path is None:
            raise ExportError(f"{self.source}: tensor {name} is missing")
        try:
            with self._open(path) as handle:
                array = handle.get_tensor(name)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{path}: cannot read tensor {name}: {exc}") from None
        return np.asarray(array, dtype=np.float32)


class RandomWeights(Weights):
    """Deterministic random tensors in CLIP's layout, the same on every machine.

    Each tensor is drawn from its own seed (derived from its name), so a tensor does
    not depend on which others were read before it.
    """

    source = "random"

    def __init__(self, cfg: VisionConfig, seed: int = 0, projection_dim: int = 768) -> None:
        super().__init__(cfg)
        self.seed = seed
        self._shapes = dict(vision_tensor_names(cfg))
        self._shapes["visual_projection.weight"] = (projection_dim, cfg.hidden_size)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self._shapes.get(name)

    def __getitem__(self, name: str) -> np.ndarray:
        shape = self._shapes[name]
        if "layer_norm" in name or "layrnorm" in name:
            fill = 1.0 if name.endswith("weight") else 0.0
            return np.full(shape, fill, np.float32)
        if name.endswith("bias"):
            return np.zeros(shape, np.float32)
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)


@dataclass
class Backbone:
    weights: Weights
    preprocess: Preprocess
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def random(self) -> bool:
        return bool(self.provenance.get("random_init"))


def folder_hash(folder: Path) -> str:
    """One sha256 over the files a build reads (names and bytes)."""
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in {".json", ".safetensors"}:
            digest.update(p.relative_to(folder).as_posix().encode())
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()


def preprocess_from_folder(folder: Path) -> Preprocess:
    """CLIP's constants unless the checkpoint's preprocessor_config.json says otherwise."""
    cfg_path = folder / "preprocessor_config.json"
    if not cfg_path.is_file():
        return Preprocess()
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        size = cfg.get("size", 224)
        size = size.get("shortest_edge", 224) if isinstance(size, dict) else int(size)
        crop = cfg.get("crop_size", 224)
        crop = crop.get("height", 224) if isinstance(crop, dict) else int(crop)
        return Preprocess(
            size=int(size),
            crop=int(crop),
            mean=tuple(cfg.get("image_mean", CLIP_MEAN)),
            std=tuple(cfg.get("image_std", CLIP_STD)),
        )
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ExportError(f"{cfg_path}: unreadable preprocessing config: {exc}") from None


def backbone_kind(spec: str) -> str:
    """'random', 'folder' or 'hub' for a --backbone value; UsageError when it is none."""
    if spec.startswith("random:"):
        geometry = spec.split(":", 1)[1]
        if geometry not in RANDOM_GEOMETRIES:
            raise UsageError(
                f"unknown random geometry {geometry!r}; choose from "
                + ", ".join(f"random:{g}" for g in RANDOM_GEOMETRIES)
            )
        return "random"
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UsageError(f"{spec}: no config.json; not a Hugging Face CLIP folder")
        return "folder"
    if spec.startswith((".", "/", "~")) or folder.exists() or not _HUB_ID.match(spec):
        raise UsageError(
            f"{spec}: no such backbone folder (expected a folder, a hub id such as "
            "openai/clip-vit-large-patch14, or random:<geometry>)"
        )
    return "hub"


def open_folder(folder: Path, provenance: dict[str, Any]) -> Backbone:
    cfg_path = folder / "config.json"
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{cfg_path}: unreadable config: {exc}") from None
    cfg = VisionConfig.from_json(data, str(cfg_path))
    weights = SafetensorsWeights(folder, cfg)
    weights.check()
    return Backbone(weights, preprocess_from_folder(folder), provenance)


def open_random(geometry: str, seed: int = 0) -> Backbone:
    cfg = VisionConfig(
        **{k: v for k, v in RANDOM_GEOMETRIES[geometry].items() if k != "projection_dim"}
    )
    prov = {"source": "random", "geometry": geometry, "seed": seed, "random_init": True}
    return Backbone(RandomWeights(cfg, seed), Preprocess(), prov)
