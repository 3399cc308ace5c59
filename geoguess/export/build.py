"""``geoguess models build``: make a complete, verified model set in the store."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import platform
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..encoders import ImageEncoder, LocationEncoder, l2_normalize
from ..errors import ExportError, UsageError
from ..galleries import default_tree_fields
from ..manifest import FORMAT_VERSION, MANIFEST_NAME, PRECISIONS, describe_files
from ..reporting import Reporter
from ..store import InstalledModel, check_name, commit, staging
from .recipe import DEFAULT_RECIPE, Recipe

GALLERY_DIR = "galleries"


@dataclass
class BuildOptions:
    name: str | None = None
    backbone: str | None = None
    revision: str | None = None
    precisions: tuple[str, ...] | None = None
    geoclip_dir: Path | None = None
    calibration_dir: Path | None = None
    local_files_only: bool = False
    force: bool = False
    gallery_limit: int | None = None  # tests: embed only the first N gallery points
    tree_levels: str | None = "auto"  # the gallery's search tree (geoguess.tree); "none": skip


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"geoguess": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's tracer and onnxruntime's quantiser warn about things handled here
    (constant image size, no pre-processing pass); keep the build log readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


def export_location_encoder(state: dict[str, Any], path: Path, opset: int) -> None:
    import torch

    from .torch_modules import LocationEncoder as TorchLocationEncoder

    n_caps = len({k.split(".")[0] for k in state})
    module = TorchLocationEncoder(n_caps)
    module.load_state_dict(state, strict=True)
    module.eval()
    example = torch.tensor([[48.85, 2.29], [-33.9, 151.2]], dtype=torch.float32)
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["latlon"],
            output_names=["embedding", "capsules"],
            dynamic_axes={"latlon": {0: "n"}, "embedding": {0: "n"}, "capsules": {0: "n"}},
            opset_version=opset,
            dynamo=False,
        )


def export_image_encoder(vision: Any, mlp_state: dict[str, Any], path: Path, opset: int) -> None:
    import torch

    from .torch_modules import ImageEncoder as TorchImageEncoder
    from .torch_modules import class_token_only_last_layer

    module = TorchImageEncoder(vision)
    module.mlp.load_state_dict(mlp_state, strict=True)
    module.eval()
    example = torch.zeros(1, 3, 224, 224)
    with torch.no_grad(), _quiet(), class_token_only_last_layer(vision):
        # The TorchScript exporter keeps a ViT-L in one self-contained file (< 2 GB) and
        # handles transformers' attention code; the dynamo exporter split it into
        # external data and produced duplicate output names in our tests.
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["pixel_values"],
            output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "n"}, "embedding": {0: "n"}},
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(src: Path, dst: Path, *, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            extra_options={"MatMulConstBOnly": True},
        )


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types=False: the CUDA path feeds fp16 pixels and gets fp16 out, no casts.
    half = convert_float_to_float16(model, keep_io_types=False)
    onnx.save(half, str(dst))


def calibration_images(release_root: Path, extra_dir: Path | None, n_views: int = 16) -> list:
    """Photos to compare precisions on: geoclip's sample photo in several crops, plus a folder."""
    from PIL import Image, ImageOps

    images = []
    sample = release_root / "images" / "Kauai.png"
    if sample.is_file():
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
        for p in sorted(extra_dir.iterdir()):
            try:
                with Image.open(p) as im:
                    images.append(ImageOps.exif_transpose(im).convert("RGB"))
            except OSError:
                continue
    if not images:
        raise ExportError("no calibration images (geoclip's images/Kauai.png is missing)")
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


