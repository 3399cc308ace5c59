"""Files derived from verified model files, kept so that later starts are fast.

Two kinds live here: ONNX Runtime's graph optimised for this CPU (skips the
optimisation passes at every start) and a gallery's embeddings widened to float32
(numpy widens 100K x 512 half floats in 0.3-0.6 s; a float32 file is memory-mapped
at once). Each file has a sidecar holding its sha256 and stat signature: it is
hashed once when written, trusted while its signature is unchanged, hashed again
otherwise, and ignored (then rebuilt) if the hash no longer matches. Files are
written under a temporary name and renamed into place, so a reader never sees a
half-written one. ``GEOGUESS_DERIVED_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from .manifest import file_signature, sha256_file
from .store import home


def cache_dir() -> Path | None:
    """``$GEOGUESS_HOME/cache/derived``, or None when GEOGUESS_DERIVED_CACHE=0."""
    if os.environ.get("GEOGUESS_DERIVED_CACHE", "1").lower() in {"0", "false", "no"}:
        return None
    return home() / "cache" / "derived"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def lookup(path: Path) -> Path | None:
    """``path`` if an earlier run published it and it is intact, else None."""
    sidecar = _sidecar(path)
    try:
        sha, _, sig = sidecar.read_text().strip().partition(" ")
        if sig and sig == file_signature(path):
            return path
        if sha and sha256_file(path) == sha:
            sidecar.write_text(f"{sha} {file_signature(path)}\n")
            return path
    except OSError:
        return None
    return None


def temporary(path: Path) -> Path:
    """Where to write ``path`` before :func:`publish` (unique to this process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def publish(tmp: Path, path: Path) -> None:
    """Move a finished ``tmp`` into place with its sidecar; a failure leaves no cache."""
    try:
        sha = sha256_file(tmp)
        os.replace(tmp, path)
        _sidecar(path).write_text(f"{sha} {file_signature(path)}\n")
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def float32_embeddings(embeddings: np.ndarray, source_sha256: str) -> np.ndarray:
    """``embeddings`` as a C-contiguous float32 array, memory-mapped from the cache.

    The first call widens and saves them; later calls (in any process) map the saved
    file, which also lets processes share its pages.
    """
    if embeddings.dtype == np.float32 and embeddings.flags.c_contiguous:
        return embeddings
    root = cache_dir()
    path = None if root is None else root / f"{source_sha256[:32]}-float32.npy"
    if path is not None and lookup(path) is not None:
        with contextlib.suppress(OSError, ValueError):
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            if mapped.shape == embeddings.shape and mapped.dtype == np.float32:
                return mapped
    wide = np.ascontiguousarray(embeddings, dtype=np.float32)
    if path is not None:
        with contextlib.suppress(OSError):  # no cache this time; the answer is the same
            _save(wide, path)
    return wide


def _save(array: np.ndarray, path: Path) -> None:
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    publish(tmp, path)
