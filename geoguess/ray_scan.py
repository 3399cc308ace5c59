"""Scans that outgrow one machine: the folder scan on Ray Data, rows as `geoguess scan`.

Ray Data's ``map_batches`` runs a pool of actors; each actor loads one
:class:`~geoguess.geolocator.Geolocator` once (its ONNX sessions opened once) and
locates its batches of paths with :func:`geoguess.scan.locate_files`, so a bad photo is
an error row there too, never a failed task. :func:`locate_dataset` gives Python users
the Ray Dataset of result rows to chain with their own pipelines; :func:`scan_folder`
is what ``geoguess scan --engine ray`` runs: the driver takes rows in the order they
are done and hands each to the caller (the CLI writes it through the same
:mod:`geoguess.scan_output` writer as the local scan), so output files, resume, exit
codes and progress are the local scan's.

Fault tolerance is Ray's: Ray Data restarts an actor that dies (``max_restarts=-1``)
and retries its batch (``max_task_retries=-1``), its defaults for actor pools. A
retried batch could in principle come back after part of it was seen, so the driver
drops any path it has already handed on. Ray Data has no resume of its own; resume is
the writer's: every row is written when it arrives, and a rerun skips the paths the
output already has.

Workers read the model set from ``GEOGUESS_HOME`` (the driver's value when it has one
set, else each worker's own), which on a cluster is a path every node mounts at the
same place. Each worker opens every file it uses through
:meth:`geoguess.store.InstalledModel.file`, which checks it against the manifest's
sha256 before use, and does so when it starts, so a damaged copy on one node fails
that node's workers at once rather than mid-run. Ray is imported only here, and only
when called.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import environment
from .errors import GeoguessError, SetupError, UsageError, one_line
from .reporting import Reporter
from .scan import ScanSummary
from .scan import scan_folder as _scan_folder

if TYPE_CHECKING:
    import numpy as np
    import ray.data

    from .llm import LLMSettings, Refiner
    from .locate import LocateResult

__all__ = [
    "INSTALL_HINT",
    "RayScan",
    "WorkerOptions",
    "driver_env",
    "llm_env",
    "locate_dataset",
    "ray_module",
    "result_of",
    "result_rows",
    "scan_folder",
]

INSTALL_HINT = "pip install 'geoguess[ray]'"

#: ONNX Runtime threads per CPU worker when neither --ray-workers nor GEOGUESS_THREADS
#: says. Measured with benchmarks/ray_scan.py on 2 idle cores (tiny model, int8, 340
#: real photos, median of 2 rounds): 2 workers x 1 thread 38.5 photos/s (1.4 GB for the
#: workers), 1 worker x 2 threads 37.7 photos/s (0.9 GB); on a busy machine either came
#: out ahead. One thread per worker costs one model copy per core in memory;
#: GEOGUESS_THREADS=N trades that for fewer, wider workers on large nodes.
DEFAULT_CPU_THREADS = 1

#: Paths per Ray batch, as a multiple of the encoder batch: enough that the decoders
#: inside one actor run ahead of its encoder, few enough that a dead actor's redone
#: batch is small and rows stream back steadily.
RAY_BATCH_ENCODER_BATCHES = 4

#: Blocks of paths at most: each is a task of one worker (its rows stream back batch by
#: batch), and more blocks mean more bookkeeping in the driver.
MAX_BLOCKS = 10_000

#: The environment a worker reads its model set and caches from, passed on from the
#: driver when set there.
PASSED_ENV = (environment.HOME, environment.CACHE_DIR, environment.MODEL)

#: With --llm, the driver's variables that litellm reads for the provider (keys, base
#: URLs, API versions) go to the workers too: a cluster's nodes need not have them set.
LLM_ENV_SUFFIXES = ("_API_KEY", "_API_BASE", "_BASE_URL", "_API_VERSION")


def ray_module() -> Any:
    """``ray`` with Ray Data, or SetupError with the install command (exit 2)."""
    try:
        import ray

        # The extra is ray[data]: plain ray lacks what Ray Data needs (pyarrow, pandas).
        import ray.data
    except ImportError as exc:
        missing = exc.name or "ray"
        raise SetupError(
            f"--engine ray needs Ray Data ({missing} is missing): {INSTALL_HINT}"
        ) from None
    return ray


@dataclass(frozen=True)
class WorkerOptions:
    """How each worker opens its Geolocator and what it may use; the same settings as
    :class:`~geoguess.geolocator.Geolocator`'s. ``gpus_per_worker`` > 0 puts workers on
    GPUs (CUDA provider; precision defaults to fp16 there, the encoder batch to 64);
    otherwise each worker reserves ``threads`` CPUs and runs ONNX Runtime with that
    many threads, so that workers x threads never exceed a node's cores. ``llm``: each
    worker also refines its photos with a language model (a Refiner of these settings,
    opened once per worker). ``env`` is set in each worker before anything runs; it may
    hold API keys, so it is left out of the repr."""

    model: str | None = None
    precision: str | None = None
    gallery: str | None = None
    search: str = "auto"
    beam: int | None = None
    exact_decode: bool = False
    merge_duplicates: bool = True
    gpus_per_worker: float = 0.0
    threads: int | None = None
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    llm: LLMSettings | None = None

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    def open(self) -> Any:
        """The Geolocator these options describe, in this process."""
        from .geolocator import Geolocator

        return Geolocator.load(
            self.model,
            precision=self.precision,
            device=self.device,
            gallery=self.gallery,
            threads=self.threads,
            search=self.search,
            beam=self.beam,
            exact_decode=self.exact_decode,
            merge_duplicates=self.merge_duplicates,
        )


def driver_env() -> tuple[tuple[str, str], ...]:
    """The driver's GEOGUESS_HOME, GEOGUESS_CACHE_DIR and GEOGUESS_MODEL, where set."""
    return tuple((k, os.environ[k]) for k in PASSED_ENV if os.environ.get(k))


