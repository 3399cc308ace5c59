"""The torch-free .pth reader against torch.load itself, and against hostile files."""

from __future__ import annotations

import importlib.util
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from geoguess.builder.pth import load_pth
from geoguess.errors import ExportError

torch = pytest.importorskip("torch")

WEIGHTS = (
    "location_encoder_weights.pth",
    "image_encoder_mlp_weights.pth",
    "logit_scale_weights.pth",
)


@pytest.fixture(scope="module")
def geoclip_weights_dir() -> Path:
    spec = importlib.util.find_spec("geoclip")  # locates the package without importing torch
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs: pip install --no-deps geoclip==1.3.0")
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "weights"


def assert_same(ours, theirs) -> None:
    """Same structure, and every tensor with the same dtype, shape and exact values."""
    if isinstance(theirs, dict):
        assert type(ours) is dict and list(ours) == list(theirs)
        for key in theirs:
            assert_same(ours[key], theirs[key])
        return
    assert isinstance(theirs, torch.Tensor)
    ref = theirs.detach()
    if ref.dtype == torch.bfloat16:
        ref = ref.float()  # the reader widens bfloat16 to float32
    ref = ref.numpy()
    assert isinstance(ours, np.ndarray)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert ours.dtype.isnative
    np.testing.assert_array_equal(ours, ref, strict=True)


@pytest.mark.parametrize("name", WEIGHTS)
def test_geoclip_release_files_equal_torch_load(geoclip_weights_dir: Path, name: str) -> None:
    path = geoclip_weights_dir / name
    assert_same(load_pth(path), torch.load(path, map_location="cpu", weights_only=True))


