"""The cache of derived files: optimised ONNX graphs and float32 galleries."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from geoguess import derived
from geoguess.providers import open_session


def _half(rows: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(0, 0.05, (rows, 64)).astype(np.float16)


def _corrupt(path: Path) -> None:
    """Change bytes but not the size, with a new mtime, as a disk error might."""
    data = bytearray(path.read_bytes())
    data[-50:] = bytes(50)
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_float32_gallery_is_saved_once_then_mapped() -> None:
    half = _half()
    first = derived.float32_embeddings(half, "ab" * 32)
    np.testing.assert_array_equal(first, half.astype(np.float32))
    files = sorted(p.name for p in derived.cache_dir().iterdir())
    assert files == [f"{'ab' * 16}-float32.npy", f"{'ab' * 16}-float32.npy.sha256"]
    second = derived.float32_embeddings(half, "ab" * 32)
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, first)


def test_a_damaged_float32_gallery_is_rebuilt() -> None:
    half = _half()
    derived.float32_embeddings(half, "cd" * 32)
    path = derived.cache_dir() / f"{'cd' * 16}-float32.npy"
    _corrupt(path)
    again = derived.float32_embeddings(half, "cd" * 32)
    assert not isinstance(again, np.memmap)  # not trusted: widened afresh
    np.testing.assert_array_equal(again, half.astype(np.float32))
    assert derived.lookup(path) == path  # and published again


def test_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOGUESS_DERIVED_CACHE", "0")
    assert derived.cache_dir() is None
    out = derived.float32_embeddings(_half(), "ef" * 32)
    assert out.dtype == np.float32 and not isinstance(out, np.memmap)


def test_unwritable_cache_still_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(derived, "cache_dir", lambda: blocker / "derived")
    out = derived.float32_embeddings(_half(), "12" * 32)
    np.testing.assert_array_equal(out, _half().astype(np.float32))


def test_optimised_graph_is_cached_and_checked(tiny_home: Path, tmp_path: Path) -> None:
    source = tiny_home / "models" / "tiny" / "image_encoder.fp32.onnx"
    sha = "34" * 32
    pixels = np.random.default_rng(1).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)

    def run() -> np.ndarray:
        session = open_session(source, "cpu", source_sha256=sha, cache_dir=tmp_path)
        return session.run({"pixel_values": pixels})[0]

    want = run()
    graphs = list(tmp_path.glob("*.onnx"))
    weights = list(tmp_path.glob("*.weights"))  # the weights sit beside the graph
    assert len(graphs) == 1 and len(weights) == 1 and not list(tmp_path.glob("*.tmp"))
    assert weights[0].stat().st_size > graphs[0].stat().st_size
    assert derived.lookup(graphs[0]) == graphs[0]
    np.testing.assert_allclose(run(), want, atol=1e-6)  # from the cached graph
    for damaged in (graphs[0], weights[0]):
        _corrupt(damaged)
        assert derived.lookup(graphs[0]) is None
        np.testing.assert_allclose(run(), want, atol=1e-6)  # damaged copy ignored, rebuilt
        assert derived.lookup(graphs[0]) == graphs[0]
        assert len(list(tmp_path.glob("*.weights"))) == 1  # the old weights are gone
