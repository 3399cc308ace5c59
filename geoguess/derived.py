"""Files derived from verified model files, kept so that later starts are fast.

Two kinds live here: ONNX Runtime's graph optimised for this CPU, with its weights in
a file beside it (skips the optimisation passes at every start), and a gallery's
embeddings widened to float32 (a float32 file is memory-mapped at once, and its pages
are shared by every process that maps it).

Each entry is a folder, ``<cache>/derived/<key>/``, holding its files and
``entry.json`` (their sizes and sha256, and the sha256 of the model file they were
derived from). An entry is written in a private temporary folder beside it and
published with one rename once every file is complete and hashed
(:mod:`geoguess.atomic`), so any number of processes may start at once on an empty
cache: a reader sees a whole entry or none, and of several writers one wins and the
others use its entry. Files are checked like model files (:func:`geoguess.store.intact`)
and an entry found damaged is renamed aside (never deleted while another process may
be reading it) and rebuilt; a cache that cannot be read or written only costs time.
``GEOGUESS_DERIVED_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic, environment
from .manifest import sha256_file
from .store import HASH_EVERY_LOAD_BYTES, InstalledModel, cache_root, home, intact, remember

ENTRY_FILE = "entry.json"
ENTRY_FORMAT = 1
#: The optimised graph in a graph entry, and the external-data file holding its weights.
GRAPH_NAME = "model.onnx"
GRAPH_WEIGHTS = GRAPH_NAME + ".data"
_FLOAT32_NAME = "embeddings.npy"


def cache_dir() -> Path | None:
    """``<cache root>/derived`` (see :func:`geoguess.store.cache_root`), or None when
    GEOGUESS_DERIVED_CACHE=0."""
    if not environment.flag(environment.DERIVED_CACHE, True):
        return None
    return cache_root() / "derived"


def _legacy_dir() -> Path | None:
    """Where earlier versions kept the cache, when that is not where it is now."""
    old = home() / "cache" / "derived"
    now = cache_dir()
    return old if now is not None and old != now and old.is_dir() else None


def graph_key(source_sha256: str, machine_tag: str) -> str:
    """Entry name of an optimised graph: it depends on the graph, the ORT version and CPU."""
    return f"ort-{source_sha256[:24]}-{machine_tag}"


def _float32_key(source_sha256: str) -> str:
    return f"float32-{source_sha256[:32]}"


# --- entries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A published cache entry, as found on disk."""

    path: Path
    kind: str
    source_sha256: str
    files: dict[str, dict[str, Any]]
    inode: int

    @property
    def size_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())


def _read_entry(folder: Path, inode: int | None = None) -> Entry:
    """The entry in ``folder``; FileNotFoundError when it is gone, ValueError when its
    description is unreadable (a damaged entry)."""
    inode = folder.stat().st_ino if inode is None else inode
    try:
        raw = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
        if raw["format"] != ENTRY_FORMAT:
            raise ValueError(f"entry format {raw['format']!r}")
        files = {
            str(n): {"size": int(f["size"]), "sha256": str(f["sha256"])}
            for n, f in raw["files"].items()
        }
        entry = Entry(folder, str(raw["kind"]), str(raw["source_sha256"]), files, inode)
    except FileNotFoundError:
        if not folder.exists():
            raise
        raise ValueError(f"{ENTRY_FILE} is missing") from None
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{ENTRY_FILE} is unreadable ({exc})") from exc
    if not files or any(Path(n).name != n or n == ENTRY_FILE for n in files):
        raise ValueError(f"{ENTRY_FILE} lists no files or a bad name")
    return entry


def _problem(entry: Entry, *, full: bool) -> str | None:
    """What is wrong with an entry's files, or None. ``full``: hash every file, as
    ``models verify`` does, instead of trusting large ones by their stat signature."""
    for name, want in entry.files.items():
        path = entry.path / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if not entry.path.exists():
                raise  # the whole entry went (moved aside by another process): not damage
            return f"{name} is missing"
        if size != want["size"]:
            return f"{name} has {size} bytes, not {want['size']}"
        ok = sha256_file(path) == want["sha256"] if full else intact(path, want["sha256"])
        if not ok:
            return f"{name}: sha256 does not match {ENTRY_FILE}"
    return None


