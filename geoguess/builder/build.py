"""``geoguess models build``: make a complete, verified model set in the store.

Two steps, so that nothing expensive starts before everything that can fail cheaply
has been checked: :func:`plan_build` validates the options and says what would be
downloaded (for the consent prompt), :func:`build_model_set` fetches, writes the
ONNX graphs, embeds the gallery, quantises, and installs atomically.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import platform
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..encoders import ImageEncoder, LocationEncoder, l2_normalize
from ..environment import flag
from ..errors import ExportError, SetupError, UsageError
from ..manifest import (
    FORMAT_VERSION,
    GALLERY_DIR,
    PRECISIONS,
    GalleryEntry,
    describe_files,
    sha256_file,
    write_manifest,
)
from ..reporting import Reporter
from ..store import InstalledModel, check_name, commit, models_dir, staging
from .backbone import Backbone, backbone_kind, open_folder, open_random
from .recipe import DEFAULT_RECIPE, Recipe


@dataclass
class BuildOptions:
    name: str | None = None
    backbone: str | None = None
    revision: str | None = None
    precisions: tuple[str, ...] | None = None
    #: GeoCLIP's weights: None (the installed geoclip package, else the pinned wheel
    #: from the package index), a wheel, a folder, or a hub release id.
    geoclip: str | Path | None = None
    calibration_dir: Path | None = None
    #: Use only files already on this machine (also when HF_HUB_OFFLINE=1).
    offline: bool = False
    #: Fetching weights needs the user's consent: the CLI asks, or the user ran
    #: ``geoguess models build``; a library caller says so here.
    allow_download: bool = False
    force: bool = False
    gallery_limit: int | None = None  # tests: embed only the first N gallery points
    tree_levels: str | None = "auto"  # the gallery's search tree (geoguess.tree); "none": skip


@dataclass(frozen=True)
class Download:
    """One thing a build would fetch, for the user to agree to."""

    what: str
    source: str
    size: int | None
    licence: str
    dest: str


@dataclass(frozen=True)
class BuildPlan:
    name: str
    target: Path
    recipe: Recipe
    backbone_kind: str  # random, folder or hub
    downloads: tuple[Download, ...] = ()
    offline: bool = False
    hub_commit: str | None = None

    @property
    def download_bytes(self) -> int:
        return sum(d.size or 0 for d in self.downloads)


@dataclass
class _Sources:
    backbone: Backbone
    geoclip: Any  # geoclip_weights.GeoclipWeights
    extra: dict[str, Any] = field(default_factory=dict)


def _resolve_recipe(opts: BuildOptions, recipe: Recipe) -> tuple[Recipe, str]:
    recipe = recipe.with_overrides(
        backbone=opts.backbone, backbone_revision=opts.revision, precisions=opts.precisions
    )
    kind = backbone_kind(recipe.backbone)
    if kind == "random":
        # Random weights never take a real model's name, so no one mistakes their
        # output for a geolocation.
        default_name = "random-" + recipe.backbone.split(":", 1)[1]
        if opts.name == DEFAULT_RECIPE.name:
            raise UsageError(
                f"a random-weight build cannot be named {opts.name!r}; "
                f"leave --name out (it becomes {default_name}) or choose another"
            )
        recipe = recipe.with_overrides(name=opts.name or default_name)
    else:
        recipe = recipe.with_overrides(name=opts.name)
    return recipe, kind


def plan_build(opts: BuildOptions, recipe: Recipe = DEFAULT_RECIPE) -> BuildPlan:
    """Check the options and list what a build would download; no weights are fetched.

    A hub backbone's metadata (commit, file sizes) is looked up unless offline.
    """
    from .geoclip_weights import GEOCLIP_WHEEL, geoclip_download_needed

    recipe, kind = _resolve_recipe(opts, recipe)
    name = check_name(recipe.name)
    for p in recipe.precisions:
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if "fp32" not in recipe.precisions:
        raise UsageError("precisions must include fp32: the others are derived from it")
    target = models_dir() / name
    if target.exists() and not opts.force:
        raise UsageError(
            f"model set {name!r} already exists at {target}; pass --force to replace it"
        )
    if opts.calibration_dir is not None and not Path(opts.calibration_dir).is_dir():
        raise UsageError(f"{opts.calibration_dir}: calibration folder does not exist")
    if opts.geoclip is not None:
        source = Path(opts.geoclip).expanduser()
        if str(opts.geoclip).startswith((".", "/", "~")) and not source.exists():
            raise UsageError(f"{opts.geoclip}: no such geoclip wheel or folder")
    offline = opts.offline or flag("HF_HUB_OFFLINE", False)

    downloads: list[Download] = []
    commit_id = None
    if kind == "hub":
        from .hub import hub_cache_dir, plan_backbone

        hub = plan_backbone(recipe.backbone, recipe.backbone_revision, offline=offline)
        commit_id = hub.commit
        if not hub.cached:
            downloads.append(
                Download(
                    what=f"CLIP vision backbone {recipe.backbone} "
                    f"({', '.join(f.name for f in hub.files)})",
                    source=f"the Hugging Face hub (revision {recipe.backbone_revision}, "
                    f"commit {hub.commit[:12]})",
                    size=hub.download_bytes,
                    licence="MIT (OpenAI CLIP)",
                    dest=hub_cache_dir(),
                )
            )
    if geoclip_download_needed(opts.geoclip):
        if offline:
            raise SetupError(
                "GeoCLIP's weights are not on this machine and the build is offline; pass "
                "--geoclip PATH (a geoclip wheel or folder) or pip install --no-deps geoclip==1.3.0"
            )
        from ..store import downloads_dir

        downloads.append(
            Download(
                what=f"GeoCLIP weights and 100K gallery ({GEOCLIP_WHEEL.filename})",
                source="the Python package index (pip's configuration)",
                size=GEOCLIP_WHEEL.size,
                licence=GEOCLIP_WHEEL.licence,
                dest=str(downloads_dir()),
            )
        )
    return BuildPlan(name, target, recipe, kind, tuple(downloads), offline, commit_id)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"geoguess": __version__, "python": platform.python_version()}
    for pkg in ("onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "safetensors"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantiser warns about things handled here (no pre-processing
    pass, opset upgrades); keep the build log readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types=False: the CUDA path feeds fp16 pixels and gets fp16 out, no casts.
    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=False)
    onnx.save(half, str(dst))


def calibration_images(sample: Path | None, extra_dir: Path | None, n_views: int = 16) -> list:
    """Photos to compare precisions on: GeoCLIP's sample photo in several crops, plus a folder."""
    from PIL import Image, ImageOps

    images = []
    if sample is not None and sample.is_file():
        with Image.open(sample) as im:
            base = im.convert("RGB")
        w, h = base.size
        rng = np.random.default_rng(0)
        for i in range(n_views):
            s = rng.uniform(0.35, 1.0)
            cw, ch = int(w * s), int(h * s)
            x, y = int(rng.uniform(0, w - cw)), int(rng.uniform(0, h - ch))
            view = base.crop((x, y, x + cw, y + ch))
            images.append(ImageOps.mirror(view) if i % 2 else view)
    if extra_dir is not None:
        for p in sorted(Path(extra_dir).iterdir()):
            try:
                with Image.open(p) as im:
                    images.append(ImageOps.exif_transpose(im).convert("RGB"))
            except OSError:
                continue
    if not images:
        raise ExportError(
            "no calibration images (GeoCLIP's sample photo is missing; pass --calibration DIR)"
        )
    return images


