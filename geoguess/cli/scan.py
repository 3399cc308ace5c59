"""`geoguess scan`: locate every photo in a folder into a CSV or JSON Lines file."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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
from .ray_options import RayOptions
from .xmp import SidecarTally, XmpOptions

if TYPE_CHECKING:
    from ..locate import LocateResult
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


OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="File to write (resumed if it exists); '-' or omitted: stdout; a folder "
        "(ending in '/', or existing): shards part-NNNNN.csv/.jsonl/.parquet.",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="csv, jsonl or geojson \\[default: from the suffix: .jsonl/.ndjson/.json, "
        ".geojson; else csv]; shards: csv, jsonl or parquet.",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Start the output afresh instead of resuming.")
]
RetryFailedOpt = Annotated[
    bool,
    typer.Option(
        "--retry-failed", help="When resuming, locate again the photos whose row is an error."
    ),
]
ShardSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--shard-size",
        min=1,
        help="With a folder -o: rows per shard \\[default: 10000].",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class ScanOutputOptions:
    """Where a scan writes and how it resumes: ``-o``, ``--format``, ``--overwrite``,
    ``--retry-failed`` and ``--shard-size``."""

    output: OutputOpt = None
    fmt: FormatOpt = None
    overwrite: OverwriteOpt = False
    retry_failed: RetryFailedOpt = False
    shard_size: ShardSizeOpt = None

    @property
    def to_stdout(self) -> bool:
        return self.output is None or self.output == "-"

    @property
    def to_folder(self) -> bool:
        from ..scan_shards import is_shard_folder

        return is_shard_folder(self.output)

    def check(self, *, map_file: str | None) -> None:
        """Usage errors before the model loads (the writer would find some of them only
        once it opens)."""
        from ..errors import UsageError
        from ..scan_output import output_format

        if self.to_folder:
            if map_file is not None:
                raise UsageError("--map needs a single output file, not a folder of shards")
            return  # shards check their own format (parquet too) when the writer opens
        if self.shard_size is not None:
            raise UsageError("--shard-size goes with a folder -o (one ending in '/')")
        output_format(None if self.to_stdout else self.output, self.fmt)

    def open(self, model: Mapping[str, Any]) -> Any:
        """The scan's writer (:func:`geoguess.scan_shards.open_output`), resuming."""
        from ..scan_shards import open_output

        # The writer reads the format from --format or the suffix, as check() did.
        writer = open_output(
            None if self.to_stdout else self.output,
            self.fmt,
            model=model,
            shard_size=self.shard_size,
            overwrite=self.overwrite,
            retry_failed=self.retry_failed,
        )
        if writer.dropped_partial:
            _note(
                f"{self.output}: dropped an incomplete last row ({writer.dropped_partial} "
                "bytes) left by an interrupted run"
            )
        return writer


class _Rows:
    """What happens to each row as the scan hands it on: written, kept for a map of
    stdout output, its sidecar written, its error printed on one line."""

    def __init__(
        self, writer: Any, sidecars: SidecarTally | None, *, keep: bool, console: Any
    ) -> None:
        self.writer, self.sidecars, self.console = writer, sidecars, console
        self.kept: list[dict[str, Any]] | None = [] if keep else None

    def __call__(self, result: LocateResult) -> None:
        self.writer.write(result)
        if self.kept is not None:
            self.kept.append(result.to_dict())
        if self.sidecars is not None:
            self.sidecars.write(result)
        if not result.error:
            return
        if self.console is None:
            _err(f"{result.file}: {result.error}")
            return
        from rich.markup import escape

        self.console.print(f"[red]error:[/] {escape(result.file)}: {escape(result.error)}")


@app.command("scan")
@bundled("ray_options", RayOptions)
@bundled("xmp_options", XmpOptions)
@bundled("llm_options", LLMOptions)
@bundled("model_options", ModelOptions)
@bundled("output_options", ScanOutputOptions)
def scan_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of photos.", show_default=False)],
    output_options: ScanOutputOptions = ScanOutputOptions(),
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
    quiet: QuietOpt = False,
    model_options: ModelOptions = ModelOptions(),
    llm_options: LLMOptions = LLMOptions(),
    yes: YesOpt = False,
    xmp_options: XmpOptions = XmpOptions(),
    map_file: MapOpt = None,
    tiles: TilesOpt = False,
    ray_options: RayOptions = RayOptions(),
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
    from ..output import stderr_console
    from ..reporting import Reporter
    from ..scan import ScanInterrupted, check_folder, list_images, scan_folder
    from ..scan_output import scan_record

    out = output_options
    with _errors():
        out.check(map_file=map_file)
        check_folder(folder)  # before the model loads, so a typo costs nothing
        xmp_options.sidecars()  # a usage error shows before any work
        if map_file is not None:
            from ..maps import map_format

            map_format(map_file)
        model_options.check()
        ray_options.check(model_options)
        # Before Ray starts: the --llm checks and notice are the local scan's.
        refiner = llm_options.open(yes=yes)
        ray_engine = ray_options.open(model_options, quiet=quiet)
        geo = ray_engine or model_options.open(yes=yes)
        model_info = scan_record(
            geo,
            top_k=top_k,
            search=model_options.search,
            beam=model_options.beam,
            llm=llm_options.llm,
            raw_candidates=model_options.raw_candidates,
        )
        writer = out.open(model_info)
        with writer, refiner or contextlib.nullcontext(), ray_engine or contextlib.nullcontext():
            files = list_images(folder, recursive=recursive, glob=glob)
            show_progress = not quiet and stderr_console().is_terminal
            reporter = RichReporter(unit="files") if show_progress else Reporter()
            sidecars = xmp_options.tally(model_info)
            rows = _Rows(
                writer,
                sidecars,
                keep=map_file is not None and out.to_stdout,
                console=reporter.console if isinstance(reporter, RichReporter) else None,
            )
            if ray_engine is not None:
                from ..ray_scan import scan_folder
            try:
                with _stop_on_signals() as (stop, received):
                    summary = scan_folder(
                        geo,
                        folder,
                        files=files,
                        top_k=top_k,
                        batch_size=batch_size,
                        workers=workers,
                        skip=writer.done,
                        on_result=rows,
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
    if out.to_folder:
        n = writer.shards_written
        _note(f"{out.output}: {n} new shard{'' if n == 1 else 's'}")
    if sidecars is not None:
        sidecars.print_summary()
    if map_file is not None:
        _write_map(rows.kept, out.output, map_file, folder, tiles, geo.random_weights)
    if refiner is not None:
        from .render import usage_text

        _note(usage_text(refiner.usage))
    if summary.interrupted:
        signum = received[0] if received else signal.SIGINT
        raise typer.Exit(128 + int(signum))
    some_failed = summary.failed or failed_before or (sidecars is not None and sidecars.failed)
    raise typer.Exit(EXIT_SOME_FAILED if some_failed else EXIT_OK)


def _write_map(
    this_run: list[dict[str, Any]] | None,
    output: str | None,
    map_file: str,
    folder: Path,
    tiles: bool,
    random_weights: bool,
) -> None:
    """``--map``: the whole output, rows of earlier runs included, when there is a file;
    the rows of this run when they went to stdout."""
    from ..maps import write_scan_map
    from ..results_reader import read_results

    with _errors():
        records = this_run if this_run is not None else read_results(output).records
        written = write_scan_map(
            records, map_file, title=str(folder), tiles=tiles, random_weights=random_weights
        )
    _note(f"map written to {written}")
