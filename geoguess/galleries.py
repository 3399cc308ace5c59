"""The GPS galleries of an installed model set: custom galleries and their search trees.

A gallery is ``galleries/<name>/`` in the model set: ``coords.npy`` (N, 2) lat/lon,
``embeddings.npy`` (N, 512) fp16 normalised location embeddings, optionally
``names.npy`` (one label per point), ``areas.npz`` (each point's country and region,
:mod:`geoguess.areas`), and ``tree-*/`` folders with search trees (see
:mod:`geoguess.tree`). Every file is listed in ``manifest.json`` with its sha256.

Everything here runs on ONNX Runtime (the model set's location encoder); torch is not
needed. Changes are made safely (geoguess.atomic): new files are written to a private
folder and renamed into place, and the manifest is replaced in one step.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import atomic
from .areas import AREAS_FILE, assign_areas, save_areas
from .errors import InputError, UsageError
from .manifest import (
    GALLERY_DIR,
    GalleryEntry,
    TreeEntry,
    describe_files,
    drop_gallery,
    load_manifest,
    replace_files,
    set_gallery,
    write_manifest,
)
from .reporting import Reporter
from .store import InstalledModel, check_name, get_model, remember_verified
from .tree import TreeConfig, auto_levels
from .tree_build import build_tree

if TYPE_CHECKING:
    from .encoders import LocationEncoder

_LAT_NAMES = ("LAT", "LATITUDE")
_LON_NAMES = ("LON", "LNG", "LONG", "LONGITUDE")
_EMBED_BATCH = 8192


def check_gallery_name(name: str) -> str:
    return check_name(name, "gallery")


def tree_config(
    levels: str | None, n: int, *, features: str = "embedding", node: str = "mean", seed: int = 0
) -> TreeConfig:
    """``levels`` ``None`` or ``"auto"`` picks our default shape for ``n`` points."""
    shape = auto_levels(n) if levels in (None, "", "auto") else levels
    return TreeConfig(shape, features=features, node=node, seed=seed)  # type: ignore[arg-type]


# --- building a tree into a folder of a model set ------------------------------------------


def build_tree_files(
    out_dir: Path,
    final_dir: str,
    embeddings: np.ndarray,
    coords: np.ndarray,
    config: TreeConfig,
    *,
    location_encoder: LocationEncoder | None = None,
    reporter: Reporter | None = None,
) -> TreeEntry:
    """Build a tree into ``out_dir``; returns its manifest entry for ``final_dir``.

    ``final_dir`` is where the folder will live in the model set (relative to its
    root): trees are built in a hidden folder and renamed into place afterwards.
    """
    meta = build_tree(
        out_dir,
        embeddings,
        config,
        coords=coords,
        location_encoder=location_encoder,
        reporter=reporter,
    )
    return TreeEntry(
        dir=final_dir,
        levels=tuple(meta["levels"]),
        features=meta["features"],
        node=meta["node"],
        nodes_per_level=tuple(meta["nodes_per_level"]),
        files=tuple(f"{final_dir}/{f}" for f in meta["files"]),
    )


def with_default_tree(
    root: Path,
    entry: GalleryEntry,
    embeddings: np.ndarray,
    coords: np.ndarray,
    levels: str | None = "auto",
    *,
    location_encoder: LocationEncoder | None = None,
    reporter: Reporter | None = None,
) -> GalleryEntry:
    """Build the tree of a gallery in a model set being built; ``entry`` with it.

    ``levels`` ``"none"`` builds nothing (the gallery then only supports flat search).
    """
    if levels is not None and levels.strip().lower() == "none":
        return entry
    config = tree_config(levels, len(embeddings))
    final = f"{entry.folder}/{config.dirname}"
    tree = build_tree_files(
        root / final,
        final,
        embeddings,
        coords,
        config,
        location_encoder=location_encoder,
        reporter=reporter,
    )
    return entry.with_tree(config.key, tree)


def _rewrite_manifest(model_dir: Path, mutate: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``mutate`` to the raw manifest and replace the file atomically."""
    # Read through its checksum: a damaged manifest must never be sealed again as good.
    raw = load_manifest(model_dir).raw
    mutate(raw)
    write_manifest(model_dir, raw)


