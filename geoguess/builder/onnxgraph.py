"""Writing ONNX graphs from numpy weights with the ``onnx`` package's helpers.

A :class:`Graph` collects nodes and initializers and saves a model. With a
``data_path`` the large initializers stream into that file as they are added (ONNX's
external-data layout, what ONNX Runtime loads and memory-maps directly), so building a
1.2 GB ViT-L/14 graph never holds more than one weight matrix in memory; the graph
file itself stays a few hundred kilobytes.

Why not onnxscript or spox: both build graphs from Python functions and would do,
but each brings its own intermediate representation and dependencies for what here
is a fixed list of about twenty operators; ``onnx.helper`` is already installed
with onnxruntime's quantiser and is the format's own reference API.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Opset 17 has LayerNormalization; IR 8 is what it requires, and what every
#: onnxruntime >= 1.14 reads.
OPSET = 17
IR_VERSION = 8

# Offsets in the data file are page-aligned so ONNX Runtime can map tensors in place.
_ALIGN = 4096
# Initializers smaller than this stay inside the graph (shapes, scalars, biases).
_EXTERNAL_MIN_BYTES = 1024


INT8_SCHEMES = ("per-tensor", "per-channel")


def quantize_weight(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric int8 weights as onnxruntime's dynamic quantiser makes them: one scale
    for the tensor (``axis`` None) or one per slice along ``axis``.

    The same arithmetic as onnxruntime.quantization's ``quantize_data`` for int8
    weights (range widened to include 0, made symmetric, scale = 2 max|w| / 254 in
    float64 then float32, zero point 0, round half to even, clip), vectorised over
    the slices: ViT-L/14 has 9,216 output channels per layer, and one call per channel
    took 15 s. Tests check the two agree bit for bit. Returns (values, scale, zero point).
    """
    if axis is None:
        absmax = np.float64(np.abs(w).max()) if w.size else 0.0
        scale = np.asarray(absmax * 2 / 254, np.float32)
    else:
        others = tuple(a for a in range(w.ndim) if a != axis)
        absmax = np.maximum(-np.minimum(w.min(axis=others), 0), np.maximum(w.max(axis=others), 0))
        scale = (absmax.astype(np.float64) * 2 / 254).astype(np.float32)
    tiny = np.finfo(np.float32).tiny
    scale = np.where(scale < tiny, np.float32(1.0), scale).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip((w.astype(np.float32) / scale.reshape(shape)).round(), -128, 127).astype(np.int8)
    zero = np.zeros(scale.shape, np.int8)
    return (
        q,
        (scale if axis is not None else np.float32(scale)),
        (zero if axis is not None else np.int8(0)),
    )


