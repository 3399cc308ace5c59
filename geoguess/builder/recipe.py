"""What a model set is made from. ``models/geoclip-vit-l14.toml`` mirrors DEFAULT_RECIPE."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class Recipe:
    name: str = "geoclip-vit-l14"
    description: str = (
        "GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023) on CLIP ViT-L/14, exported to ONNX"
    )
    backbone: str = "openai/clip-vit-large-patch14"
    backbone_revision: str = "main"
    geoclip_package: str = "geoclip"
    geoclip_version: str = "1.3.0"
    precisions: tuple[str, ...] = ("fp32", "int8")
    opset: int = 17
    gallery_name: str = "mp16-100k"
    gallery_csv: str = "model/gps_gallery/coordinates_100K.csv"
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def with_overrides(self, **kw: object) -> Recipe:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


DEFAULT_RECIPE = Recipe()


def load_recipe(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: cannot read recipe: {exc}") from exc
    try:
        return Recipe(
            name=data["name"],
            description=data.get("description", ""),
            backbone=data["backbone"]["id"],
            backbone_revision=data["backbone"].get("revision", "main"),
            geoclip_package=data["geoclip"].get("package", "geoclip"),
            geoclip_version=data["geoclip"]["version"],
            precisions=tuple(data["image_encoder"]["precisions"]),
            opset=int(data["image_encoder"].get("opset", 17)),
            gallery_name=data["gallery"]["name"],
            gallery_csv=data["gallery"]["csv"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: recipe is missing or has a bad field: {exc}") from exc
