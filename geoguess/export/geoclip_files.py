"""Reading GeoCLIP's released weights and gallery from the installed ``geoclip`` wheel.

Only the package's data files are read; its Python code is never imported here, because
``import geoclip`` pulls in training code and dependencies the export does not need.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError

WEIGHT_FILES = {
    "location_encoder": "model/weights/location_encoder_weights.pth",
    "mlp": "model/weights/image_encoder_mlp_weights.pth",
    "logit_scale": "model/weights/logit_scale_weights.pth",
}


@dataclass(frozen=True)
class GeoclipRelease:
    root: Path
    version: str | None

    def path(self, rel: str) -> Path:
        p = self.root / rel
        if not p.is_file():
            raise ExportError(f"{p}: file missing from the geoclip package")
        return p


def locate_geoclip(source: str | Path | None = None, package: str = "geoclip") -> GeoclipRelease:
    """The geoclip release folder: ``source`` if given, else the installed package."""
    if source is not None:
        root = Path(source).expanduser()
        if (root / "geoclip").is_dir():
            root = root / "geoclip"
        if not (root / WEIGHT_FILES["location_encoder"]).is_file():
            raise ExportError(f"{root}: not a geoclip package folder (no model/weights)")
        return GeoclipRelease(root, None)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(
            "the geoclip package is not installed; run: pip install --no-deps geoclip==1.3.0"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return GeoclipRelease(root, version)


def load_state(release: GeoclipRelease, which: str):  # -> dict[str, torch.Tensor] | Tensor
    import torch

    # weights_only refuses arbitrary pickles: these files hold tensors and nothing else.
    return torch.load(release.path(WEIGHT_FILES[which]), map_location="cpu", weights_only=True)


def read_gallery_csv(path: Path) -> np.ndarray:
    """(N, 2) float32 lat/lon from a CSV with LAT and LON columns (any order, any extra)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip().upper() for h in next(reader)]
        try:
            ilat, ilon = header.index("LAT"), header.index("LON")
        except ValueError:
            raise ExportError(f"{path}: gallery CSV needs LAT and LON columns") from None
        rows = [(float(r[ilat]), float(r[ilon])) for r in reader if r]
    # float32 like GeoCLIP's own gallery tensor, so coordinates compare exactly.
    return np.asarray(rows, dtype=np.float32)
