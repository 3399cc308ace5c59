"""The hand-encoded ONNX graph that scores fp16 rows (geoguess.gather_dot)."""

from __future__ import annotations

import numpy as np
import pytest

from geoguess.gather_dot import (
    GRAPH_NAME,
    IR_VERSION,
    ONNX_FLOAT,
    ONNX_FLOAT16,
    OPSET,
    PRODUCER,
    RowScorer,
    gather_dot_model,
)


def _helper_model(onnx, elem_type: int, dim: int):
    """The same graph written with onnx.helper, the reference for the hand encoding."""
    h = onnx.helper
    nodes = [h.make_node("Gather", ["table", "rows"], ["picked"], name="gather", axis=0)]
    picked = "picked"
    if elem_type != ONNX_FLOAT:
        nodes.append(h.make_node("Cast", ["picked"], ["picked32"], name="cast", to=ONNX_FLOAT))
        picked = "picked32"
    nodes.append(h.make_node("MatMul", [picked, "query"], ["scores"], name="matmul"))
    graph = h.make_graph(
        nodes,
        GRAPH_NAME,
        [
            h.make_tensor_value_info("table", elem_type, ["n", dim]),
            h.make_tensor_value_info("rows", onnx.TensorProto.INT64, ["m"]),
            h.make_tensor_value_info("query", ONNX_FLOAT, [dim, "q"]),
        ],
        [h.make_tensor_value_info("scores", ONNX_FLOAT, ["m", "q"])],
    )
    return h.make_model(
        graph,
        producer_name=PRODUCER,
        ir_version=IR_VERSION,
        opset_imports=[h.make_operatorsetid("", OPSET)],
    )


@pytest.mark.parametrize(("elem_type", "dim"), [(ONNX_FLOAT16, 512), (ONNX_FLOAT, 768)])
def test_hand_encoding_equals_the_onnx_helper_graph(elem_type: int, dim: int) -> None:
    onnx = pytest.importorskip("onnx")
    ours = onnx.load_from_string(gather_dot_model(elem_type, dim))
    onnx.checker.check_model(ours, full_check=True)
    reference = _helper_model(onnx, elem_type, dim)
    assert ours == reference, f"{ours}\n!=\n{reference}"
    assert [n.op_type for n in ours.graph.node] == (
        ["Gather", "Cast", "MatMul"] if elem_type == ONNX_FLOAT16 else ["Gather", "MatMul"]
    )


def test_hand_encoded_bytes_load_and_run_in_onnxruntime() -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(gather_dot_model(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    table = rng.normal(size=(40, 512)).astype(np.float16)
    rows = np.array([5, 0, 39], dtype=np.int64)
    query = rng.normal(size=(512, 2)).astype(np.float32)
    (scores,) = session.run(None, {"table": table, "rows": rows, "query": query})
    expected = table[rows].astype(np.float32) @ query
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)


def test_row_scorer_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(500, 512)).astype(np.float16)
    rows = np.array([3, 7, 8, 9, 499, 0], dtype=np.int64)
    q = rng.normal(size=512).astype(np.float32)
    scorer = RowScorer(512)
    expected = table[rows].astype(np.float32) @ q
    np.testing.assert_allclose(scorer(table, rows, q), expected, rtol=1e-5, atol=1e-4)
    table32 = table.astype(np.float32)
    np.testing.assert_allclose(scorer(table32, rows, q), expected, rtol=1e-5, atol=1e-4)


def test_the_runtime_does_not_import_onnx() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from geoguess.gather_dot import RowScorer\n"
        "RowScorer(512)\n"
        "print('onnx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
