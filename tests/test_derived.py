"""The cache of derived files: optimised ONNX graphs and float32 galleries."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from damage import flip_byte
from typer.testing import CliRunner

from geoguess import atomic, derived
from geoguess.cli import app
from geoguess.providers import open_session
from geoguess.store import cache_root

runner = CliRunner()


def _half(rows: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(0, 0.05, (rows, 64)).astype(np.float16)


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_float32_gallery_is_saved_once_then_mapped() -> None:
    half = _half()
    first = derived.float32_embeddings(half, "ab" * 32)
    np.testing.assert_array_equal(first, half.astype(np.float32))
    root = derived.cache_dir()
    assert _entries(root) == [f"float32-{'ab' * 16}"]
    assert sorted(p.name for p in (root / f"float32-{'ab' * 16}").iterdir()) == [
        "embeddings.npy",
        "entry.json",
    ]

    def never() -> np.ndarray:
        raise AssertionError("a cached start must not read the half-float gallery")

    second = derived.float32_embeddings(never, "ab" * 32)
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, first)


def test_a_float32_gallery_with_one_byte_changed_and_its_mtime_kept_is_rebuilt() -> None:
    half = _half()
    derived.float32_embeddings(half, "cd" * 32)
    entry = derived.cache_dir() / f"float32-{'cd' * 16}"
    flip_byte(entry / "embeddings.npy")
    again = derived.float32_embeddings(half, "cd" * 32)
    assert not isinstance(again, np.memmap)  # not trusted: widened afresh
    np.testing.assert_array_equal(again, half.astype(np.float32))
    root = derived.cache_dir()
    assert [p.name.startswith(".trash-") for p in root.iterdir()].count(True) == 1
    found = derived.find(root, f"float32-{'cd' * 16}", "cd" * 32)  # and published again
    assert found is not None and found.path == entry


@pytest.mark.parametrize("damage", ["no entry.json", "garbage entry.json", "missing file"])
def test_an_entry_that_no_longer_describes_itself_is_rebuilt(damage: str) -> None:
    half = _half()
    derived.float32_embeddings(half, "ce" * 32)
    entry = derived.cache_dir() / f"float32-{'ce' * 16}"
    if damage == "no entry.json":
        (entry / "entry.json").unlink()
    elif damage == "garbage entry.json":
        (entry / "entry.json").write_text("{not json")
    else:
        (entry / "embeddings.npy").unlink()
    again = derived.float32_embeddings(half, "ce" * 32)
    np.testing.assert_array_equal(again, half.astype(np.float32))
    assert derived.find(derived.cache_dir(), entry.name, "ce" * 32) is not None


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


def test_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, geoguess_home) -> None:
    assert cache_root() == geoguess_home / "cache"  # tests stay inside their home
    monkeypatch.setenv("GEOGUESS_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert derived.cache_dir() == tmp_path / "elsewhere" / "derived"
    monkeypatch.delenv("GEOGUESS_CACHE_DIR")
    monkeypatch.delenv("GEOGUESS_HOME")
    import platformdirs

    assert cache_root() == Path(platformdirs.user_cache_dir("geoguess", appauthor=False))


def _session_output(source: Path, root: Path, pixels: np.ndarray) -> np.ndarray:
    session = open_session(source, "cpu", source_sha256="34" * 32, cache_dir=root)
    return session.run({"pixel_values": pixels})[0]


def test_optimised_graph_is_one_entry_with_its_weights(tiny_home: Path, tmp_path: Path) -> None:
    source = tiny_home / "models" / "tiny" / "image_encoder.fp32.onnx"
    pixels = np.random.default_rng(1).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    want = _session_output(source, tmp_path, pixels)
    (name,) = _entries(tmp_path)
    entry = tmp_path / name
    files = sorted(p.name for p in entry.iterdir())
    assert files == ["entry.json", derived.GRAPH_NAME, derived.GRAPH_WEIGHTS]
    assert (entry / derived.GRAPH_WEIGHTS).stat().st_size > (
        entry / derived.GRAPH_NAME
    ).stat().st_size
    listed = json.loads((entry / "entry.json").read_text())["files"]
    assert sorted(listed) == [derived.GRAPH_NAME, derived.GRAPH_WEIGHTS]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert derived.find(tmp_path, name, "34" * 32) is not None
    np.testing.assert_allclose(_session_output(source, tmp_path, pixels), want, atol=1e-6)
    for damaged in (derived.GRAPH_NAME, derived.GRAPH_WEIGHTS):
        flip_byte(entry / damaged)
        # Damage found by the checksum (these files are small enough to be hashed at every
        # load): the entry is set aside, never deleted under a reader, and made again.
        np.testing.assert_allclose(_session_output(source, tmp_path, pixels), want, atol=1e-6)
        assert _entries(tmp_path) == [name]
        assert derived.find(tmp_path, name, "34" * 32) is not None
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".trash-")]) == 2


def test_a_cached_graph_that_onnxruntime_cannot_load_is_made_again(
    tiny_home: Path, tmp_path: Path
) -> None:
    source = tiny_home / "models" / "tiny" / "image_encoder.fp32.onnx"
    pixels = np.random.default_rng(2).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    want = _session_output(source, tmp_path, pixels)
    (name,) = _entries(tmp_path)
    entry = tmp_path / name
    # Checksums that agree with broken weights: only loading it shows the damage.
    (entry / derived.GRAPH_WEIGHTS).write_bytes(b"\0" * 100)
    desc = json.loads((entry / "entry.json").read_text())
    desc["files"][derived.GRAPH_WEIGHTS] = {
        "size": 100,
        "sha256": derived.sha256_file(entry / derived.GRAPH_WEIGHTS),
    }
    (entry / "entry.json").write_text(json.dumps(desc))
    np.testing.assert_allclose(_session_output(source, tmp_path, pixels), want, atol=1e-6)
    again = derived.find(tmp_path, name, "34" * 32)
    assert again is not None and (again.path / derived.GRAPH_WEIGHTS).stat().st_size > 100


def test_publishing_twice_keeps_the_first_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    for content in (b"first", b"second"):
        with derived.new_entry(tmp_path, "k", "test", "ab" * 32) as folder:
            (folder / "x.bin").write_bytes(content)
    assert (tmp_path / "k" / "x.bin").read_bytes() == b"first"
    assert _entries(tmp_path) == ["k"] and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(RuntimeError), derived.new_entry(tmp_path, "j", "test", "ab" * 32) as f:
        (f / "x.bin").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert _entries(tmp_path) == ["k"] and len(list(tmp_path.iterdir())) == 1


def test_sweep_removes_only_stale_leftovers(tmp_path: Path) -> None:
    old = int(time.time()) - atomic.STALE_SECONDS - 60
    stale = [tmp_path / f".tmp-k-{old}-123-abcd1234", tmp_path / f".trash-k-{old}-123-ab12"]
    fresh = [tmp_path / f".tmp-k-{int(time.time())}-123-abcd1234", tmp_path / "k"]
    for p in stale + fresh:
        p.mkdir()
        (p / "f").write_text("x")
    atomic.sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in fresh)


def test_remove_and_clear_and_cache_info(tiny_model_home: Path, tmp_path, monkeypatch) -> None:
    from geoguess.store import install_model

    src = tiny_model_home / "models" / "tiny"
    monkeypatch.setenv("GEOGUESS_HOME", str(tmp_path / "home"))
    for name in ("one", "two"):
        install_model(str(src), name=name)
    photo = tmp_path / "p.jpg"
    from PIL import Image

    Image.new("RGB", (64, 48), (90, 120, 200)).save(photo)
    assert runner.invoke(app, ["-m", "one", "--json", str(photo)]).exit_code == 0
    assert runner.invoke(app, ["-m", "one", "-p", "fp32", "--json", str(photo)]).exit_code == 0
    info = json.loads(runner.invoke(app, ["models", "cache", "--json"]).stdout)
    assert len(info["entries"]) == 3  # int8 graph, fp32 graph, float32 gallery
    assert all(e["model_sets"] == ["one", "two"] for e in info["entries"])  # same files
    assert info["size_bytes"] == sum(e["size_bytes"] for e in info["entries"]) > 0
    # Removing one set keeps what the other set also uses.
    res = runner.invoke(app, ["models", "remove", "one", "--yes"])
    assert res.exit_code == 0 and "derived cache" not in res.stderr
    assert len(derived.entries()) == 3
    res = runner.invoke(app, ["models", "remove", "two", "--yes"])
    assert res.exit_code == 0 and "MB of derived cache" in res.stderr
    assert derived.entries() == []
    assert runner.invoke(app, ["models", "install", str(src), "--name", "one"]).exit_code == 0
    assert runner.invoke(app, ["-m", "one", "--json", str(photo)]).exit_code == 0
    assert derived.entries()
    (derived.cache_dir() / "old-layout-graph.onnx").write_text("x")  # an earlier version's
    res = runner.invoke(app, ["models", "cache", "clear"])
    assert res.exit_code == 0, res.output
    assert list(derived.cache_dir().iterdir()) == []


def test_verify_checks_the_derived_cache(
    tiny_home_copy: Path, photos_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOGUESS_CACHE_DIR", str(tmp_path / "empty-cache"))
    photo = str(photos_dir / "gps_DSCN0010.jpg")
    first = runner.invoke(app, ["--json", photo])
    assert first.exit_code == 0
    (graph,) = [e for e in derived.entries() if e.kind == "onnx-graph"]
    flip_byte(graph.path / derived.GRAPH_WEIGHTS, offset=1000)
    res = runner.invoke(app, ["models", "verify", "tiny"])
    assert res.exit_code == 0, res.output  # the set is fine; the cache repairs itself
    assert "derived cache entry damaged" in res.stderr and str(graph.path) in res.stderr
    assert "1 of 2 entries OK" in res.stderr
    assert not graph.path.exists()
    again = runner.invoke(app, ["--json", photo])
    assert again.exit_code == 0 and again.stdout == first.stdout
    assert graph.path.exists()  # rebuilt


def test_clear_removes_the_cache_where_earlier_versions_kept_it(
    geoguess_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = geoguess_home / "cache" / "derived"
    old.mkdir(parents=True)
    (old / f"{'ab' * 16}-float32.npy").write_bytes(b"x" * 100)
    monkeypatch.setenv("GEOGUESS_CACHE_DIR", str(tmp_path / "new"))
    res = runner.invoke(app, ["models", "cache", "clear"])
    assert res.exit_code == 0, res.output
    assert not old.exists()
