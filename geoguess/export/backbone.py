"""Loading the CLIP vision backbone: from the hub, a local folder, or random weights.

Random backbones exist for tests and benchmarks only: they have the real geometry (and
so the real cost) but carry no knowledge, and a model set built from one is marked
``random_init`` in its manifest so nothing presents its output as a location.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError
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


@dataclass
class Backbone:
    model: Any  # transformers.CLIPVisionModelWithProjection
    preprocess: Preprocess
    provenance: dict[str, Any]


def _folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            digest.update(p.relative_to(folder).as_posix().encode())
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()


def _preprocess_from_folder(folder: Path) -> Preprocess:
    """CLIP's constants unless the checkpoint's preprocessor_config.json says otherwise."""
    import json

    cfg_path = folder / "preprocessor_config.json"
    if not cfg_path.is_file():
        return Preprocess()
    cfg = json.loads(cfg_path.read_text())
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


def load_backbone(
    spec: str, *, revision: str | None = None, local_files_only: bool = False, seed: int = 0
) -> Backbone:
    """``spec``: a hub id (``openai/clip-vit-large-patch14``), a folder, or ``random:NAME``."""
    try:
        import torch
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    except ImportError as exc:
        raise ExportError(
            f"building models needs the export extra ({exc.name} is missing): "
            "pip install 'geoguess[export]'"
        ) from exc

    if spec.startswith("random:"):
        geometry = spec.split(":", 1)[1]
        if geometry not in RANDOM_GEOMETRIES:
            raise ExportError(
                f"unknown random geometry {geometry!r}; choose from {sorted(RANDOM_GEOMETRIES)}"
            )
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**RANDOM_GEOMETRIES[geometry]))
        prov = {"source": "random", "geometry": geometry, "seed": seed, "random_init": True}
        return Backbone(model.eval(), Preprocess(), prov)

    folder = Path(spec).expanduser()
    if folder.is_dir():
        prov = {"source": "local", "path": str(folder.resolve()), "sha256": _folder_hash(folder)}
    else:
        if spec.startswith((".", "/", "~")):
            raise ExportError(f"{spec}: backbone folder does not exist")
        try:
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(
                    repo_id=spec,
                    revision=revision,
                    allow_patterns=["config.json", "preprocessor_config.json", "*.safetensors"],
                    local_files_only=local_files_only,
                )
            )
        except Exception as exc:  # hub errors come in many types; all mean "cannot fetch"
            hint = " (offline: pass --backbone DIR with a downloaded copy)"
            raise ExportError(f"{spec}: cannot fetch the backbone: {exc}{hint}") from exc
        # snapshot folders are named after the commit they hold: the exact revision.
        prov = {"source": "hub", "id": spec, "revision": folder.name, "requested": revision}
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(folder)
    except Exception as exc:
        raise ExportError(f"{folder}: not a loadable CLIP checkpoint: {exc}") from exc
    if model.config.projection_dim != 768:
        raise ExportError(
            f"{spec}: projection_dim is {model.config.projection_dim}; GeoCLIP's head needs 768"
        )
    return Backbone(model.eval(), _preprocess_from_folder(folder), prov)