def build_model_set(
    opts: BuildOptions, recipe: Recipe = DEFAULT_RECIPE, reporter: Reporter | None = None
) -> InstalledModel:
    """Export, quantise, embed the gallery, write the manifest, install atomically."""
    from .backbone import load_backbone
    from .geoclip_files import load_state, locate_geoclip, read_gallery_csv

    rep = reporter or Reporter()
    recipe = recipe.with_overrides(
        name=opts.name,
        backbone=opts.backbone,
        backbone_revision=opts.revision,
        precisions=opts.precisions,
    )
    if opts.precisions is None and "fp16" not in recipe.precisions:
        from ..providers import cuda_candidate

        if cuda_candidate():
            # fp16 is what CUDA runs fastest; a GPU here is the best hint that this
            # machine will predict on one.
            recipe = recipe.with_overrides(precisions=(*recipe.precisions, "fp16"))
            rep.message("CUDA found: also building the fp16 image encoder for it")
    name = check_name(recipe.name)
    for p in recipe.precisions:
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if "fp32" not in recipe.precisions:
        raise UsageError("precisions must include fp32: the others are derived from it")
    started = time.perf_counter()

    release = locate_geoclip(opts.geoclip_dir, recipe.geoclip_package)
    if release.version and release.version != recipe.geoclip_version:
        rep.message(
            f"note: geoclip {release.version} installed, recipe names {recipe.geoclip_version}"
        )
    rep.message(f"geoclip weights: {release.root}")

    with staging(name) as stage:
        with rep.task("Loading backbone " + recipe.backbone):
            backbone = load_backbone(
                recipe.backbone,
                revision=recipe.backbone_revision,
                local_files_only=opts.local_files_only,
            )
        if backbone.provenance.get("random_init"):
            rep.message(
                "warning: random backbone weights; this model set is for tests and "
                "benchmarks and cannot geolocate photos"
            )

        loc_path = stage / "location_encoder.onnx"
        with rep.task("Exporting location encoder"):
            export_location_encoder(load_state(release, "location_encoder"), loc_path, recipe.opset)

        files = {"fp32": "image_encoder.fp32.onnx"}
        with rep.task("Exporting image encoder (fp32)"):
            export_image_encoder(
                backbone.model, load_state(release, "mlp"), stage / files["fp32"], recipe.opset
            )
        del backbone.model

        logit_t = load_state(release, "logit_scale")
        logit_scale = float(np.exp(float(logit_t)))

        gdir = Path(GALLERY_DIR) / recipe.gallery_name
        (stage / gdir).mkdir(parents=True)
        coords = read_gallery_csv(release.path(recipe.gallery_csv))
        if opts.gallery_limit:
            coords = coords[: opts.gallery_limit]
        np.save(stage / gdir / "coords.npy", coords, allow_pickle=False)
        loc = LocationEncoder(loc_path, "cpu")
        emb = np.empty((len(coords), 512), dtype=np.float16)
        step = 4096
        with rep.task(f"Embedding {len(coords):,} gallery coordinates", total=len(coords)) as adv:
            for i in range(0, len(coords), step):
                chunk = loc(coords[i : i + step])
                emb[i : i + step] = l2_normalize(chunk).astype(np.float16)
                adv(len(chunk))
        np.save(stage / gdir / "embeddings.npy", emb, allow_pickle=False)
        # Search tree of the gallery (geoguess.tree); numpy + ONNX Runtime, no torch.
        tree_fields = default_tree_fields(stage, gdir.as_posix(), emb, coords, opts.tree_levels)
        gallery32 = emb.astype(np.float32)

        # Compare every reduced precision with fp32 on the same calibration photos.
        pre = backbone.preprocess
        calib = pre.batch(calibration_images(release.root, opts.calibration_dir))
        fp32_out = ImageEncoder(stage / files["fp32"], "cpu")(calib)
        quality: dict[str, Any] = {}
        if "int8" in recipe.precisions:
            candidates = {}
            for per_channel in (False, True):
                tag = "per-channel" if per_channel else "per-tensor"
                out_path = stage / f"image_encoder.int8.{tag}.onnx"
                with rep.task(f"Quantising image encoder to int8 ({tag})"):
                    quantize_int8(stage / files["fp32"], out_path, per_channel=per_channel)
                    q_out = ImageEncoder(out_path, "cpu")(calib)
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
            for tag, (metrics, path) in candidates.items():
                rep.message(f"int8 {tag}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                if tag != best:
                    path.unlink()
            files["int8"] = "image_encoder.int8.onnx"
            candidates[best][1].rename(stage / files["int8"])
            quality["int8"] = {**candidates[best][0], "scheme": best}
            rep.message(f"int8: kept {best}")
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
            "logit_scale": logit_scale,
            "preprocess": pre.to_manifest(),
            "image_encoder": {"files": files, "input": "pixel_values", "output": "embedding"},
            "location_encoder": {
                "file": "location_encoder.onnx",
                "sigmas": [2**0, 2**4, 2**8],
                "outputs": ["embedding", "capsules"],
            },
            "galleries": {
                recipe.gallery_name: {
                    "coords": (gdir / "coords.npy").as_posix(),
                    "embeddings": (gdir / "embeddings.npy").as_posix(),
                    "size": len(coords),
                    "source": f"geoclip {release.version or '?'} {recipe.gallery_csv}",
                    **tree_fields,
                }
            },
            "default_gallery": recipe.gallery_name,
            "quality": quality,
            "provenance": {
                "backbone": backbone.provenance,
                "geoclip": {
                    "version": release.version,
                    "files": "model/weights/*.pth",
                    "licence": "MIT",
                },
                "tools": _versions(),
                "build_seconds": round(time.perf_counter() - started, 1),
            },
            "files": file_table,
        }
        (stage / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        with rep.task("Installing"):
            installed = commit(stage, name, force=opts.force)
    return installed