def find(root: Path, key: str, source_sha256: str) -> Entry | None:
    """The intact entry ``key`` derived from ``source_sha256``, or None.

    A damaged entry is renamed aside so that it can be rebuilt; a missing or unreadable
    cache is simply a miss.
    """
    folder = root / key
    try:
        inode = folder.stat().st_ino
        entry = _read_entry(folder, inode)
        problem = None if entry.source_sha256 == source_sha256 else "made from another file"
        problem = problem or _problem(entry, full=False)
    except FileNotFoundError:
        return None  # never built, or moved aside by another process a moment ago
    except ValueError:
        problem = "damaged"
    except OSError:
        return None
    if problem is None:
        return entry
    set_aside(folder, inode)
    return None


def set_aside(folder: Path, inode: int | None = None) -> None:
    """Rename a damaged entry aside (swept later), unless another process already
    replaced it (``inode``: the folder that was found damaged)."""
    with contextlib.suppress(OSError):
        atomic.move_aside(folder, inode=inode)


@contextlib.contextmanager
def new_entry(root: Path | None, key: str, kind: str, source_sha256: str) -> Iterator[Path | None]:
    """A private folder to write entry ``key`` into; published when the block ends
    without an error and the folder holds files, discarded otherwise.

    Yields None when there is no cache or it cannot be written: the caller then does
    its work without one. If another process publishes the same entry first, this one
    is dropped and theirs stands (both were made from the same checked file).
    """
    with contextlib.ExitStack() as stack:
        tmp = None
        if root is not None:
            with contextlib.suppress(OSError):
                tmp = stack.enter_context(atomic.private_folder(root, key))
        yield tmp
        if tmp is not None:
            with contextlib.suppress(OSError):
                _publish(tmp, root / key, kind, source_sha256)


def _publish(tmp: Path, target: Path, kind: str, source_sha256: str) -> None:
    names = sorted(p.name for p in tmp.iterdir() if p.is_file())
    if not names:
        return
    files = {n: {"size": (tmp / n).stat().st_size, "sha256": sha256_file(tmp / n)} for n in names}
    description = {"format": ENTRY_FORMAT, "kind": kind, "source_sha256": source_sha256}
    (tmp / ENTRY_FILE).write_text(json.dumps({**description, "files": files}, indent=1))
    if atomic.publish_folder(tmp, target):
        for n, f in files.items():
            if f["size"] > HASH_EVERY_LOAD_BYTES:  # just hashed: the first load need not
                remember(target / n, f["sha256"])
    sweep(target.parent)


def sweep(root: Path) -> None:
    """Remove what crashed writers and earlier versions left in ``root`` (after some hours)."""
    atomic.sweep(root)
    with contextlib.suppress(OSError):
        for child in root.iterdir():  # loose files: the layout before entries were folders
            if child.is_file() and atomic.age_seconds(child) > atomic.STALE_SECONDS:
                child.unlink()
    legacy = _legacy_dir() if root == cache_dir() else None
    with contextlib.suppress(OSError):
        if legacy is not None and atomic.age_seconds(legacy) > atomic.STALE_SECONDS:
            atomic.discard(legacy)


# --- what is in the cache, and for which model set -----------------------------------------


def entries() -> list[Entry]:
    """Every published entry (damaged ones too, as far as they can be read)."""
    root = cache_dir()
    out = []
    with contextlib.suppress(OSError):
        for child in sorted(root.iterdir()) if root is not None else []:
            if child.name.startswith(".") or not child.is_dir():
                continue
            with contextlib.suppress(OSError, ValueError):
                out.append(_read_entry(child))
    return out


def sources_of(model: InstalledModel) -> set[str]:
    """The sha256 that the cache keys a set's entries on (encoders, galleries)."""
    manifest = model.manifest
    shas = {model.content_sha256(rel) for rel in manifest.image_encoders.values()}
    for gallery in manifest.galleries.values():
        emb = manifest.files.get(gallery.embeddings)
        if emb is not None:
            shas.add(emb.sha256)
    return shas