def llm_env(model: str) -> tuple[tuple[str, str], ...]:
    """The driver's variables litellm may read for ``model``: every ``*_API_KEY``,
    ``*_API_BASE``, ``*_BASE_URL`` and ``*_API_VERSION``, and every one named after the
    model's provider (``OPENAI_...``, ``ANTHROPIC_...``, ``OLLAMA_...``)."""
    from .llm.privacy import provider_of

    prefix = provider_of(model).upper().split("_")[0] + "_"
    return tuple(
        (k, v)
        for k, v in sorted(os.environ.items())
        if v and (k.startswith(prefix) or k.endswith(LLM_ENV_SUFFIXES))
    )


def _apply_env(env: Iterable[tuple[str, str]]) -> None:
    # Before anything reads them: geoguess.store reads GEOGUESS_HOME on each call.
    for key, value in env:
        os.environ[key] = value


def _describe(options: WorkerOptions) -> dict[str, Any]:
    """What a worker finds: model name, precision, gallery, random weights; run on the
    cluster, so that the driver (a laptop with ray://) needs no model set of its own.
    A geoguess error comes back as data, to be raised again as the same type."""
    from .model import default_precision, model_record
    from .store import get_model

    _apply_env(options.env)
    try:
        # Opened for the CPU: the node this runs on may have no GPU, and only the
        # precision depends on where the workers run.
        model = get_model(options.model)
        on_gpus = options.gpus_per_worker > 0
        precision = options.precision or default_precision(model, on_cuda=on_gpus)
        geo = replace(options, precision=precision, gpus_per_worker=0.0).open()
        return model_record(geo)
    except GeoguessError as exc:
        return {"error": str(exc), "type": type(exc).__name__}


