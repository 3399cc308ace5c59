"""Scoring chosen rows of an fp16 table against a query, through a tiny ONNX graph.

numpy converts float16 to float32 one element at a time (about 2 ns each here), which
alone would cost 2 ms for the 2,000 leaves a tree query reads. ONNX Runtime's Cast uses
the CPU's conversion instructions and reads the memory-mapped file without copying it,
so one tiny graph (Gather rows -> Cast -> MatMul) scores the leaves of a beam in one call.

The graph is encoded here by hand, a few protobuf fields, because importing the
``onnx`` package to build it costs about 1.2 s at run time, more than a whole tree
query; ``tests/test_gather_dot.py`` checks it against the same graph built with
``onnx.helper``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ONNX_FLOAT, ONNX_FLOAT16, ONNX_INT64 = 1, 10, 7
IR_VERSION = 8
OPSET = 17
PRODUCER = "geoguess"
GRAPH_NAME = "gather_dot"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_int(field_no: int, value: int) -> bytes:
    return _varint(field_no << 3) + _varint(value)


def _pb_bytes(field_no: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint((field_no << 3) | 2) + _varint(len(data)) + data


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    # TensorShapeProto.Dimension: dim_value=1, dim_param=2
    shape = b"".join(
        _pb_bytes(1, _pb_bytes(2, d) if isinstance(d, str) else _pb_int(1, d)) for d in dims
    )
    # TypeProto.Tensor: elem_type=1, shape=2; TypeProto: tensor_type=1
    tensor = _pb_int(1, elem_type) + _pb_bytes(2, shape)
    # ValueInfoProto: name=1, type=2
    return _pb_bytes(1, name) + _pb_bytes(2, _pb_bytes(1, tensor))


def _node(op: str, inputs: Sequence[str], outputs: Sequence[str], **ints: int) -> bytes:
    # NodeProto: input=1, output=2, name=3, op_type=4, attribute=5
    body = b"".join(_pb_bytes(1, i) for i in inputs) + b"".join(_pb_bytes(2, o) for o in outputs)
    body += _pb_bytes(3, op.lower()) + _pb_bytes(4, op)
    for name, value in ints.items():
        # AttributeProto: name=1, i=3, type=20 (INT = 2)
        body += _pb_bytes(5, _pb_bytes(1, name) + _pb_int(3, value) + _pb_int(20, 2))
    return body


def gather_dot_model(elem_type: int = ONNX_FLOAT16, dim: int = 512) -> bytes:
    """ONNX graph: scores = float32(rows_of(table)) @ query; inputs table, rows, query."""
    nodes = [_node("Gather", ["table", "rows"], ["picked"], axis=0)]
    picked = "picked"
    if elem_type != ONNX_FLOAT:
        nodes.append(_node("Cast", ["picked"], ["picked32"], to=ONNX_FLOAT))
        picked = "picked32"
    nodes.append(_node("MatMul", [picked, "query"], ["scores"]))
    # GraphProto: node=1, name=2, input=11, output=12
    graph = b"".join(_pb_bytes(1, n) for n in nodes) + _pb_bytes(2, GRAPH_NAME)
    graph += _pb_bytes(11, _value_info("table", elem_type, ["n", dim]))
    graph += _pb_bytes(11, _value_info("rows", ONNX_INT64, ["m"]))
    graph += _pb_bytes(11, _value_info("query", ONNX_FLOAT, [dim, "q"]))
    graph += _pb_bytes(12, _value_info("scores", ONNX_FLOAT, ["m", "q"]))
    # ModelProto: ir_version=1, producer_name=2, graph=7, opset_import=8 (domain=1, version=2)
    return (
        _pb_int(1, IR_VERSION)
        + _pb_bytes(2, PRODUCER)
        + _pb_bytes(7, graph)
        + _pb_bytes(8, _pb_bytes(1, "") + _pb_int(2, OPSET))
    )


class RowScorer:
    """``scores(table, rows, q)`` = table[rows] @ q in float32, through ONNX Runtime."""

    def __init__(self, dim: int, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sessions = {
            dtype: ort.InferenceSession(
                gather_dot_model(elem, dim), opts, providers=["CPUExecutionProvider"]
            )
            for dtype, elem in ((np.float16, ONNX_FLOAT16), (np.float32, ONNX_FLOAT))
        }

    def __call__(self, table: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        session = self._sessions[table.dtype.type]
        out = session.run(None, {"table": table, "rows": rows, "query": query.reshape(-1, 1)})[0]
        return out[:, 0]
