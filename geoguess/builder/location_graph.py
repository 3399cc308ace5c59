"""GeoCLIP's location encoder as an ONNX graph, from its released state dict.

(lat, lon) in degrees -> Equal Earth projection -> per capsule: random Fourier
features (fixed matrix B), three Linear+ReLU layers and a head -> the sum of the
capsules (``embedding``, n x 512) and each capsule's output (``capsules``,
n x capsules x 512; the cluster tree embeds its levels with single capsules).

The arithmetic follows GeoCLIP's PyTorch code operation by operation, in float32
with the same constants and order, because at sigma 2^8 the Fourier phase reaches
thousands of radians, where a different rounding order shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .onnxgraph import Graph

# Equal Earth projection constants, as in GeoCLIP (Savric et al. 2018, scaled by SF/180).
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
SF = 66.50336

_LAYERS = ("capsule.1", "capsule.3", "capsule.5")


def capsule_count(state: Mapping[str, np.ndarray]) -> int:
    return len({k.split(".", 1)[0] for k in state if k.startswith("LocEnc")})


def _equal_earth(g: Graph) -> str:
    f32 = np.float32
    lat = g.op("Slice", "latlon", g.ints(0), g.ints(1), g.ints(1))
    lon = g.op("Slice", "latlon", g.ints(1), g.ints(2), g.ints(1))
    deg = g.const(f32(math.pi / 180))  # torch.deg2rad's factor, in float32
    lat = g.op("Mul", lat, deg)
    lon = g.op("Mul", lon, deg)
    sqrt3 = np.sqrt(f32(3.0))  # torch.sqrt(torch.tensor(3.0)) is float32
    theta = g.op("Asin", g.op("Mul", g.const(sqrt3 / f32(2)), g.op("Sin", lat)))

    def power(n: int) -> str:
        return g.op("Pow", theta, g.const(float(n)))

    def term(c: float, n: int) -> str:
        return g.op("Mul", g.const(c), power(n))

    denominator = g.op(
        "Mul",
        g.const(3.0),
        g.op(
            "Add",
            g.op("Add", g.op("Add", term(9 * A4, 8), term(7 * A3, 6)), term(3 * A2, 2)),
            g.const(A1),
        ),
    )
    x = g.op("Mul", g.op("Mul", g.const(f32(2) * sqrt3), lon), g.op("Cos", theta))
    x = g.op("Div", x, denominator)
    y = g.op(
        "Add",
        g.op("Add", g.op("Add", term(A4, 9), term(A3, 7)), term(A2, 3)),
        g.op("Mul", g.const(A1), theta),
    )
    xy = g.op("Concat", x, y, axis=1)
    return g.op("Div", g.op("Mul", xy, g.const(SF)), g.const(180.0))


def write_location_encoder(state: Mapping[str, np.ndarray], path: Path) -> None:
    """Write the location encoder (one self-contained file, about 45 MB)."""
    from onnx import TensorProto

    n_caps = capsule_count(state)
    if n_caps == 0:
        raise ExportError("the location encoder's weights hold no capsules (LocEnc0...)")
    g = Graph("geoguess_location_encoder")
    projected = g.op("Mul", _equal_earth(g), g.const(np.float32(2 * np.pi)))
    outputs = []
    for i in range(n_caps):
        p = f"LocEnc{i}."
        try:
            b = state[p + "capsule.0.b"]
            # geoclip computes (2*pi*v) @ B.T: the factor first, as done once above.
            phase = g.op("MatMul", projected, g.weight(p + "rff.b", np.asarray(b).T))
            h = g.op("Concat", g.op("Cos", phase), g.op("Sin", phase), axis=-1)
            for layer in _LAYERS:
                h = g.op(
                    "Relu",
                    g.linear(
                        h, state[p + layer + ".weight"], state[p + layer + ".bias"], p + layer
                    ),
                )
            h = g.linear(h, state[p + "head.0.weight"], state[p + "head.0.bias"], p + "head.0")
        except KeyError as exc:
            raise ExportError(f"the location encoder's weights lack {exc.args[0]}") from None
        outputs.append(h)
    total = outputs[0]
    for h in outputs[1:]:
        total = g.op("Add", total, h)
    g.rename(total, "embedding")
    stacked = g.op("Concat", *[g.op("Unsqueeze", h, g.ints(1)) for h in outputs], axis=1)
    g.rename(stacked, "capsules")
    dim = int(np.asarray(state["LocEnc0.head.0.weight"]).shape[0])
    g.save(
        path,
        [("latlon", TensorProto.FLOAT, ["n", 2])],
        [
            ("embedding", TensorProto.FLOAT, ["n", dim]),
            ("capsules", TensorProto.FLOAT, ["n", n_caps, dim]),
        ],
    )
