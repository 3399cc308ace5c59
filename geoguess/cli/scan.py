"""`geoguess scan`: locate every photo in a folder into a CSV or JSON Lines file."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .bundles import bundled
from .common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    BatchSizeOpt,
    MapOpt,
    ModelOptions,
    QuietOpt,
    RichReporter,
    TilesOpt,
    TopKOpt,
    WorkersOpt,
    _err,
    _errors,
    _note,
    app,
)
from .llm_options import LLMOptions, YesOpt
from .xmp import XmpOptions

if TYPE_CHECKING:
    from ..scan import ScanSummary

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[tuple[threading.Event, list[int]]]:
    """First Ctrl-C or SIGTERM asks the scan to stop after the current row.

    A second Ctrl-C gives up at once (KeyboardInterrupt), for when the current batch
    takes too long. Handlers can only be set from the main thread; elsewhere (an
    embedding application) the default behaviour stays.
    """
    stop = threading.Event()
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stop, received
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop, received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _summary_line(summary: ScanSummary, failed_before: int = 0, retried: int = 0) -> str:
    parts = [f"{summary.located} located", f"{summary.failed} failed"]
    if summary.skipped:
        parts.append(f"skipped {summary.skipped} already done")
    if failed_before:
        parts.append(f"{failed_before} failed in an earlier run (--retry-failed tries again)")
    if retried:
        parts.append(f"retried {retried} that failed before")
    text = ", ".join(parts)
    text += f" in {summary.elapsed_s:.1f} s ({summary.files_per_s:.1f} files/s)"
    if summary.interrupted:
        text = f"interrupted, {summary.remaining} left to do: " + text
    return text


@app.command("scan")
@bundled("xmp_options", XmpOptions)
@bundled("llm_options", LLMOptions)
@bundled("model_options", ModelOptions)
def scan_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of photos.", show_default=False)],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (resumed if it exists); '-' or omitted: stdout; a folder "
            "(ending in '/', or existing): shards part-NNNNN.csv/.jsonl/.parquet.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="csv, jsonl or geojson \\[default: from the suffix: .jsonl/.ndjson/.json, "
            ".geojson; else csv]; shards: csv, jsonl or parquet.",
            show_default=False,
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Look into subfolders.")
    ] = True,
    glob: Annotated[
        str | None,
        typer.Option(
            "--glob",
            help="Only file names matching this pattern, e.g. '*.jpg' (any case).",
            show_default=False,
        ),
    ] = None,
    top_k: TopKOpt = 5,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start the output afresh instead of resuming.")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="When resuming, locate again the photos whose row is an error."
        ),
    ] = False,
    shard_size: Annotated[
        int | None,
        typer.Option(
            "--shard-size",
            min=1,
            help="With a folder -o: rows per shard \\[default: 10000].",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
    model_options: ModelOptions = ModelOptions(),
    llm_options: LLMOptions = LLMOptions(),
    yes: YesOpt = False,
    xmp_options: XmpOptions = XmpOptions(),
    map_file: MapOpt = None,
    tiles: TilesOpt = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local (this process) or ray (an actor pool on Ray Data, local or a "
            "cluster; pip install 'geoguess\\[ray]').",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="With --engine ray: the cluster (auto, ray://head:10001) "
            "\\[default: a local Ray on this machine's cores].",
            show_default=False,
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(
            "--ray-workers",
            min=1,
            help="With --engine ray: actors, each with its own model \\[default: what the "
            "cluster's CPUs or GPUs hold].",
            show_default=False,
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float,
        typer.Option(
            "--gpus-per-worker",
            min=0,
            help="With --engine ray: GPUs per actor (CUDA, fp16, batches of 64); 0: CPUs.",
        ),
    ] = 0,
) -> None:
    """Locate every photo in a folder into a CSV or JSON Lines file.

    Rows are written as photos are done. Running the same command again
    resumes: photos already in the output are skipped (--retry-failed
    does the failed ones again), and an output made with another model,
    precision or settings is refused. Ctrl-C stops after the current photo
    and leaves a valid file. A photo that cannot be read gets a row with
    its error, and the exit status is then 1 (also on a resumed run while
    earlier failures remain).

    [bold]Examples[/]

      geoguess scan ~/Pictures -o places.csv

      geoguess scan trip/ --glob '*.heic' --format jsonl -o trip.jsonl

      geoguess scan trip/ -o trip.geojson                 one Feature per photo

      geoguess scan photos/ --no-recursive --top-k 3 > places.csv

      geoguess scan trip/ -o trip.jsonl --llm gpt-4o --llm-concurrency 8

      geoguess scan ~/Pictures -o places.csv --xmp     sidecars for photos without GPS

      geoguess scan trip/ -o trip.csv --map trip.html
    """
    from ..errors import UsageError
    from ..output import stderr_console
    from ..reporting import Reporter
    from ..results_reader import read_results
    from ..scan import ScanInterrupted, check_folder, list_images, scan_folder
    from ..scan_output import output_format, scan_record
    from ..scan_shards import is_shard_folder, open_output

    with _errors():
        to_stdout = output is None or output == "-"
        to_folder = is_shard_folder(output)
        if to_folder and map_file is not None:
            raise UsageError("--map needs a single output file, not a folder of shards")
        if shard_size is not None and not to_folder:
            # open_output says so too, but only once the model has loaded.
            raise UsageError("--shard-size goes with a folder -o (one ending in '/')")
        # Shards check their own format (parquet too) when the writer opens.
        out_format = fmt if to_folder else output_format(None if to_stdout else output, fmt)
        check_folder(folder)  # before the model loads, so a typo costs nothing
        xmp_options.sidecars()  # a usage error shows before any work
        if map_file is not None:
            from ..maps import map_format

            map_format(map_file)
        model_options.check()
        # Before Ray starts: the --llm checks and notice are the local scan's.
        refiner = llm_options.open(yes=yes)
        ray_engine = _ray_engine(
            engine,
            model_options,
            ray_address=ray_address,
            ray_workers=ray_workers,
            gpus_per_worker=gpus_per_worker,
            quiet=quiet,
        )
        geo = ray_engine or model_options.open(yes=yes)
        model_info = scan_record(
            geo,
            top_k=top_k,
            search=model_options.search,
            beam=model_options.beam,
            llm=llm_options.llm,
            raw_candidates=model_options.raw_candidates,
        )
        writer = open_output(
            None if to_stdout else output,
            out_format,
            model=model_info,
            shard_size=shard_size,
            overwrite=overwrite,
            retry_failed=retry_failed,
        )
        with writer, refiner or contextlib.nullcontext(), ray_engine or contextlib.nullcontext():
            if writer.dropped_partial:
                _note(
                    f"{output}: dropped an incomplete last row ({writer.dropped_partial} bytes) "
                    "left by an interrupted run"
                )
            files = list_images(folder, recursive=recursive, glob=glob)
            show_progress = not quiet and stderr_console().is_terminal
            reporter = RichReporter(unit="files") if show_progress else Reporter()
            console = reporter.console if isinstance(reporter, RichReporter) else None

            sidecars = xmp_options.tally(model_info)

            this_run: list[dict[str, Any]] = []

            def on_result(result: Any) -> None:
                writer.write(result)
                if map_file is not None and to_stdout:
                    this_run.append(result.to_dict())
                if sidecars is not None:
                    sidecars.write(result)
                if result.error:
                    if console is not None:
                        from rich.markup import escape

                        console.print(
                            f"[red]error:[/] {escape(result.file)}: {escape(result.error)}"
                        )
                    else:
                        _err(f"{result.file}: {result.error}")

            try:
                if ray_engine is not None:
                    from ..ray_scan import scan_folder
                with _stop_on_signals() as (stop, received):
                    summary = scan_folder(
                        geo,
                        folder,
                        files=files,
                        top_k=top_k,
                        batch_size=batch_size,
                        workers=workers,
                        skip=writer.done,
                        on_result=on_result,
                        reporter=reporter,
                        stop=stop,
                        refiner=refiner,
                    )
            except ScanInterrupted as exc:
                done = exc.summary
                _err(
                    f"interrupted: {done.located} located, {done.failed} failed "
                    f"in {done.elapsed_s:.1f} s"
                )
                raise typer.Exit(EXIT_INTERRUPTED) from None
    if summary.found == 0:
        where = f"{folder}: no photos found" + (f" matching {glob!r}" if glob else "")
        _note(where + ("" if recursive else " (subfolders not searched)"))
    failed_before = len(writer.failed)
    stderr_console().print(_summary_line(summary, failed_before, writer.retried), markup=False)
    if to_folder:
        n = writer.shards_written
        _note(f"{output}: {n} new shard{'' if n == 1 else 's'}")
    if sidecars is not None:
        sidecars.print_summary()
    if map_file is not None:
        from ..maps import write_scan_map

        with _errors():
            # The whole output, rows of earlier runs included, when there is a file.
            records = this_run if to_stdout else read_results(output).records
            written = write_scan_map(
                records,
                map_file,
                title=str(folder),
                tiles=tiles,
                random_weights=geo.random_weights,
            )
        _note(f"map written to {written}")
    if refiner is not None:
        from .render import usage_text

        _note(usage_text(refiner.usage))
    if summary.interrupted:
        signum = received[0] if received else signal.SIGINT
        raise typer.Exit(128 + int(signum))
    some_failed = summary.failed or failed_before or (sidecars is not None and sidecars.failed)
    raise typer.Exit(EXIT_SOME_FAILED if some_failed else EXIT_OK)


def _ray_engine(engine: str, model_options: ModelOptions, **options: Any) -> Any:
    """A RayScan for --engine ray (Ray started, the workers' model set found), else None."""
    from ..errors import UsageError

    ray_options = ("ray_address", "ray_workers")
    if engine == "local":
        if any(options[k] is not None for k in ray_options) or options["gpus_per_worker"]:
            raise UsageError(
                "--ray-address, --ray-workers and --gpus-per-worker go with --engine ray"
            )
        return None
    if engine != "ray":
        raise UsageError(f"unknown engine {engine!r} (choose local or ray)")
    gpus = options["gpus_per_worker"]
    device = model_options.device
    if (device == "cuda" and not gpus) or (device == "cpu" and gpus):
        raise UsageError("with --engine ray, --gpus-per-worker chooses the device (--device auto)")
    from ..ray_scan import RayScan, WorkerOptions, driver_env
    from ..reporting import Reporter

    load = model_options.loader_kwargs()
    del load["device"]  # the workers' device follows --gpus-per-worker
    worker = WorkerOptions(
        model=model_options.model, gpus_per_worker=gpus, env=driver_env(), **load
    )

    # Ray's start-up messages as notes on stderr.
    class NoteReporter(Reporter):
        def message(self, text: str) -> None:
            _note(text)

    reporter = Reporter() if options["quiet"] else NoteReporter()
    geo = RayScan(
        worker,
        address=options["ray_address"],
        workers=options["ray_workers"],
        reporter=reporter,
    )
    if geo.random_weights:
        _note(
            f"warning: model set {geo.name!r} has random backbone weights (built for "
            "tests and benchmarks): its answers are not geolocations"
        )
    return geo
