"""geoguess against the reference PyTorch GeoCLIP, with identical weights.

The location encoder, MLP head, logit scale and gallery are GeoCLIP's real released
weights (from the geoclip wheel). The CLIP backbone is a tiny random one, loaded by
both sides from the same Hugging Face folder, because the real ViT-L/14 cannot be
downloaded here; the full ViT-L/14 geometry is exported in the slow test.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from geoguess.cli import app

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
geoclip = pytest.importorskip("geoclip", reason="needs: pip install --no-deps geoclip==1.3.0")

# 8-bit photos with EXIF orientation 1. The reference opens images without applying
# the orientation tag and clips 16-bit grey to 255 (Image.convert), where geoguess
# rotates and rescales; on those photos the two legitimately differ.
UPRIGHT_PHOTOS = [
    "gps_DSCN0010.jpg",
    "mei_FujiFilm_FinePixS2Pro.jpg",
    "mei_Sony_DSC-HX5V_2.jpg",
    "es_Canon_40D.jpg",
    "es_DudleyLeavittUtah.tiff",
]


class _GalleryMemo(torch.nn.Module):
    """Upstream predict() re-encodes the 100K gallery on every call (about 17 s here).
    Memoise the encoder's output for that one tensor; every other input, and every
    other step of predict(), runs the reference code unchanged."""

    def __init__(self, encoder, gallery):
        super().__init__()
        self.encoder = encoder
        self.gallery = gallery
        with torch.no_grad():
            self.cached = encoder(gallery)

    def forward(self, location):
        if location is self.gallery:
            return self.cached
        return self.encoder(location)


@pytest.fixture(scope="module")
def reference(tiny_backbone_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = geoclip.GeoCLIP(from_pretrained=True, clip_path=str(tiny_backbone_dir))
    model.location_encoder = _GalleryMemo(model.location_encoder, model.gps_gallery)
    return model.eval()


def _test_coords() -> np.ndarray:
    rng = np.random.default_rng(7)
    n = 10_000
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))  # uniform on the sphere
    lon = rng.uniform(-180, 180, n)
    special = [
        (90, 0),
        (-90, 0),
        (89.999, 45),
        (-89.999, -135),
        (0, 0),
        (0, 180),
        (0, -180),
        (10, 179.999),
        (10, -179.999),
        (-16.8, 180),
        (-16.8, -180),
        (51.5, -0.1),
    ]
    coords = np.concatenate([np.stack([lat, lon], 1), np.array(special)])
    return coords.astype(np.float32)


def test_location_encoder_matches_reference(tiny_home, reference, capsys):
    from geoguess import Geolocator

    geo = Geolocator.load("tiny", device="cpu")
    coords = _test_coords()
    ours = geo.location_encoder(coords)
    with torch.no_grad():
        ref = reference.location_encoder(torch.from_numpy(coords)).numpy()
    max_abs = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    cos = np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    # Top-1 gallery agreement: the same query against our stored fp16 gallery and against
    # the reference encoder's fp32 gallery must pick the same gallery coordinate.
    gallery = geo.gallery
    ref_gallery = reference.location_encoder.cached.numpy().copy()
    assert np.array_equal(reference.gps_gallery.numpy(), gallery.coords)
    ref_gallery /= np.linalg.norm(ref_gallery, axis=1, keepdims=True)
    ours_gallery = np.asarray(gallery.embeddings, dtype=np.float32)
    rng = np.random.default_rng(3)
    q = ref[:2000] / np.linalg.norm(ref[:2000], axis=1, keepdims=True)
    q = q + rng.normal(0, 0.03, q.shape).astype(np.float32)  # image-like: near, not on, a point
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    top_ours = np.argmax(q @ ours_gallery.T, axis=1)
    top_ref = np.argmax(q @ ref_gallery.T, axis=1)
    same = np.all(gallery.coords[top_ours] == gallery.coords[top_ref], axis=1)
    agreement = float(same.mean())
    with capsys.disabled():
        print(
            f"\nlocation encoder vs reference on {len(coords)} coords: max abs diff "
            f"{max_abs:.2e} (output scale {scale:.1f}), min cosine {cos.min():.7f}, "
            f"top-1 gallery agreement {agreement:.4f}"
        )
    assert np.isfinite(ours).all()
    assert cos.min() > 0.99999
    assert max_abs < 1e-3 * scale
    assert agreement >= 0.995


def test_image_encoder_matches_pytorch(tiny_home, reference, capsys):
    """The torch-free graph against GeoCLIP's own image encoder (transformers CLIP +
    its MLP head) on the same tiny CLIP folder."""
    from geoguess import Geolocator

    x = np.random.default_rng(0).normal(0, 1, (3, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = reference.image_encoder(torch.from_numpy(x)).numpy()
    geo = Geolocator.load("tiny", precision="fp32", device="cpu")
    ours = geo.image_encoder(x)
    assert ours.shape == (3, 512)
    max_abs = float(np.abs(ours - ref).max())
    cos = np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    with capsys.disabled():
        print(f"\ntiny CLIP graph vs GeoCLIP: max abs {max_abs:.2e}, min cosine {cos.min():.7f}")
    assert max_abs < 1e-4
    assert cos.min() >= 0.99999


@pytest.mark.parametrize("photo", UPRIGHT_PHOTOS)
def test_cli_top5_equals_reference_predict(tiny_home, reference, photos_dir, photo):
    path = photos_dir / photo
    result = CliRunner().invoke(
        app,
        [
            "--json",
            "--top-k",
            "5",
            "--precision",
            "fp32",
            "--exact-decode",
            "--raw-candidates",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        ref_gps, ref_prob = reference.predict(str(path), top_k=5)
    ours = np.array([[p["lat"], p["lon"]] for p in record["predictions"]])
    probs = np.array([p["probability"] for p in record["predictions"]])
    np.testing.assert_allclose(ours, ref_gps.numpy(), atol=1e-5)
    np.testing.assert_allclose(probs, ref_prob.numpy(), atol=1e-3)


def test_preprocessing_matches_clip_image_processor(photos_dir, capsys):
    from PIL import Image
    from transformers import CLIPImageProcessor

    from geoguess.preprocess import Preprocess

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = CLIPImageProcessor()
    ours = Preprocess()
    worst = 0.0
    checked = 0
    for path in sorted(photos_dir.iterdir()):
        if path.suffix.lower() in {".csv", ".heic"} or "truncated" in path.name:
            continue
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        ref = proc(images=rgb, return_tensors="np")["pixel_values"][0]
        worst = max(worst, float(np.abs(ours(rgb) - ref).max()))
        checked += 1
    with capsys.disabled():
        print(
            f"\npreprocessing vs CLIPImageProcessor on {checked} photos: "
            f"largest pixel difference {worst:.2e}"
        )
    assert checked >= 10
    assert worst < 1e-5


@pytest.mark.slow
def test_full_vit_l14_graph_matches_transformers(tmp_path, capsys):
    """The real geometry (random weights) from a Hugging Face folder, as users build it."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from geoguess.builder.backbone import RANDOM_GEOMETRIES, open_folder
    from geoguess.builder.geoclip_weights import load_geoclip
    from geoguess.builder.image_graph import write_image_encoder
    from geoguess.encoders import ImageEncoder

    torch.manual_seed(0)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**RANDOM_GEOMETRIES["vit-l14"]))
    vision.eval().save_pretrained(tmp_path / "clip")
    mlp = load_geoclip().mlp
    path = tmp_path / "vitl.onnx"
    write_image_encoder(open_folder(tmp_path / "clip", {}).weights, mlp, path)
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        emb = vision(pixel_values=torch.from_numpy(x)).image_embeds.numpy()
    del vision
    hidden = np.maximum(emb @ mlp["0.weight"].T + mlp["0.bias"], 0)
    ref = hidden @ mlp["2.weight"].T + mlp["2.bias"]
    ours = ImageEncoder(path, "cpu")(x)
    cos = np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    with capsys.disabled():
        print(
            f"\nViT-L/14 graph vs transformers: max abs {np.abs(ours - ref).max():.2e} "
            f"(output scale {np.abs(ref).max():.2f}), min cosine {cos.min():.7f}"
        )
    assert cos.min() >= 0.99999