def compare_precisions(
    reference: np.ndarray, candidate: np.ndarray, gallery: np.ndarray, k: int = 5
) -> dict[str, float]:
    """Cosine to fp32, and how often the gallery ranking agrees (top-1, top-k overlap)."""
    ref = l2_normalize(reference)
    cand = l2_normalize(candidate)
    cos = np.sum(ref * cand, axis=1)
    s_ref, s_cand = ref @ gallery.T, cand @ gallery.T
    top_ref = np.argsort(-s_ref, axis=1)[:, :k]
    top_cand = np.argsort(-s_cand, axis=1)[:, :k]
    # Compare coordinates rather than indices: the gallery holds duplicate points.
    top1 = float(
        np.mean(
            [np.array_equal(gallery[a], gallery[b]) for a, b in zip(top_ref[:, 0], top_cand[:, 0])]
        )
    )
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_cand)]))
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "top1_agreement": top1,
        f"top{k}_overlap": overlap,
    }


def _local_provenance(folder: Path) -> dict[str, Any]:
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in {".json", ".safetensors"}
    }
    return {"source": "local", "path": str(folder.resolve()), "files": files}


def _open_sources(plan: BuildPlan, opts: BuildOptions, rep: Reporter) -> _Sources:
    from .geoclip_weights import load_geoclip

    spec = plan.recipe.backbone
    if plan.backbone_kind == "random":
        backbone = open_random(spec.split(":", 1)[1])
    elif plan.backbone_kind == "folder":
        folder = Path(spec).expanduser()
        with rep.task(f"Hashing backbone files in {folder}"):
            prov = _local_provenance(folder)
        backbone = open_folder(folder, prov)
    else:
        from .hub import fetch_backbone

        folder, prov = fetch_backbone(
            spec,
            plan.recipe.backbone_revision,
            commit=plan.hub_commit,
            offline=plan.offline,
            reporter=rep,
        )
        backbone = open_folder(folder, prov)
    geoclip = load_geoclip(
        opts.geoclip, allow_download=opts.allow_download, offline=plan.offline, reporter=rep
    )
    return _Sources(backbone, geoclip)


