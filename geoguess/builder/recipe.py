"""What a model set is made from: a recipe TOML, read into :class:`Recipe`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """What one model set is built from; the default one is read from
    :data:`DEFAULT_RECIPE_PATH`, the only place its values are written."""

    name: str
    backbone: str
    geoclip_version: str
    precisions: tuple[str, ...]
    gallery_name: str
    gallery_csv: str
    description: str = ""
    backbone_revision: str = "main"
    geoclip_package: str = "geoclip"
    opset: int = 17
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def with_overrides(self, **kw: object) -> Recipe:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


#: The recipe of the default model set, shipped inside the package.
DEFAULT_RECIPE_PATH = (
    Path(__file__).resolve().parents[1] / "data" / "recipes" / "geoclip-vit-l14.toml"
)


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


DEFAULT_RECIPE = load_recipe(DEFAULT_RECIPE_PATH)
