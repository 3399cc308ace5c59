"""The image encoder as an ONNX graph: CLIP's vision tower, its visual projection
and GeoCLIP's MLP head, written operator by operator from the weights.

It computes what ``transformers``' ``CLIPVisionModelWithProjection`` followed by
GeoCLIP's ``Linear(768, 768), ReLU, Linear(768, 512)`` computes (tests compare the
two on a tiny configuration and on the full ViT-L/14 geometry), with two exact
shortcuts:

- The attention scale (head size ** -0.5, a power of two for CLIP's 64-wide heads)
  is folded into the query projection's weights.
- The last layer computes the class token only. CLIP's image embedding is that
  token (pooled, then projected), so the attention output, residual and MLP of the
  other 256 tokens would be wasted work there: about 3.5% of a ViT-L/14 image. Keys
  and values still come from every token, so the class token comes out the same.
  Only the last layer may be cut like this: every earlier layer's tokens feed the
  next one's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .backbone import VisionConfig, Weights
from .onnxgraph import Graph


def _layer_norm(g: Graph, x: str, w: Weights, name: str, eps: float) -> str:
    return g.op(
        "LayerNormalization",
        x,
        g.weight(f"{name}.weight", w[f"{name}.weight"]),
        g.weight(f"{name}.bias", w[f"{name}.bias"]),
        axis=-1,
        epsilon=eps,
    )


def _activation(g: Graph, x: str, kind: str) -> str:
    if kind == "quick_gelu":  # x * sigmoid(1.702 x), as CLIP was trained
        return g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, g.const(1.702))))
    # Exact GELU through erf (opset 17 has no Gelu operator).
    erf = g.op("Erf", g.op("Mul", x, g.const(1 / np.sqrt(2.0))))
    return g.op("Mul", g.op("Mul", x, g.const(0.5)), g.op("Add", erf, g.const(1.0)))


def _encoder_layer(
    g: Graph, x: str, w: Weights, cfg: VisionConfig, i: int, *, class_token_only: bool
) -> str:
    p = f"vision_model.encoder.layers.{i}."
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    size = d // heads
    scale = np.float32(size**-0.5)

    h = _layer_norm(g, x, w, p + "layer_norm1", cfg.layer_norm_eps)
    query_in = g.op("Slice", h, g.ints(0), g.ints(1), g.ints(1)) if class_token_only else h
    residual = g.op("Slice", x, g.ints(0), g.ints(1), g.ints(1)) if class_token_only else x
    a = p + "self_attn."
    q = g.linear(
        query_in, w[a + "q_proj.weight"] * scale, w[a + "q_proj.bias"] * scale, a + "q_proj"
    )
    k = g.linear(h, w[a + "k_proj.weight"], w[a + "k_proj.bias"], a + "k_proj")
    v = g.linear(h, w[a + "v_proj.weight"], w[a + "v_proj.bias"], a + "v_proj")
    split = g.ints(0, 0, heads, size)
    q = g.op("Transpose", g.op("Reshape", q, split), perm=[0, 2, 1, 3])  # n, heads, t, size
    k = g.op("Transpose", g.op("Reshape", k, split), perm=[0, 2, 3, 1])  # n, heads, size, t
    v = g.op("Transpose", g.op("Reshape", v, split), perm=[0, 2, 1, 3])
    attn = g.op("Softmax", g.op("MatMul", q, k), axis=-1)
    out = g.op("Transpose", g.op("MatMul", attn, v), perm=[0, 2, 1, 3])
    out = g.op("Reshape", out, g.ints(0, 0, d))
    out = g.linear(out, w[a + "out_proj.weight"], w[a + "out_proj.bias"], a + "out_proj")
    x = g.op("Add", residual, out)

    h = _layer_norm(g, x, w, p + "layer_norm2", cfg.layer_norm_eps)
    h = g.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"], p + "mlp.fc1")
    h = _activation(g, h, cfg.hidden_act)
    h = g.linear(h, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"], p + "mlp.fc2")
    return g.op("Add", x, h)


def write_image_encoder(
    weights: Weights,
    mlp: Mapping[str, np.ndarray],
    path: Path,
    *,
    external_data: bool = True,
    int8: str | None = None,
    progress: object = None,
) -> list[Path]:
    """Write the image encoder to ``path``; returns the files written.

    Input ``pixel_values`` (n, 3, S, S) float32, output ``embedding`` (n, 512). With
    ``external_data`` the weights go to ``<path>.data`` beside the graph. ``int8``
    ("per-tensor" or "per-channel") writes the dynamically quantised graph instead of
    fp32 (see :class:`Graph`). ``progress``, if given, is called with 1 after each
    encoder layer.
    """
    cfg = weights.cfg
    d = cfg.hidden_size
    data_path = path.with_name(path.name + ".data") if external_data else None
    g = Graph("geoguess_image_encoder", data_path, int8=int8)
    w = weights
    e = "vision_model.embeddings."

    # Patches: a strided convolution, then (n, d, grid, grid) -> (n, tokens, d).
    patches = g.conv(
        "pixel_values",
        w[e + "patch_embedding.weight"],
        e + "patch_embedding",
        kernel_shape=[cfg.patch_size, cfg.patch_size],
        strides=[cfg.patch_size, cfg.patch_size],
    )
    tokens = g.op("Transpose", g.op("Reshape", patches, g.ints(0, d, -1)), perm=[0, 2, 1])
    # Position embeddings added before the class token joins: each element still gets
    # exactly one addition, as in transformers' concatenate-then-add.
    position = w[e + "position_embedding.weight"]
    tokens = g.op("Add", tokens, g.weight(e + "position_embedding.patches", position[None, 1:]))
    cls = (w[e + "class_embedding"] + position[0])[None, None, :]
    batch = g.op("Slice", g.op("Shape", "pixel_values"), g.ints(0), g.ints(1), g.ints(0))
    cls = g.op(
        "Expand",
        g.weight(e + "class_embedding.positioned", cls),
        g.op("Concat", batch, g.ints(1, d), axis=0),
    )
    x = g.op("Concat", cls, tokens, axis=1)
    x = _layer_norm(g, x, w, "vision_model.pre_layrnorm", cfg.layer_norm_eps)

    last = cfg.num_hidden_layers - 1
    for i in range(cfg.num_hidden_layers):
        x = _encoder_layer(g, x, w, cfg, i, class_token_only=i == last)
        if callable(progress):
            progress(1)

    pooled = g.op("Reshape", x, g.ints(0, d))  # (n, 1, d): the class token alone
    pooled = _layer_norm(g, pooled, w, "vision_model.post_layernorm", cfg.layer_norm_eps)
    projected = g.linear(pooled, w["visual_projection.weight"], None, "visual_projection")
    hidden = g.op("Relu", g.linear(projected, mlp["0.weight"], mlp["0.bias"], "geoclip.mlp.0"))
    out = g.linear(hidden, mlp["2.weight"], mlp["2.bias"], "geoclip.mlp.2")
    g.rename(out, "embedding")

    from onnx import TensorProto

    size = cfg.image_size
    g.save(
        path,
        [("pixel_values", TensorProto.FLOAT, ["n", 3, size, size])],
        [("embedding", TensorProto.FLOAT, ["n", int(np.asarray(mlp["2.weight"]).shape[0])])],
    )
    return [path] + ([data_path] if data_path is not None else [])