def build_model_set(
    opts: BuildOptions, recipe: Recipe = DEFAULT_RECIPE, reporter: Reporter | None = None
) -> InstalledModel:
    """Fetch what is missing, write the graphs, embed the gallery, install atomically."""
    from .location_graph import capsule_count, write_location_encoder

    rep = reporter or Reporter()
    if opts.precisions is None and "fp16" not in recipe.precisions:
        from ..providers import cuda_candidate

        if cuda_candidate():
            # fp16 is what CUDA runs fastest; a GPU here is the best hint that this
            # machine will predict on one.
            recipe = recipe.with_overrides(precisions=(*recipe.precisions, "fp16"))
            rep.message("CUDA found: also building the fp16 image encoder for it")
    plan = plan_build(opts, recipe)
    if plan.downloads and not opts.allow_download:
        listing = "; ".join(
            f"{d.what}, {d.size / 1e6:,.0f} MB" if d.size else d.what for d in plan.downloads
        )
        raise SetupError(
            f"building {plan.name} needs downloads ({listing}); run: geoguess models build"
        )
    recipe = plan.recipe
    name = plan.name
    started = time.perf_counter()
    src = _open_sources(plan, opts, rep)
    backbone, weights = src.backbone, src.geoclip
    if backbone.random:
        rep.message(
            "warning: random backbone weights; this model set is for tests and "
            "benchmarks and cannot geolocate photos"
        )
    if capsule_count(weights.location_encoder) != len(weights.sigmas):
        raise ExportError("GeoCLIP's location encoder and its sigma list disagree")

    with staging(name) as stage:
        loc_path = stage / "location_encoder.onnx"
        with rep.task("Writing location encoder"):
            write_location_encoder(weights.location_encoder, loc_path)
        files, int8_candidates = _write_image_encoders(stage, backbone, weights, recipe, rep)
        loc = LocationEncoder(loc_path, "cpu")
        gallery, emb = _write_gallery(stage, weights, recipe, opts, loc, rep)

        # Compare every reduced precision with fp32 on the same calibration photos.
        pre = backbone.preprocess
        calib = pre.batch(calibration_images(weights.sample_image, opts.calibration_dir))
        with rep.task(f"Encoding {len(calib)} calibration views (fp32)"):
            fp32_out = ImageEncoder(stage / files["fp32"], "cpu")(calib)
        quality: dict[str, Any] = {}
        if "int8" in recipe.precisions:
            quality["int8"] = _best_int8(
                stage, int8_candidates, calib, fp32_out, emb.astype(np.float32), rep
            )
        if "fp16" in recipe.precisions:
            files["fp16"] = "image_encoder.fp16.onnx"
            with rep.task("Converting image encoder to fp16"):
                convert_fp16(stage / files["fp32"], stage / files["fp16"])
            quality["fp16"] = {"note": "fp16 runs on CUDA; compared at first CUDA load"}

        rels = [p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()]
        with rep.task("Hashing files"):
            file_table = describe_files(stage, rels)
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "description": recipe.description,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "embedding_dim": 512,
            "logit_scale": float(np.exp(np.float32(weights.logit_scale))),
            "preprocess": pre.to_manifest(),
            "image_encoder": {"files": files, "input": "pixel_values", "output": "embedding"},
            "location_encoder": {
                "file": "location_encoder.onnx",
                "sigmas": list(weights.sigmas),
                "outputs": ["embedding", "capsules"],
            },
            "galleries": {recipe.gallery_name: gallery.to_dict()},
            "default_gallery": recipe.gallery_name,
            "quality": quality,
            "provenance": {
                "backbone": backbone.provenance,
                "geoclip": weights.provenance,
                "builder": "geoguess.builder (numpy + onnx, no PyTorch)",
                "tools": _versions(),
                "build_seconds": round(time.perf_counter() - started, 1),
            },
            "files": file_table,
        }
        write_manifest(stage, manifest)
        with rep.task("Installing"):
            installed = commit(stage, name, force=opts.force)
    return installed