class Graph:
    """A graph under construction; node outputs are named automatically.

    With ``int8`` ("per-tensor" or "per-channel"), :meth:`linear` and :meth:`conv`
    write dynamically quantised operators (activations quantised at run time by
    DynamicQuantizeLinear, int8 weights, MatMulInteger/ConvInteger), the pattern that
    ``onnxruntime.quantization.quantize_dynamic`` produces and ONNX Runtime fuses.
    Writing it directly, weight by weight, avoids loading the fp32 graph back into
    memory to quantise it (3.8 GB and 18 s for ViT-L/14 with quantize_dynamic).
    """

    def __init__(self, name: str, data_path: Path | None = None, int8: str | None = None) -> None:
        if int8 is not None and int8 not in INT8_SCHEMES:
            raise ValueError(f"int8 must be one of {INT8_SCHEMES}")
        self.int8 = int8
        self._quantized_inputs: dict[str, list[str]] = {}
        self.name = name
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()
        self._counter = 0
        self._consts: dict[tuple[Any, ...], str] = {}
        self.data_path = data_path
        self._data = open(data_path, "wb") if data_path is not None else None  # noqa: SIM115

    # --- values ------------------------------------------------------------------------

    def _fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def weight(self, name: str, array: np.ndarray) -> str:
        """Add an initializer; large ones are written to the data file right away."""
        from onnx import TensorProto, numpy_helper

        if name in self._names:
            raise ValueError(f"duplicate initializer {name}")
        self._names.add(name)
        array = np.ascontiguousarray(array)
        if self._data is None or array.nbytes < _EXTERNAL_MIN_BYTES:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        pad = (-self._data.tell()) % _ALIGN
        if pad:
            self._data.write(b"\0" * pad)
        offset = self._data.tell()
        self._data.write(array.tobytes())
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = {
            np.dtype(np.float32): TensorProto.FLOAT,
            np.dtype(np.float16): TensorProto.FLOAT16,
            np.dtype(np.int64): TensorProto.INT64,
            np.dtype(np.int8): TensorProto.INT8,
        }[array.dtype]
        tensor.dims.extend(array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        assert self.data_path is not None
        for key, value in (
            ("location", self.data_path.name),
            ("offset", str(offset)),
            ("length", str(array.nbytes)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        return name

    def const(self, value: Any, dtype: type = np.float32) -> str:
        """A small constant (scalar or list), shared by every node that uses it."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(self._fresh("const"), array)
        return self._consts[key]

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    # --- nodes -------------------------------------------------------------------------

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        """Add a node; returns its output name (or a list of names when outputs > 1)."""
        from onnx import helper

        names = [self._fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def rename(self, value: str, name: str) -> str:
        """Give a value its public name (a graph output) through an Identity node."""
        from onnx import helper

        self.nodes.append(helper.make_node("Identity", [value], [name]))
        return name

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """x @ weight.T + bias, with weight in PyTorch's (out, in) layout.

        Stored transposed for MatMul, the layout onnxruntime's int8 quantiser expects of
        a constant right-hand side (and what PyTorch's exporter writes for nn.Linear).
        """
        w = np.ascontiguousarray(np.asarray(weight, np.float32).T)
        if self.int8 is None:
            out = self.op("MatMul", x, self.weight(f"{name}.weight", w))
        else:
            # Per channel means per output column, as onnxruntime does for MatMul.
            axis = 1 if self.int8 == "per-channel" else None
            out = self._integer_op("MatMulInteger", x, w, axis, name)
        if bias is not None:
            out = self.op("Add", out, self.weight(f"{name}.bias", np.asarray(bias)))
        return out

    def conv(self, x: str, weight: np.ndarray, name: str, **attrs: Any) -> str:
        """A convolution without bias; int8 graphs quantise its weights per tensor
        (onnxruntime's dynamic quantiser does so for Conv in either scheme)."""
        w = np.asarray(weight, np.float32)
        if self.int8 is None:
            return self.op("Conv", x, self.weight(f"{name}.weight", w), **attrs)
        return self._integer_op("ConvInteger", x, w, None, name, **attrs)

    def _integer_op(
        self, op_type: str, x: str, w: np.ndarray, axis: int | None, name: str, **attrs: Any
    ) -> str:
        from onnx import TensorProto

        if x not in self._quantized_inputs:
            # One run-time quantisation per activation, shared by its consumers (q/k/v).
            self._quantized_inputs[x] = self.op("DynamicQuantizeLinear", x, outputs=3)
        xq, x_scale, x_zero = self._quantized_inputs[x]
        q, scale, zero = quantize_weight(w, axis)
        wq = self.weight(f"{name}.weight_quantized", q)
        w_scale = self.weight(f"{name}.weight_scale", scale)
        w_zero = self.weight(f"{name}.weight_zero_point", zero)
        acc = self.op(op_type, xq, wq, x_zero, w_zero, **attrs)
        scaled = self.op("Mul", x_scale, w_scale)
        return self.op("Mul", self.op("Cast", acc, to=TensorProto.FLOAT), scaled)

    # --- saving ------------------------------------------------------------------------

    def save(
        self,
        path: Path,
        inputs: Sequence[tuple[str, int, Sequence[int | str]]],
        outputs: Sequence[tuple[str, int, Sequence[int | str]]],
        *,
        producer: str = "geoguess",
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Write the model; ``inputs``/``outputs`` are (name, TensorProto type, shape)."""
        import onnx
        from onnx import helper

        if self._data is not None:
            self._data.flush()
            os.fsync(self._data.fileno())
            self._data.close()
            self._data = None
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in inputs],
            [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            producer_name=producer,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
        )
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        # Given a path, the checker finds the external data beside the model and checks
        # it is there without reading the weights back into memory.
        onnx.checker.check_model(str(path))