class _Locator:
    """The actor: one Geolocator, opened and checked once, locating batches of paths
    (a ``path`` column) or of image bytes (a ``bytes`` column, named by ``path`` or
    ``name`` when there is one)."""

    def __init__(
        self,
        options: WorkerOptions,
        settings: Mapping[str, Any] | None,
        top_k: int,
        batch_size: int | None,
        decoders: int | None,
        with_results: bool,
    ) -> None:
        _apply_env(options.env)
        self.geo = options.open()
        # Open now what every photo needs: the encoder, the gallery and its search (each
        # file checked against the manifest's sha256 as it is opened), so a worker that
        # cannot load fails as it starts rather than on its first photo.
        self.geo.image_encoder  # noqa: B018
        self.geo.searcher  # noqa: B018
        self.settings = dict(settings) if settings else None
        self.top_k = top_k
        self.batch_size = batch_size
        self.decoders = decoders
        self.with_results = with_results
        self._pool: ThreadPoolExecutor | None = None
        self.refiner: Refiner | None = None
        if options.llm is not None:
            from .llm import Refiner

            # Its answer cache is this worker's GEOGUESS_HOME/cache/llm.
            self.refiner = Refiner(options.llm)

    def __del__(self) -> None:
        # Ray ends an actor when its dataset is done; let the request threads go first.
        refiner = getattr(self, "refiner", None)
        if refiner is not None:
            refiner.close()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from .scan import locate_files

        sources: list[Any] | None = None
        if BYTES_COLUMN in batch:
            results = self._locate_bytes(batch)
            sources = [bytes(b) for b in batch[BYTES_COLUMN]]  # no path to read again
        else:
            results = list(
                locate_files(
                    self.geo,
                    [str(p) for p in batch["path"]],
                    top_k=self.top_k,
                    batch_size=self.batch_size,
                    workers=self.decoders,
                )
            )
        if self.refiner is not None:
            # Here, not on the driver: refinement needs the model and the photo.
            results = list(self.refiner.refine_results(self.geo, results, sources))
        return result_rows(results, self.settings, with_results=self.with_results)

    def _locate_bytes(self, batch: dict[str, np.ndarray]) -> list[LocateResult]:
        """locate_files for photos held as bytes: decoded in threads, encoded and
        searched a batch at a time (searches padded to one shape, as locate_files
        does, so a photo's row does not depend on its batch-mates)."""
        import numpy as np

        from .locate import LocateResult, finish
        from .scan import _search_padded, default_workers

        blobs = [bytes(b) for b in batch[BYTES_COLUMN]]
        names = _names(batch, blobs)
        if self._pool is None:
            workers = self.decoders or default_workers()
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="geoguess-decode")
        geo, rows = self.geo, self.batch_size or self.geo.default_batch_size
        decoded = self._pool.map(_prepare_bytes, [geo] * len(blobs), blobs, names)
        results: list[LocateResult] = []
        while chunk := list(itertools.islice(decoded, rows)):
            ok = [i for i, p in enumerate(chunk) if p.pixels is not None]
            embeddings: dict[int, np.ndarray] = {}
            found: dict[int, Any] = {}
            if ok:
                emb = geo.embed_pixels(np.stack([chunk[i].pixels for i in ok]))
                embeddings = {i: emb[j] for j, i in enumerate(ok)}
                searched = _search_padded(geo, list(emb), self.top_k, rows)
                found = {i: searched[j] for j, i in enumerate(ok)}
            for i, prepared in enumerate(chunk):
                prepared = replace(prepared, pixels=None)
                try:
                    results.append(
                        finish(
                            geo, prepared, embeddings.get(i), top_k=self.top_k, found=found.get(i)
                        )
                    )
                except Exception as exc:  # one odd photo must not fail the batch
                    error = f"unexpected error: {type(exc).__name__}: {exc}"
                    results.append(
                        LocateResult(prepared.name, metadata=prepared.metadata, error=error)
                    )
        return results


#: The column of image bytes in a dataset of photos (as ``ray.data.read_binary_files``
#: makes it), and the columns that name them, in order of preference.
BYTES_COLUMN = "bytes"
NAME_COLUMNS = ("path", "name")


def _names(batch: Mapping[str, Any], blobs: Sequence[bytes]) -> list[str]:
    """Each photo's name: its ``path`` or ``name``, else ``sha256:`` and the first 16
    hex digits of its bytes (the same photo gets the same name in every run)."""
    for column in NAME_COLUMNS:
        if column in batch:
            return [str(n) for n in batch[column]]
    import hashlib

    return [f"sha256:{hashlib.sha256(b).hexdigest()[:16]}" for b in blobs]