def _write_image_encoders(
    stage: Path, backbone: Backbone, weights: Any, recipe: Recipe, rep: Reporter
) -> tuple[dict[str, str], dict[str, Path]]:
    """The fp32 image encoder, and each int8 scheme's candidate when the recipe wants
    int8: the manifest's file names by precision, and the int8 candidates by scheme."""
    from .image_graph import write_image_encoder
    from .onnxgraph import INT8_SCHEMES

    files = {"fp32": "image_encoder.fp32.onnx"}
    layers = backbone.weights.cfg.num_hidden_layers
    with rep.task("Writing image encoder (fp32)", total=layers) as adv:
        write_image_encoder(backbone.weights, weights.mlp, stage / files["fp32"], progress=adv)
    candidates = {}
    if "int8" in recipe.precisions:
        files["int8"] = "image_encoder.int8.onnx"
        for tag in INT8_SCHEMES:
            # Each candidate in a folder of its own under its final name: a graph
            # names its weights file, so the kept pair can simply move up.
            path = stage / f".int8-{tag}" / files["int8"]
            path.parent.mkdir()
            with rep.task(f"Writing image encoder (int8, {tag})", total=layers) as adv:
                write_image_encoder(backbone.weights, weights.mlp, path, int8=tag, progress=adv)
            candidates[tag] = path
    return files, candidates


def _write_gallery(
    stage: Path,
    weights: Any,
    recipe: Recipe,
    opts: BuildOptions,
    loc: LocationEncoder,
    rep: Reporter,
) -> tuple[GalleryEntry, np.ndarray]:
    """GeoCLIP's gallery in the model set: coordinates, each point's country and region,
    embeddings (fp16) and the default cluster tree. Returns its entry and embeddings."""
    from ..galleries import embed_coords, with_default_tree, write_areas

    gdir = Path(GALLERY_DIR) / recipe.gallery_name
    (stage / gdir).mkdir(parents=True)
    coords = np.ascontiguousarray(weights.gallery, dtype=np.float32)
    if opts.gallery_limit:
        coords = coords[: opts.gallery_limit]
    np.save(stage / gdir / "coords.npy", coords, allow_pickle=False)
    with rep.task("Finding each gallery point's country and region"):
        areas = write_areas(stage / gdir, gdir.as_posix(), coords)
    emb = embed_coords(loc, coords, rep)
    np.save(stage / gdir / "embeddings.npy", emb, allow_pickle=False)
    gallery = GalleryEntry(
        coords=(gdir / "coords.npy").as_posix(),
        embeddings=(gdir / "embeddings.npy").as_posix(),
        size=len(coords),
        source=f"geoclip {weights.provenance.get('version') or '?'} {recipe.gallery_csv}",
        areas=areas,
    )
    gallery = with_default_tree(
        stage, gallery, emb, coords, opts.tree_levels, location_encoder=loc, reporter=rep
    )
    return gallery, emb


def _best_int8(
    stage: Path,
    paths: dict[str, Path],
    calib: np.ndarray,
    fp32_out: np.ndarray,
    gallery32: np.ndarray,
    rep: Reporter,
) -> dict[str, Any]:
    """Of the int8 graphs (per tensor, per channel), keep the one whose rankings agree
    best with fp32 on the calibration views."""
    candidates = {}
    for tag, out_path in paths.items():
        with rep.task(f"Comparing int8 ({tag}) with fp32 on {len(calib)} views"):
            q_out = ImageEncoder(out_path, "cpu", per_image=True)(calib)
        candidates[tag] = (compare_precisions(fp32_out, q_out, gallery32), out_path)
    # Ranking decides (users see the best guess first, then the list); cosine breaks ties.
    best = max(
        candidates,
        key=lambda t: (
            candidates[t][0]["top1_agreement"],
            candidates[t][0]["top5_overlap"],
            candidates[t][0]["cosine_mean"],
        ),
    )
    for tag, (metrics, _) in candidates.items():
        rep.message(f"int8 {tag}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    for tag, path in paths.items():
        if tag == best:
            for f in path.parent.iterdir():
                f.rename(stage / f.name)
        shutil.rmtree(path.parent)
    rep.message(f"int8: kept {best}")
    return {**candidates[best][0], "scheme": best}