def entries_of(model: InstalledModel) -> list[Entry]:
    shas = sources_of(model)
    return [e for e in entries() if e.source_sha256 in shas]


def verify_entries(model: InstalledModel) -> tuple[int, list[str]]:
    """Hash every file of a set's cache entries; damaged ones are moved aside (rebuilt
    at their next use). Returns how many entries were checked and one line per damaged one."""
    checked, problems = 0, []
    root = cache_dir()
    for entry in entries_of(model):
        checked += 1
        try:
            problem = _problem(entry, full=True)
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        if problem:
            set_aside(entry.path, entry.inode)
            problems.append(
                f"{entry.path}: derived cache entry damaged ({problem}); moved aside, it is "
                "rebuilt at its next use"
            )
    # Folders that no longer describe themselves are damaged too, whoever made them.
    if root is not None:
        with contextlib.suppress(OSError):
            for child in root.iterdir():
                if child.is_dir() and not child.name.startswith("."):
                    try:
                        _read_entry(child)
                    except ValueError as exc:
                        set_aside(child)
                        problems.append(
                            f"{child}: derived cache entry damaged ({exc}); moved aside"
                        )
                    except OSError:
                        pass
    return checked, problems


def size_bytes(items: list[Entry] | None = None) -> int:
    return sum(e.size_bytes for e in (entries() if items is None else items))


def remove_entries_of(model: InstalledModel, keep: list[InstalledModel]) -> int:
    """Delete a set's entries, except those that sets in ``keep`` use too; bytes freed.

    A process that is reading one goes on (its files stay open or mapped), and one
    about to open it builds it afresh.
    """
    shared = set().union(*(sources_of(m) for m in keep)) if keep else set()
    freed = 0
    for entry in entries_of(model):
        if entry.source_sha256 not in shared:
            freed += entry.size_bytes
            atomic.discard(entry.path)
    return freed


def clear() -> int:
    """Delete every entry, what earlier versions left, and stale temporary folders;
    bytes freed. Writers still at work keep their temporary folders."""
    freed = size_bytes()
    legacy = _legacy_dir()
    if legacy is not None:
        atomic.discard(legacy)
    root = cache_dir()
    if root is None or not root.is_dir():
        return freed
    with contextlib.suppress(OSError):
        for child in root.iterdir():
            if not child.name.startswith(atomic.TMP_PREFIX):
                atomic.discard(child)
    atomic.sweep(root)
    return freed


# --- the float32 gallery ------------------------------------------------------------------


def float32_embeddings(
    embeddings: np.ndarray | Callable[[], np.ndarray], source_sha256: str
) -> np.ndarray:
    """A gallery's embeddings as a C-contiguous float32 array, memory-mapped from the cache.

    ``embeddings``: the (N, D) array, or a function that loads it (called only when the
    cache has no intact copy, so a cached start never reads the half-float file). The
    first call widens and saves them; later calls (in any process) map the saved file.
    """
    root = cache_dir()
    key = _float32_key(source_sha256)
    if root is not None and (entry := find(root, key, source_sha256)) is not None:
        with contextlib.suppress(OSError, ValueError):
            mapped = np.load(entry.path / _FLOAT32_NAME, mmap_mode="r", allow_pickle=False)
            if mapped.dtype == np.float32 and mapped.ndim == 2:
                return mapped
    source = embeddings() if callable(embeddings) else embeddings
    if source.dtype == np.float32 and source.flags.c_contiguous:
        return source
    wide = np.ascontiguousarray(source, dtype=np.float32)
    # A full disk or an unwritable cache: no cache this time; the answer is the same.
    with contextlib.suppress(OSError), new_entry(root, key, "float32-gallery", source_sha256) as f:
        if f is not None:
            with open(f / _FLOAT32_NAME, "wb") as out:
                np.save(out, wide, allow_pickle=False)
    return wide
