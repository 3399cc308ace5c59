"""Locating every photo in a folder, with bounded memory and an overlapped pipeline.

Three stages run at once: decoder threads prepare photos (decode, preprocess, EXIF;
Pillow releases the GIL), the calling thread runs the image encoder on batches (ONNX
Runtime releases it too), and finisher threads search the gallery and name the
places (numpy releases it). Only a few batches of decoded pixels are ever in flight,
so memory does not grow with the size of the folder. Results come back in the order
of the input, one at a time, so a caller can write each row as soon as it is ready.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .errors import UsageError, os_reason
from .images import SUPPORTED_SUFFIXES
from .reporting import Reporter

if TYPE_CHECKING:
    import numpy as np

    from .llm import Refiner
    from .locate import LocateResult, Prepared
    from .model import GeoModel
    from .search import SearchResult

__all__ = [
    "ScanEngine",
    "ScanSummary",
    "check_folder",
    "default_workers",
    "embedded_batches",
    "list_images",
    "locate_files",
    "scan_folder",
]

#: Decoded batches kept ready ahead of the encoder. Two keep it busy while the
#: decoders refill; more would only hold more pixels in memory.
PREFETCH_BATCHES = 2


def default_workers() -> int:
    """Decoder threads: a few are enough to keep one encoder fed."""
    return max(1, min(4, os.cpu_count() or 1))


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C reached a scan outside its ``stop`` event; ``summary`` says what had been
    done by then (every result up to it was already handed to ``on_result``)."""

    def __init__(self, summary: ScanSummary) -> None:
        super().__init__()
        self.summary = summary


@dataclass
class ScanSummary:
    """What a scan did. ``interrupted`` is set when ``stop`` ended it early."""

    found: int = 0  # image files under the folder that match the filters
    skipped: int = 0  # of those, already done (in ``skip``)
    located: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def processed(self) -> int:
        return self.located + self.failed

    @property
    def files_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def remaining(self) -> int:
        return self.found - self.skipped - self.processed

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "found": self.found,
            "skipped": self.skipped,
            "located": self.located,
            "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3),
            "files_per_s": round(self.files_per_s, 2),
            "interrupted": self.interrupted,
        }


@runtime_checkable
class ScanEngine(Protocol):
    """What locates a scan's photos somewhere other than this process
    (:class:`geoguess.ray_scan.RayScan`), for :func:`scan_folder` in place of a model."""

    def locate_stream(
        self,
        sources: Sequence[Path],
        *,
        top_k: int,
        batch_size: int | None,
        workers: int | None,
        refiner: Refiner | None = None,
    ) -> Iterator[LocateResult]:
        """One result per source, in any order; closing it stops the work. With
        ``refiner``, each result is refined too (``result.llm``, where the engine
        works) and its usage added to ``refiner.usage``."""
        ...


# --- listing -------------------------------------------------------------------------


def check_folder(root: str | os.PathLike[str]) -> Path:
    """``root`` as a Path; UsageError naming it when it is not an existing folder."""
    path = Path(root)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise UsageError(f"{path}: {what}")
    return path


def list_images(
    root: str | os.PathLike[str], *, recursive: bool = True, glob: str | None = None
) -> list[Path]:
    """Image files under ``root``, sorted by path (component by component).

    Files are picked by suffix (:data:`~geoguess.images.SUPPORTED_SUFFIXES`, any
    case) and, when given, by ``glob`` matched case-insensitively against the file
    name. Hidden files and folders (name starting with '.') are skipped. Symbolic
    links to folders are followed, each real folder at most once, so link loops end.
    A broken link with an image suffix is listed, so that it gets an error row rather
    than vanishing silently; so is a subfolder that cannot be listed (its photos are
    unknown, and the scan must say so). Raises UsageError when ``root`` is not a
    folder or cannot be listed.
    """
    root_path = check_folder(root)
    pattern = glob.lower() if glob else None
    seen: set[tuple[int, int]] = set()
    out: list[Path] = []
    # A stack of folder listings rather than recursion: no depth limit.
    stack: list[Iterator[os.DirEntry[str]]] = []

    def enter(folder: str | Path) -> None:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                stack.append(iter(sorted(it, key=lambda e: e.name)))
        except OSError as exc:
            if folder is root_path:
                raise UsageError(f"{root_path}: cannot list folder ({os_reason(exc)})") from None
            # Listed itself: it gets an error row, the rest of the scan goes on.
            out.append(Path(folder))

    enter(root_path)
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()  # follows links
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                enter(entry.path)
            continue
        name = entry.name.lower()
        if os.path.splitext(name)[1] not in SUPPORTED_SUFFIXES:
            continue
        if pattern and not fnmatch.fnmatchcase(name, pattern):
            continue
        out.append(Path(entry.path))
    return out


