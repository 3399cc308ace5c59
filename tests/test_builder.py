"""The torch-free graph writer: int8 as onnxruntime quantises, weights on disk, checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoguess.builder.backbone import RANDOM_GEOMETRIES, backbone_kind, open_folder, open_random
from geoguess.builder.image_graph import write_image_encoder
from geoguess.builder.onnxgraph import quantize_weight
from geoguess.encoders import ImageEncoder
from geoguess.errors import ExportError, UsageError


def _mlp(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.05, shape).astype(np.float32)

    return {"0.weight": w(768, 768), "0.bias": w(768), "2.weight": w(512, 768), "2.bias": w(512)}


@pytest.mark.parametrize("axis", [None, 1])
def test_quantize_weight_equals_onnxruntime(axis):
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    rng = np.random.default_rng(1)
    w = (rng.standard_normal((96, 300)) * 0.02).astype(np.float32)
    w[:, 3] = 0  # an all-zero channel: onnxruntime falls back to scale 1
    w[:, 7] = np.abs(w[:, 7])  # one-sided range: 0 joins it
    q, scale, zero = quantize_weight(w, axis)
    slices = [w.ravel()] if axis is None else [w[:, i] for i in range(w.shape[1])]
    for i, data in enumerate(slices):
        ref_zero, ref_scale, ref_q = quantize_data(data, TensorProto.INT8, True)
        ours_q = q.ravel() if axis is None else q[:, i]
        ours_scale = scale if axis is None else scale[i]
        ours_zero = zero if axis is None else zero[i]
        assert np.array_equal(np.asarray(ref_q, np.int8).ravel(), ours_q)
        assert np.float32(ref_scale) == ours_scale
        assert int(ref_zero) == int(ours_zero)


@pytest.mark.parametrize("scheme", ["per-tensor", "per-channel"])
def test_int8_graph_equals_quantize_dynamic(tmp_path, tiny_backbone_dir, scheme):
    """Writing int8 directly gives what onnxruntime's quantize_dynamic makes of fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights = open_folder(tiny_backbone_dir, {}).weights
    mlp = _mlp()
    fp32, ours, theirs = tmp_path / "f.onnx", tmp_path / "o.onnx", tmp_path / "t.onnx"
    write_image_encoder(weights, mlp, fp32)
    write_image_encoder(weights, mlp, ours, int8=scheme)
    quantize_dynamic(
        str(fp32),
        str(theirs),
        weight_type=QuantType.QInt8,
        per_channel=scheme == "per-channel",
        extra_options={"MatMulConstBOnly": True},
    )
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    a = ImageEncoder(ours, "cpu", per_image=True)(x)
    b = ImageEncoder(theirs, "cpu", per_image=True)(x)
    assert np.array_equal(a, b)
    full = ImageEncoder(fp32, "cpu")(x)
    cos = np.sum(a * full, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(full, axis=1))
    assert cos.min() > 0.98


def test_weights_stream_to_external_data(tmp_path, tiny_backbone_dir):
    import onnx

    weights = open_folder(tiny_backbone_dir, {}).weights
    path = tmp_path / "enc.onnx"
    written = write_image_encoder(weights, _mlp(), path)
    assert written == [path, tmp_path / "enc.onnx.data"]
    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) >= 19  # every matrix of the tiny CLIP and the head
    offsets = [int(dict((e.key, e.value) for e in t.external_data)["offset"]) for t in external]
    assert all(o % 4096 == 0 for o in offsets)  # page-aligned: mapped in place
    assert path.stat().st_size < 100_000  # the graph itself holds no weights


def test_random_backbone_is_deterministic_and_has_the_geometry():
    a, b = open_random("tiny").weights, open_random("tiny").weights
    name = "vision_model.encoder.layers.1.mlp.fc1.weight"
    assert np.array_equal(a[name], b[name])
    assert a[name].shape == (64, 32)
    a.check()
    assert open_random("tiny").random
    big = open_random("vit-l14").weights.cfg
    assert (big.hidden_size, big.num_hidden_layers) == (1024, 24)
    assert set(RANDOM_GEOMETRIES) == {"vit-l14", "vit-b32", "tiny"}


def test_backbone_specs_are_checked_before_any_work(tmp_path):
    assert backbone_kind("random:tiny") == "random"
    assert backbone_kind("openai/clip-vit-large-patch14") == "hub"
    with pytest.raises(UsageError, match="random:vit-l14"):
        backbone_kind("random:vit-h99")
    with pytest.raises(UsageError, match="no such backbone folder"):
        backbone_kind(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no config\.json"):
        backbone_kind(str(tmp_path / "empty"))


def test_folder_without_safetensors_or_with_wrong_projection_is_refused(
    tmp_path, tiny_backbone_dir
):
    import json
    import shutil

    folder = tmp_path / "bin-only"
    folder.mkdir()
    shutil.copy(tiny_backbone_dir / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ExportError, match="safetensors weights only"):
        open_folder(folder, {})

    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "narrow"
    folder.mkdir()
    shutil.copy(tiny_backbone_dir / "config.json", folder)
    tensors = load_file(str(tiny_backbone_dir / "model.safetensors"))
    tensors["visual_projection.weight"] = tensors["visual_projection.weight"][:512]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ExportError, match="GeoCLIP's head needs 768"):
        open_folder(folder, {})

    cfg = json.loads((tiny_backbone_dir / "config.json").read_text())
    cfg["vision_config"]["hidden_act"] = "swish"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="activation 'swish' is not supported"):
        open_folder(folder, {})


def test_plan_refuses_existing_set_and_real_name_for_random(tiny_home_copy):
    from geoguess.builder.build import BuildOptions, plan_build

    with pytest.raises(UsageError, match="already exists"):
        plan_build(BuildOptions(name="tiny", backbone="random:tiny"))
    with pytest.raises(UsageError, match="cannot be named 'geoclip-vit-l14'"):
        plan_build(BuildOptions(name="geoclip-vit-l14", backbone="random:tiny"))
    plan = plan_build(BuildOptions(backbone="random:tiny"))
    assert plan.name == "random-tiny" and plan.downloads == ()
    assert plan_build(BuildOptions(name="tiny", backbone="random:tiny", force=True)).name == "tiny"
    with pytest.raises(UsageError, match="include fp32"):
        plan_build(BuildOptions(backbone="random:tiny", precisions=("int8",)))


def test_build_without_consent_names_the_downloads(monkeypatch, tmp_path):
    """A library caller that did not allow downloads gets told what they would be."""
    from geoguess.builder import geoclip_weights
    from geoguess.builder.build import BuildOptions, build_model_set
    from geoguess.errors import SetupError

    monkeypatch.setattr(geoclip_weights, "GEOCLIP_PACKAGE", "geoclip_not_installed_here")
    expected = r"needs downloads .*geoclip-1\.3\.0.*geoguess models build"
    with pytest.raises(SetupError, match=expected):
        build_model_set(BuildOptions(backbone="random:tiny"))
    assert not (Path(tmp_path) / "nothing").exists()
