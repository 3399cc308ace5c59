"""Files derived from verified model files, kept so that later starts are fast.

Two kinds live here: ONNX Runtime's graph optimised for this CPU (skips the
optimisation passes at every start) and a gallery's embeddings widened to float32
(numpy widens 100K x 512 half floats in 0.3-0.6 s; a float32 file is memory-mapped
at once). Each entry has a sidecar holding the sha256 of its files; they are checked like
model files (hashed once, then trusted while their size, mtime and inode are
unchanged) and ignored, then rebuilt, if a hash no longer matches. Files are
written under a temporary name and renamed into place, so a reader never sees a
half-written one. ``GEOGUESS_DERIVED_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from .manifest import sha256_file
from .store import home, intact, remember


def cache_dir() -> Path | None:
    """``$GEOGUESS_HOME/cache/derived``, or None when GEOGUESS_DERIVED_CACHE=0."""
    if os.environ.get("GEOGUESS_DERIVED_CACHE", "1").lower() in {"0", "false", "no"}:
        return None
    return home() / "cache" / "derived"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def lookup(path: Path) -> Path | None:
    """``path`` if an earlier run published it, and every file that goes with it, intact.

    The sidecar is JSON, ``{"files": {name: sha256}}``, for ``path`` and its companions
    (an ONNX graph's external weights) in the same folder; each is checked the way
    model files are (:func:`geoguess.store.intact`).
    """
    try:
        members = json.loads(_sidecar(path).read_text())["files"]
        if path.name not in members:
            return None
        for name, sha in members.items():
            if not intact(path.with_name(name), sha):
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return path


def temporary(path: Path) -> Path:
    """Where to write ``path`` before :func:`publish` (unique to this process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def publish(tmp: Path, path: Path, companions: dict[Path, Path] | None = None) -> None:
    """Move a finished ``tmp`` (and ``companions``, temporary -> final path, in the same
    folder as ``path``) into place, then write the sidecar that makes them count.

    Companions move first and the sidecar last, so a reader either finds the whole
    set or no valid entry. A failure leaves no cache entry behind.
    """
    moves = {**(companions or {}), tmp: path}
    try:
        members = {final.name: sha256_file(src) for src, final in moves.items()}
        _sidecar(path).unlink(missing_ok=True)
        for src, final in moves.items():
            os.replace(src, final)
            remember(final, members[final.name])
        _sidecar(path).write_text(json.dumps({"files": members}))
    except OSError:
        for src in moves:
            with contextlib.suppress(OSError):
                src.unlink()


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
