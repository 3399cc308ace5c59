"""Reading PyTorch ``.pth`` files (the zip format of torch >= 1.6) into numpy, without torch.

A ``.pth`` file is a pickle plus one raw record per storage. Unpickling runs whatever
callables the pickle names, so the unpickler here knows only a handful of names, each
mapped to a small function of ours that builds numpy arrays; any other name is refused
before it is looked up, let alone called.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends; deliberately not callable."""

    name: str
    dtype: str  # numpy dtype of one element as stored on disk


_STORAGE_TYPES = {
    t.name: t
    for t in (
        _StorageType("FloatStorage", "f4"),
        _StorageType("HalfStorage", "f2"),
        _StorageType("DoubleStorage", "f8"),
        _StorageType("BFloat16Storage", "u2"),  # widened to float32 on load
        _StorageType("IntStorage", "i4"),
        _StorageType("LongStorage", "i8"),
        _StorageType("ShortStorage", "i2"),
        _StorageType("CharStorage", "i1"),
        _StorageType("ByteStorage", "u1"),
        _StorageType("BoolStorage", "?"),
        # torch.save of a bare UntypedStorage names the class itself; its elements are bytes.
        _StorageType("UntypedStorage", "u1"),
    )
}


@dataclass(frozen=True)
class _Storage:
    """One storage record: a flat array that tensors view with their own offset and strides."""

    key: str
    data: np.ndarray


class _Refused(Exception):
    pass


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any
) -> np.ndarray:
    # requires_grad, backward hooks and metadata mean nothing to a numpy array.
    if not isinstance(storage, _Storage):
        raise _Refused("a tensor is rebuilt from something that is not a storage record")
    if not (_ints(size) and _ints(stride) and len(size) == len(stride)):
        raise _Refused(f"tensor has a malformed size {size!r} or stride {stride!r}")
    if not isinstance(offset, int) or offset < 0 or min((*size, *stride), default=0) < 0:
        raise _Refused("tensor has a negative offset, size or stride")
    flat = storage.data
    if math.prod(size) == 0:
        return np.empty(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    # as_strided reads raw memory: a view reaching past its record must never be built.
    if last >= flat.size:
        raise _Refused(
            f"a tensor reaches element {last} of storage {storage.key}, "
            f"which holds only {flat.size}"
        )
    itemsize = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return view.copy()  # own contiguous memory, so no array aliases another's storage


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    # A Parameter is its tensor plus requires_grad/hooks (and, with_state, Python attributes).
    if not isinstance(data, np.ndarray):
        raise _Refused("a parameter wraps something that is not a tensor")
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch", "UntypedStorage"): _STORAGE_TYPES["UntypedStorage"],
    ("torch.storage", "UntypedStorage"): _STORAGE_TYPES["UntypedStorage"],
    **{("torch", name): t for name, t in _STORAGE_TYPES.items()},
}


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, label: str, records: _Records) -> None:
        super().__init__(io.BytesIO(data))
        self._label = label
        self._records = records

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ExportError(
                f"{self._label}: refuses to load: the pickle asks for {module}.{name}, "
                "which is not part of a tensor"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            raise _Refused(f"unknown persistent record {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        return self._records.storage(key, storage_type, numel)


class _Records:
    """The archive's ``data/<key>`` records, each decoded once (views share storages)."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        self._zf = zf
        self._prefix = prefix
        self._byteorder = "<" if byteorder == "little" else ">"
        self._cache: dict[str, _Storage] = {}

    def storage(self, key: str, storage_type: _StorageType, numel: int) -> _Storage:
        if key in self._cache:
            return self._cache[key]
        name = f"{self._prefix}data/{key}"
        try:
            raw = self._zf.read(name)
        except KeyError:
            raise _Refused(f"storage record {name} is missing") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise _Refused(f"storage record {name} is damaged ({exc})") from None
        dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
        if numel < 0 or len(raw) < numel * dtype.itemsize:
            raise _Refused(
                f"storage record {name} holds {len(raw)} bytes, "
                f"not the {numel * dtype.itemsize} its tensor needs"
            )
        flat = np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))
        if storage_type.name == "BFloat16Storage":
            # bfloat16 is the top half of a float32: shift it back into place.
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        self._cache[key] = _Storage(key, flat)
        return self._cache[key]


def _plain(obj: Any) -> Any:
    """OrderedDicts (state dicts, with their ``_metadata``) become plain dicts, all the way down."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def load_pth(path: Path | str, data: bytes | None = None) -> Any:
    """The tensors of a torch ``.pth`` file as numpy arrays (dicts stay dicts).

    ``path`` names the file in messages; ``data``, when given, is its content (a member
    read from a wheel), so nothing is read from ``path``.
    """
    label = str(path)
    try:
        if data is None:
            data = Path(path).read_bytes()
    except OSError as exc:
        raise ExportError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if data[:4] != b"PK\x03\x04":
        if data[:2] == b"\x80\x02":
            raise ExportError(
                f"{label}: a legacy (pre-zip) PyTorch file, which is not supported; "
                "re-save it with torch.save from PyTorch 1.6 or later"
            )
        raise ExportError(f"{label}: not a PyTorch file (not a zip archive)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            pickles = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ExportError(f"{label}: not a PyTorch file (no <name>/data.pkl inside)")
            prefix = pickles[0][: -len("data.pkl")]
            try:
                byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
            except KeyError:
                byteorder = "little"  # files from torch before 1.10 carry no byteorder record
            if byteorder not in ("little", "big"):
                raise ExportError(f"{label}: unknown byteorder {byteorder[:20]!r}")
            unpickler = _TensorUnpickler(
                zf.read(pickles[0]), label, _Records(zf, prefix, byteorder)
            )
            try:
                return _plain(unpickler.load())
            except ExportError:
                raise
            except _Refused as exc:
                raise ExportError(f"{label}: {exc}") from None
            except Exception as exc:
                # A hostile or damaged pickle can fail in any way; all of them mean the same.
                raise ExportError(f"{label}: data.pkl is not a tensor pickle ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ExportError(f"{label}: damaged or truncated archive ({exc})") from None