def _prepare_bytes(geo: Any, blob: bytes, name: str) -> Any:
    from .locate import Prepared, prepare

    try:
        return prepare(geo, blob, name=name)
    except Exception as exc:  # as the path scan: one odd file must not end the batch
        return Prepared(name, None, None, f"unexpected error: {type(exc).__name__}: {exc}")


def result_rows(
    results: Sequence[LocateResult],
    settings: Mapping[str, Any] | None = None,
    *,
    with_results: bool = False,
) -> dict[str, list[Any]]:
    """Columns for a batch of results: the CSV row's columns
    (:func:`~geoguess.scan_output.csv_row`), ``record`` (the JSON Lines row, as text)
    and, with ``with_results``, ``result`` (the pickled LocateResult, for
    :func:`result_of`)."""
    from .output import json_line
    from .scan_output import CSV_COLUMNS, csv_row

    columns: dict[str, list[Any]] = {c: [] for c in CSV_COLUMNS}
    columns["record"] = []
    if with_results:
        columns["result"] = []
    for result in results:
        for key, value in csv_row(result, model=settings).items():
            columns[key].append(value)
        record = result.to_dict()
        if settings is not None:
            record["model"] = dict(settings)
        columns["record"].append(json_line(record))
        if with_results:
            result.embedding = None  # not part of any output; 2 KB a row saved
            columns["result"].append(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return columns


def result_of(row: Mapping[str, Any]) -> LocateResult:
    """The LocateResult of a row made with ``with_results=True``."""
    return pickle.loads(row["result"])


@dataclass(frozen=True)
class _Plan:
    workers: int
    threads: int | None
    num_cpus: float
    num_gpus: float
    batch_size: int  # encoder batch
    ray_batch: int  # paths per Ray batch
    decoders: int


def _plan(
    ray: Any,
    options: WorkerOptions,
    workers: int | None,
    batch_size: int | None,
    decoders: int | None,
    *,
    upstream: bool = False,
) -> _Plan:
    """Workers, threads and batches that fit the cluster's resources; ``upstream``:
    the photos come from a dataset whose own tasks need CPUs too."""
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = options.gpus_per_worker
    if gpus > 0:
        have = float(resources.get("GPU", 0))
        if have < gpus:
            raise SetupError(
                f"--gpus-per-worker {gpus:g}: the Ray cluster has {have:g} GPUs "
                "(add GPU nodes, or leave the option out to scan on CPUs)"
            )
        n = workers or max(1, int(have // gpus))
        batch = batch_size or 64
        # The encoder runs on the GPU; a few CPU threads decode for it.
        ray_batch = batch * RAY_BATCH_ENCODER_BATCHES
        return _Plan(n, options.threads, 1, gpus, batch, ray_batch, decoders or 4)
    if workers:
        threads = options.threads or max(1, cpus // workers)
    else:
        from .providers import default_threads

        threads = options.threads or default_threads() or min(DEFAULT_CPU_THREADS, cpus)
        workers = max(1, cpus // threads)
    batch = batch_size or 16
    # More workers asked for than the cluster has CPUs: each reserves its share, so that
    # all of them start (they then share cores) rather than some waiting for ever.
    reserve = min(float(threads), cpus / workers)
    if upstream:
        # A dataset of the caller's (read_binary_files, ...) has read tasks that need a
        # CPU of their own: actors holding every CPU would leave them, and so the
        # actors, waiting for ever. The actors still run their ``threads``.
        reserve = min(reserve, max(0.5, cpus - 1) / workers)
    return _Plan(
        workers,
        threads,
        reserve,
        0.0,
        batch,
        batch * RAY_BATCH_ENCODER_BATCHES,
        decoders or threads,
    )


def _paths_dataset(ray: Any, sources: Any, plan: _Plan) -> ray.data.Dataset:
    if hasattr(sources, "map_batches"):
        # A Dataset already. Its columns when known without running it (a lazy read
        # may not know them yet: the actors then find out).
        columns = sources.columns(fetch_if_missing=False)
        if columns is not None and BYTES_COLUMN not in columns and "path" not in columns:
            raise UsageError(
                f"a dataset of photos needs a 'path' or a '{BYTES_COLUMN}' column; "
                f"this one has {', '.join(map(repr, columns)) or 'none'}"
            )
        return sources
    paths = [os.fspath(s) for s in sources]
    # A block for each Ray batch, and at least one for each worker, so that every worker
    # has work and a dead worker's block, redone whole, stays small.
    per_batch = -(-len(paths) // plan.ray_batch)
    blocks = max(1, min(len(paths), MAX_BLOCKS, max(plan.workers, per_batch)))
    return ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)


def locate_dataset(
    sources: Iterable[str | os.PathLike[str]] | ray.data.Dataset,
    options: WorkerOptions | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    top_k: int = 5,
    workers: int | None = None,
    batch_size: int | None = None,
    decoders: int | None = None,
    with_results: bool = False,
) -> ray.data.Dataset:
    """A Ray Dataset of result rows for photo paths, located by a pool of actors each
    holding one Geolocator.

    ``sources``: paths, or a Ray Dataset with a ``path`` column (paths the workers can
    read) or a ``bytes`` column (the photos' bytes, as ``ray.data.read_binary_files``
    makes them; each named by its ``path`` or ``name`` column when it has one, else by
    ``sha256:`` and 16 hex digits of its bytes). The rows are the same either way.

    Each row has the CSV columns of ``geoguess scan`` (:data:`~geoguess.scan_output.CSV_COLUMNS`,
    as text, made with ``settings`` as the writer's ``model`` record), ``record``: the
    JSON Lines row as text, and with ``with_results`` ``result``, the pickled
    :class:`~geoguess.locate.LocateResult` (:func:`result_of`). Bad photos are rows with
    ``error`` set. ``workers``: actors (default: as many as the cluster's CPUs or GPUs
    hold); ``batch_size``: photos per encoder run; ``decoders``: decoding threads per
    actor. ``options.llm`` (LLMSettings) also refines each photo in its actor (the
    record's ``llm`` and the ``llm_*`` columns; API keys from ``options.env`` or the
    workers' own environment). Connects to Ray (``ray.init()``) when it is not yet
    initialised. The dataset is lazy: nothing runs until it is consumed.
    """
    ray = ray_module()
    if top_k < 1:
        raise UsageError(f"top-k must be at least 1, got {top_k}")
    if workers is not None and workers < 1:
        raise UsageError(f"--ray-workers must be at least 1, got {workers}")
    options = options or WorkerOptions(env=driver_env())
    if not ray.is_initialized():
        ray.init()
    plan = _plan(
        ray, options, workers, batch_size, decoders, upstream=hasattr(sources, "map_batches")
    )
    options = replace(options, threads=plan.threads)
    return _paths_dataset(ray, sources, plan).map_batches(
        _Locator,
        fn_constructor_kwargs={
            "options": options,
            "settings": settings,
            "top_k": top_k,
            "batch_size": plan.batch_size,
            "decoders": plan.decoders,
            "with_results": with_results,
        },
        batch_size=plan.ray_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus or None,
        # ONNX Runtime gets its threads from the options; numpy's BLAS (the flat search)
        # must not start one thread per core in every worker either.
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(plan.threads or 1)}},
    )


@dataclass(frozen=True)
class WorkerModel:
    """The model set the workers found (in place of a Geolocator's InstalledModel)."""

    name: str


class RayScan:
    """A connection to Ray and the model set its workers find, for :func:`scan_folder`.

    Starts a local Ray (all cores) when ``address`` is None and Ray is not initialised,
    else connects to ``address`` (``auto``, ``ray://head:10001``); :meth:`close` shuts
    down only a Ray it started. On opening it asks one worker what model set it finds
    (``name``, ``precision``, ``gallery_name``, ``random_weights``, like a Geolocator's),
    raising the worker's SetupError or UsageError when it cannot open it.
    """

    def __init__(
        self,
        options: WorkerOptions,
        *,
        address: str | None = None,
        workers: int | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        ray = ray_module()
        self.options = options
        self.workers = workers
        self.reporter = reporter or Reporter()
        self._started = False
        self.startup_s = 0.0
        start = time.perf_counter()
        if not ray.is_initialized():
            self.reporter.message(f"starting Ray{f' at {address}' if address else ''}")
            try:
                _init(ray, address)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError
                raise SetupError(f"cannot start Ray: {one_line(exc)}") from None
            self._started = True
        try:
            _quiet_ray_data(ray)
            info = ray.get(ray.remote(num_cpus=0)(_describe).remote(options))
        except Exception as exc:  # a worker that cannot even start, a lost cluster
            self.close()
            message = f"a Ray worker could not open the model set: {one_line(exc)}"
            raise SetupError(message) from None
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - start
        if "error" in info:
            self.close()
            kind = UsageError if info["type"] == "UsageError" else SetupError
            raise kind(f"on a Ray worker: {info['error']}")
        self.model = WorkerModel(info["name"])
        self.name = info["name"]
        self.precision = info["precision"]
        # Every worker then uses the precision the output's rows are labelled with.
        self.options = replace(options, precision=self.precision)
        self.gallery_name = info["gallery"]
        self.random_weights = bool(info["random_weights"])

    def locate_stream(
        self,
        sources: Sequence[str | os.PathLike[str]],
        *,
        top_k: int = 5,
        batch_size: int | None = None,
        workers: int | None = None,
        refiner: Refiner | None = None,
    ) -> Iterator[LocateResult]:
        """Results for these paths from the actor pool, in the order they are done, each
        path once even when Ray redoes the batch of a worker that died (a redone batch
        could come back after part of it was seen). ``workers``: decoding threads per
        actor. ``refiner``: each actor refines its photos with a Refiner of the same
        settings (``result.llm`` set as by :meth:`~geoguess.llm.Refiner.refine_results`),
        and the usage of each result handed on is added to ``refiner.usage``; the API
        key variables (:func:`llm_env`) go to the workers. Ray's own failures (a lost
        cluster, a worker that cannot start) are SetupError. Closing the generator
        stops the dataset."""
        if not sources:
            return  # no dataset, no actors to start
        options = self.options
        if refiner is not None:
            env = dict(options.env)
            env.update(llm_env(refiner.settings.model))
            options = replace(options, llm=refiner.settings, env=tuple(env.items()))
        ds = locate_dataset(
            sources,
            options,
            top_k=top_k,
            workers=self.workers,
            batch_size=batch_size,
            decoders=workers,
            with_results=True,
        )
        wanted = {os.fspath(f) for f in sources}
        seen: set[str] = set()
        rows = iter(ds.iter_rows())
        try:
            while True:
                try:
                    row = next(rows, None)
                except GeoguessError:
                    raise
                except Exception as exc:  # Ray's own failures (lost cluster, bad worker)
                    raise SetupError(f"the Ray scan failed: {one_line(exc)}") from None
                if row is None:
                    return
                result = result_of(row)
                if result.file in seen or result.file not in wanted:
                    continue  # a batch Ray redid after a worker died: handed on already
                seen.add(result.file)
                if refiner is not None and result.llm is not None:
                    # What the actors spent on the rows handed on (a redone batch's
                    # requests again are not counted; they were mostly cached).
                    refiner.usage.add(result.llm.usage)
                yield result
        finally:
            close = getattr(rows, "close", None)
            if callable(close):
                close()

    def close(self) -> None:
        if self._started:
            self._started = False
            ray_module().shutdown()

    def __enter__(self) -> RayScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _init(ray: Any, address: str | None) -> None:
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        # A local cluster for this run: no dashboard to serve.
        kwargs["include_dashboard"] = False
    ray.init(address=address, **kwargs)


def _quiet_ray_data(ray: Any) -> None:
    # The scan shows its own progress; Ray Data's bars and start-up lines would
    # interleave with it on the terminal.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def scan_folder(engine: RayScan, root: str | os.PathLike[str], **options: Any) -> ScanSummary:
    """:func:`geoguess.scan.scan_folder` on Ray, with the same options, listing, skip,
    ``on_result``, ``stop`` and summary; results come in the order the workers finish
    them (:meth:`RayScan.locate_stream`). ``workers`` here are decoding threads per
    actor (the local scan's meaning); the number of actors is the engine's. With
    ``refiner`` (LLM refinement) each actor refines its own photos with the same
    settings, and ``refiner.usage`` totals what they report."""
    return _scan_folder(engine, root, **options)