def _encoder(model: InstalledModel) -> LocationEncoder:
    from .encoders import LocationEncoder

    return LocationEncoder(model.file(model.manifest.location_encoder), "cpu")


def build_gallery_tree(
    gallery: str | None = None,
    levels: str | None = None,
    *,
    model: str | None = None,
    features: str = "embedding",
    node: str = "mean",
    seed: int = 0,
    make_default: bool = True,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """(Re)build a search tree for a gallery of an installed model set.

    Rebuilding the same levels replaces that tree (the files come out identical).
    Returns the tree's manifest entry, with its ``key``.
    """
    installed = get_model(model)
    name, entry = installed.manifest.gallery(gallery, model_name=installed.name)
    embeddings = np.load(installed.file(entry.embeddings), mmap_mode="r", allow_pickle=False)
    coords = np.load(installed.file(entry.coords), allow_pickle=False)
    config = tree_config(levels, len(embeddings), features=features, node=node, seed=seed)
    gdir = entry.folder
    with atomic.private_folder(installed.path / gdir, config.dirname) as staged:
        tree_entry = build_tree_files(
            staged,
            f"{gdir}/{config.dirname}",
            embeddings,
            coords,
            config,
            location_encoder=_encoder(installed) if config.needs_encoder else None,
            reporter=reporter,
        )
        table = {
            f"{tree_entry.dir}/{rel}": v
            for rel, v in describe_files(staged, [Path(f).name for f in tree_entry.files]).items()
        }
        atomic.publish_folder(staged, installed.path / tree_entry.dir, replace=True)

    def mutate(raw: dict[str, Any]) -> None:
        # The gallery as the manifest holds it now, not as it was before the build.
        current = GalleryEntry.from_dict(raw["galleries"][name])
        old = current.trees.get(config.key)
        replace_files(raw, table, drop=old.files if old else ())
        set_gallery(raw, name, current.with_tree(config.key, tree_entry, make_default=make_default))

    _rewrite_manifest(installed.path, mutate)
    # The files were hashed a moment ago; record them so the first search does not rehash.
    remember_verified(installed.path, load_manifest(installed.path), only=set(table))
    return {"key": config.key, "gallery": name, **tree_entry.to_dict()}


# --- custom galleries -----------------------------------------------------------------------


def read_coords_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """(N, 2) float32 lat/lon and the optional ``name`` column of a CSV file.

    Needs a header with LAT and LON columns (LATITUDE, LNG, LONGITUDE also work, any
    case); a column called NAME gives each point a label.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise InputError(path, "the CSV file is empty")
            cols = [h.strip().upper() for h in header]
            ilat = next((cols.index(c) for c in _LAT_NAMES if c in cols), None)
            ilon = next((cols.index(c) for c in _LON_NAMES if c in cols), None)
            if ilat is None or ilon is None:
                raise InputError(path, "the CSV header needs LAT and LON columns")
            iname = cols.index("NAME") if "NAME" in cols else None
            rows: list[tuple[float, float]] = []
            names: list[str] = []
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                try:
                    lat, lon = float(row[ilat]), float(row[ilon])
                except (IndexError, ValueError):
                    raise InputError(path, f"line {line}: LAT and LON must be numbers") from None
                if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                    raise InputError(path, f"line {line}: ({lat}, {lon}) is not a lat/lon pair")
                rows.append((lat, lon))
                if iname is not None:
                    names.append(row[iname].strip() if iname < len(row) else "")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read the CSV file: {exc}") from exc
    if not rows:
        raise InputError(path, "the CSV file has no coordinates")
    return np.asarray(rows, dtype=np.float32), (names if iname is not None else None)


def write_areas(folder: Path, gallery_dir: str, coords: np.ndarray) -> str:
    """Decide each point's country and region (geoguess.areas) and write them into
    the gallery's ``folder``; returns the file's path in the model set."""
    save_areas(folder / AREAS_FILE, assign_areas(coords))
    return f"{gallery_dir}/{AREAS_FILE}"


def embed_coords(
    encoder: LocationEncoder, coords: np.ndarray, reporter: Reporter | None = None
) -> np.ndarray:
    """(N, 512) fp16 normalised location embeddings, the gallery format."""
    from .encoders import l2_normalize

    rep = reporter or Reporter()
    out = np.empty((len(coords), 512), dtype=np.float16)
    with rep.task(f"Embedding {len(coords):,} coordinates", total=len(coords)) as adv:
        for s in range(0, len(coords), _EMBED_BATCH):
            chunk = encoder(coords[s : s + _EMBED_BATCH])
            out[s : s + len(chunk)] = l2_normalize(chunk).astype(np.float16)
            adv(len(chunk))
    return out


def add_gallery(
    name: str,
    csv_path: Path,
    *,
    model: str | None = None,
    levels: str | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Embed the coordinates of a CSV file and install them as gallery ``name``.

    Builds the gallery's search tree too. Returns the gallery's manifest entry.
    """
    check_gallery_name(name)
    installed = get_model(model)
    if name in installed.manifest.galleries and not force:
        raise UsageError(
            f"model set {installed.name!r} already has a gallery {name!r}; "
            "pass --force to replace it"
        )
    coords, names = read_coords_csv(Path(csv_path))
    encoder = _encoder(installed)
    embeddings = embed_coords(encoder, coords, reporter)
    config = tree_config(levels, len(coords))
    gdir = f"{GALLERY_DIR}/{name}"
    root = installed.path
    with atomic.private_folder(root / GALLERY_DIR, name) as staged:
        np.save(staged / "coords.npy", coords, allow_pickle=False)
        np.save(staged / "embeddings.npy", embeddings, allow_pickle=False)
        names_rel = None
        if names is not None:
            np.save(staged / "names.npy", np.asarray(names, dtype=str), allow_pickle=False)
            names_rel = f"{gdir}/names.npy"
        entry = GalleryEntry(
            coords=f"{gdir}/coords.npy",
            embeddings=f"{gdir}/embeddings.npy",
            size=len(coords),
            source=f"custom: {Path(csv_path).name}",
            areas=write_areas(staged, gdir, coords),
            names=names_rel,
            custom=True,
        )
        tree_entry = build_tree_files(
            staged / config.dirname,
            f"{gdir}/{config.dirname}",
            embeddings,
            coords,
            config,
            reporter=reporter,
        )
        entry = entry.with_tree(config.key, tree_entry)
        rels = [p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()]
        table = {f"{gdir}/{rel}": v for rel, v in describe_files(staged, rels).items()}
        atomic.publish_folder(staged, root / gdir, replace=True)

    def mutate(raw: dict[str, Any]) -> None:
        replace_files(raw, table, under=gdir)
        set_gallery(raw, name, entry)

    _rewrite_manifest(root, mutate)
    remember_verified(root, load_manifest(root), only=set(table))
    return {"name": name, **entry.to_dict()}


def list_galleries(model: str | None = None) -> list[dict[str, Any]]:
    """One summary per gallery of a model set (name, size, source, trees, default)."""
    installed = get_model(model)
    default = installed.manifest.default_gallery
    out = []
    for name, entry in installed.manifest.galleries.items():
        out.append(
            {
                "name": name,
                "size": entry.size,
                "source": entry.source,
                "custom": entry.custom,
                "default": name == default,
                "trees": sorted(entry.trees),
                "default_tree": entry.default_tree,
                "has_names": entry.names is not None,
            }
        )
    return out


def remove_gallery(name: str, *, model: str | None = None) -> None:
    """Delete a gallery and its trees from a model set (never its default gallery)."""
    installed = get_model(model)
    if name not in installed.manifest.galleries:
        raise UsageError(f"model set {installed.name!r} has no gallery {name!r}")
    if name == installed.manifest.default_gallery:
        raise UsageError(f"{name!r} is the default gallery of model set {installed.name!r}")
    gdir = installed.manifest.galleries[name].folder
    folder = installed.path / gdir

    def mutate(raw: dict[str, Any]) -> None:
        drop_gallery(raw, name)
        replace_files(raw, {}, under=gdir)

    # Manifest first: a set must never list files that are gone.
    _rewrite_manifest(installed.path, mutate)
    atomic.discard(folder)