def test_load_from_bytes_names_the_given_label(geoclip_weights_dir: Path) -> None:
    data = (geoclip_weights_dir / "logit_scale_weights.pth").read_bytes()
    assert float(load_pth("wheel.whl/logit.pth", data)) == pytest.approx(3.6810348)
    with pytest.raises(ExportError, match=r"^wheel\.whl/x\.pth: "):
        load_pth("wheel.whl/x.pth", data[: len(data) // 2])


def saved(tmp_path: Path, obj, name: str = "t.pth", **kwargs) -> Path:
    path = tmp_path / name
    torch.save(obj, path, **kwargs)
    return path


def test_views_dtypes_parameters_and_nesting_equal_torch_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = torch.randn(6, 7)
    obj = {
        "transposed": base.t(),  # strides (1, 7)
        "slice": base[2:5, 3:],  # offset into a shared storage
        "column": base[:, 4],
        "expanded": torch.randn(3, 1).expand(3, 4),  # stride 0
        "base": base,
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
        "fp16": torch.randn(5, 3).half(),
        "bf16": torch.randn(4, 4).bfloat16(),
        "fp64": torch.randn(3).double(),
        "int64": torch.arange(-5, 7).reshape(3, 4),
        "int32": torch.arange(10, dtype=torch.int32),
        "int16": torch.arange(-3, 3, dtype=torch.int16),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "parameter": torch.nn.Parameter(torch.randn(2, 3)),
        "nested": {"a": {"b": torch.ones(2)}, "c": torch.arange(3)[1:]},
    }
    path = saved(tmp_path, obj)
    assert_same(load_pth(path), torch.load(path, weights_only=True))


def test_bare_tensor_parameter_and_state_dict(tmp_path: Path) -> None:
    bare = saved(tmp_path, torch.randn(3, 4)[:, 1:], "bare.pth")
    assert_same(load_pth(bare), torch.load(bare, weights_only=True))
    param = saved(tmp_path, torch.nn.Parameter(torch.randn(5)), "param.pth")
    assert_same(load_pth(param), torch.load(param, weights_only=True))
    # A module's state dict is an OrderedDict with _metadata; it comes back a plain dict.
    state = saved(tmp_path, torch.nn.Sequential(torch.nn.Linear(3, 2)).state_dict(), "sd.pth")
    ours = load_pth(state)
    assert type(ours) is dict and list(ours) == ["0.weight", "0.bias"]
    assert_same(ours, dict(torch.load(state, weights_only=True)))


def rewrite(src: Path, dst: Path, change) -> Path:
    """Copy a .pth archive member by member; change(name, data) -> bytes or None to drop."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def test_byteorder_record_is_honoured(tmp_path: Path) -> None:
    ref = {"f": torch.randn(4, 3), "i": torch.arange(6, dtype=torch.int64), "b": torch.ones(2)}
    src = saved(tmp_path, ref)
    itemsize = {"0": 4, "1": 8, "2": 4}

    def to_big(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            key = name.rsplit("/", 1)[1]
            return np.frombuffer(data, f"<i{itemsize[key]}").astype(f">i{itemsize[key]}").tobytes()
        return data

    big = load_pth(rewrite(src, tmp_path / "big.pth", to_big))
    assert_same(big, ref)
    # Files from torch before 1.10 have no byteorder record: little-endian.
    old = rewrite(src, tmp_path / "old.pth", lambda n, d: None if n.endswith("byteorder") else d)
    assert_same(load_pth(old), ref)


def zip_pickle(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")
    return path


def global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 opcodes for ``module.name(arg)``: GLOBAL, MARK, string, TUPLE, REDUCE."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


class RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


@pytest.mark.parametrize(
    ("module", "name"),
    [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("subprocess", "Popen")],
)
def test_pickle_asking_for_other_globals_is_refused(tmp_path: Path, module: str, name: str) -> None:
    sentinel = tmp_path / "pwned"
    arg = f"open({str(sentinel)!r}, 'w').close()" if name == "eval" else f"touch {sentinel}"
    evil = zip_pickle(tmp_path / "evil.pth", global_call(module, name, arg))
    with pytest.raises(ExportError) as err:
        load_pth(evil)
    assert str(err.value) == (
        f"{evil}: refuses to load: the pickle asks for {module}.{name}, "
        "which is not part of a tensor"
    )
    assert not sentinel.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_reduce_payload_written_by_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps({"w": RunsShell(f"touch {sentinel}")}, protocol=protocol)
    evil = zip_pickle(tmp_path / "evil.pth", payload)
    with pytest.raises(ExportError, match=r"refuses to load: the pickle asks for \w+\.system"):
        load_pth(evil)
    assert not sentinel.exists()


def test_allowed_names_cannot_be_abused(tmp_path: Path) -> None:
    # Calling a storage type, or rebuilding a tensor from a non-storage, is not a tensor.
    calls_storage = zip_pickle(tmp_path / "a.pth", b"ctorch\nFloatStorage\n(I10\ntR.")
    with pytest.raises(ExportError, match="not a tensor pickle"):
        load_pth(calls_storage)
    fake = b"ctorch._utils\n_rebuild_tensor_v2\n((lI0\n(I1\nt(I1\ntI00\ntR."
    with pytest.raises(ExportError, match="not a storage record"):
        load_pth(zip_pickle(tmp_path / "b.pth", fake))


def test_strides_past_the_storage_are_refused(tmp_path: Path) -> None:
    src = saved(tmp_path, torch.arange(4, dtype=torch.float32))
    # Shrink the record: the tensor would read past it, which as_strided must never do.
    short = rewrite(src, tmp_path / "short.pth", lambda n, d: d[:8] if "/data/" in n else d)
    with pytest.raises(ExportError, match=r"data/0 holds 8 bytes, not the 16"):
        load_pth(short)


def refused(path: Path, pattern: str) -> None:
    with pytest.raises(ExportError, match=pattern) as err:
        load_pth(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_corrupt_files_are_refused_in_plain_words(tmp_path: Path) -> None:
    src = saved(tmp_path, {"w": torch.randn(8, 8)})
    data = src.read_bytes()

    legacy = saved(tmp_path, torch.randn(2), "legacy.pth", _use_new_zipfile_serialization=False)
    refused(legacy, r"legacy.pth: a legacy \(pre-zip\) PyTorch file")

    text = tmp_path / "text.pth"
    text.write_text("hello")
    refused(text, r"text.pth: not a PyTorch file")

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    refused(truncated, r"truncated.pth: damaged or truncated archive")

    no_pickle = rewrite(src, tmp_path / "nopkl.pth", lambda n, d: None if n.endswith(".pkl") else d)
    refused(no_pickle, r"nopkl.pth: not a PyTorch file \(no <name>/data.pkl")

    no_record = rewrite(src, tmp_path / "norec.pth", lambda n, d: None if "/data/" in n else d)
    refused(no_record, r"norec.pth: storage record t/data/0 is missing")

    bad_pickle = rewrite(
        src, tmp_path / "badpkl.pth", lambda n, d: d[:-10] if n.endswith(".pkl") else d
    )
    refused(bad_pickle, r"badpkl.pth: data.pkl is not a tensor pickle")

    refused(tmp_path / "missing.pth", r"missing.pth: cannot read")

    # A flipped byte inside a stored record fails the zip's CRC check.
    flipped = bytearray(data)
    at = data.index(b"t/data/0") + 100
    flipped[at] ^= 0xFF
    crc = tmp_path / "crc.pth"
    crc.write_bytes(bytes(flipped))
    refused(crc, r"crc.pth: storage record t/data/0 is damaged")