def _done_key(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _is_done(path: Path, skip: Collection[str], skip_abs: set[str]) -> bool:
    text = str(path)
    return text in skip or _done_key(text) in skip_abs


# --- the pipeline ---------------------------------------------------------------------


def _prepare_safely(geo: GeoModel, source: str) -> Prepared:
    from .locate import Prepared, prepare

    if os.path.isdir(source):  # list_images lists a folder only when it cannot list it
        try:
            os.scandir(source).close()
        except OSError as exc:
            problem = f"cannot list folder ({os_reason(exc)}); photos in it were not scanned"
            return Prepared(source, None, None, f"{source}: {problem}")
    try:
        return prepare(geo, source, name=source)
    except Exception as exc:  # one odd file must not end a scan of thousands
        return Prepared(source, None, None, f"unexpected error: {type(exc).__name__}: {exc}")


def _finish_safely(
    geo: GeoModel,
    prepared: Prepared,
    embedding: np.ndarray | None,
    top_k: int,
    searched: Future[list[SearchResult]] | None,
    row: int | None,
) -> LocateResult:
    from .locate import LocateResult, finish

    try:
        found = None if searched is None or row is None else searched.result()[row]
        return finish(geo, prepared, embedding, top_k=top_k, found=found)
    except Exception as exc:
        error = f"unexpected error: {type(exc).__name__}: {exc}"
        return LocateResult(prepared.name, metadata=prepared.metadata, error=error)


def _search_padded(
    geo: GeoModel, embeddings: list[np.ndarray], top_k: int, rows: int
) -> list[SearchResult]:
    """``geo.search`` of these embeddings, always as a ``rows``-row matrix.

    BLAS picks its kernel by the shape of the product (one row goes to a matrix-vector
    kernel), so a photo's scores differed in their last bits with the number of photos
    searched with it, and a resumed scan, whose batches fall elsewhere, wrote other
    digits than an uninterrupted one. Padding to one shape (with copies of a real row,
    whose results are dropped) makes each photo's row independent of its batch-mates.
    """
    import numpy as np

    stacked = np.stack(embeddings)
    if len(stacked) < rows:
        pad = np.repeat(stacked[:1], rows - len(stacked), axis=0)
        stacked = np.concatenate([stacked, pad])
    return geo.search(stacked, top_k)[: len(embeddings)]


def embedded_batches(
    geo: GeoModel,
    sources: Iterable[str | os.PathLike[str]],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Iterator[list[tuple[Prepared, np.ndarray | None]]]:
    """Prepare photos in threads and encode them in batches, in input order.

    Yields one list per batch of ``(prepared, embedding)`` pairs; the embedding is
    None for a photo that could not be decoded (its ``prepared.error`` says why).
    The pixels are dropped from ``prepared`` once encoded. At most
    ``(1 + PREFETCH_BATCHES) * batch_size`` photos are decoded and waiting at any
    time. Closing the generator early cancels the decodes not yet started.
    """
    import numpy as np

    batch_size = batch_size or geo.default_batch_size
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    workers = workers or default_workers()
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    window = batch_size * (1 + PREFETCH_BATCHES)
    names = (os.fspath(s) for s in sources)
    pending: deque[Future[Prepared]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="geoguess-decode")

    def refill() -> None:
        while len(pending) < window:
            name = next(names, None)
            if name is None:
                return
            pending.append(pool.submit(_prepare_safely, geo, name))

    try:
        refill()
        while pending:
            batch = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
            refill()  # the decoders work on the next batches while this one encodes
            ok = [i for i, p in enumerate(batch) if p.pixels is not None]
            embeddings: dict[int, np.ndarray] = {}
            if ok:
                emb = geo.embed_pixels(np.stack([batch[i].pixels for i in ok]))
                embeddings = {i: emb[j] for j, i in enumerate(ok)}
            yield [(replace(p, pixels=None), embeddings.get(i)) for i, p in enumerate(batch)]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def locate_files(
    geo: GeoModel,
    sources: Iterable[str | os.PathLike[str]],
    *,
    top_k: int = 5,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Iterator[LocateResult]:
    """Locate many photo files, yielding one LocateResult per file in input order.

    Bad files yield a result with ``error`` set; nothing is raised for them. The
    gallery search and place naming run in ``workers`` threads while the next batch
    encodes. Stop early by closing the generator (or breaking out of the loop).
    """
    if top_k < 1:
        raise UsageError(f"top-k must be at least 1, got {top_k}")
    workers = workers or default_workers()
    rows = batch_size or geo.default_batch_size
    finishing: deque[Future[LocateResult]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="geoguess-finish")
    batches = embedded_batches(geo, sources, batch_size=batch_size, workers=workers)
    try:
        for batch in batches:
            ok = [j for j, (_, emb) in enumerate(batch) if emb is not None]
            # One search for the whole batch: a single pass over the gallery matrix.
            searched = (
                pool.submit(_search_padded, geo, [batch[j][1] for j in ok], top_k, rows)
                if ok
                else None
            )
            row_of = {j: r for r, j in enumerate(ok)}
            for j, (prepared, embedding) in enumerate(batch):
                # The pool's queue is FIFO, so the batch search has started before any
                # of these waits on it: no deadlock however few threads there are.
                finishing.append(
                    pool.submit(
                        _finish_safely, geo, prepared, embedding, top_k, searched, row_of.get(j)
                    )
                )
            # Hand back the previous batch while this one is searched.
            while len(finishing) > len(batch):
                yield finishing.popleft().result()
        while finishing:
            yield finishing.popleft().result()
    finally:
        batches.close()
        pool.shutdown(wait=True, cancel_futures=True)


def scan_folder(
    geo: GeoModel | ScanEngine,
    root: str | os.PathLike[str],
    *,
    recursive: bool = True,
    glob: str | None = None,
    top_k: int = 5,
    batch_size: int | None = None,
    workers: int | None = None,
    skip: Collection[str] = (),
    on_result: Callable[[LocateResult], None] | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    files: Sequence[Path] | None = None,
    refiner: Refiner | None = None,
) -> ScanSummary:
    """Locate every image under ``root``; ``on_result`` gets each result as it is ready.

    ``skip`` holds paths already done (as previously reported in ``LocateResult.file``,
    or their absolute forms); they are counted, not processed. Setting ``stop`` ends
    the scan after the current result, with ``interrupted`` set in the summary: no
    result is half-delivered. ``files`` lets a caller pass a listing it already made
    with :func:`list_images` (``root``, ``recursive`` and ``glob`` are then unused).
    ``refiner`` (a :class:`geoguess.llm.Refiner`) also refines each located photo with
    a language model, several at once, setting ``LocateResult.llm``; LLM failures end
    in a fallback recorded there, never in an exception.
    ``geo`` may also be a :class:`ScanEngine` (results then come in the order it
    finishes them; it refines them with ``refiner``'s settings where it locates them).
    Raises UsageError when ``root`` is not a folder.
    """
    reporter = reporter or Reporter()
    start = time.perf_counter()
    if files is None:
        files = list_images(root, recursive=recursive, glob=glob)
    skip_abs = {_done_key(s) for s in skip}
    todo = [f for f in files if not _is_done(f, skip, skip_abs)]
    summary = ScanSummary(found=len(files), skipped=len(files) - len(todo))
    results: Iterator[LocateResult]
    if isinstance(geo, ScanEngine):
        results = geo.locate_stream(
            todo, top_k=top_k, batch_size=batch_size, workers=workers, refiner=refiner
        )
    else:
        results = locate_files(geo, todo, top_k=top_k, batch_size=batch_size, workers=workers)
        if refiner is not None:
            results = refiner.refine_results(geo, results)  # in order; closes locate_files
    try:
        with reporter.task("Locating", total=len(todo)) as advance:
            for result in results:
                if result.error:
                    summary.failed += 1
                else:
                    summary.located += 1
                if on_result is not None:
                    on_result(result)
                advance(1)
                if stop is not None and stop.is_set():
                    summary.interrupted = summary.remaining > 0
                    break
    except KeyboardInterrupt as exc:
        summary.interrupted = True
        raise ScanInterrupted(summary) from exc
    finally:
        results.close()
        summary.elapsed_s = time.perf_counter() - start
    return summary
