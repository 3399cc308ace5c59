"""`geoguess bench`: speed and memory, measured against baselines in the same run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import DeviceOpt, ModelOpt, RichReporter, _errors, app

bench_app = typer.Typer(
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
)
app.add_typer(bench_app, name="bench")

RowsJsonOpt = Annotated[
    bool, typer.Option("--json", help="One JSON object per result row (JSON Lines).")
]


def _photo_files(photos: list[Path]) -> list[Path]:
    from ..bench import usable_photos
    from ..errors import UsageError
    from ..scan import list_images
    from .common import _note

    files: list[Path] = []
    for p in photos:
        files.extend(list_images(p, recursive=False) if p.is_dir() else [p])
    files, skipped = usable_photos(files)
    for message in skipped:
        _note(f"skipped {message}")
    if not files:
        raise UsageError("no photos to time: pass --photos DIR or photo files")
    return files


@bench_app.callback()
def bench_inference(
    ctx: typer.Context,
    photos: Annotated[
        list[Path] | None,
        typer.Option("--photos", help="Photo files or folders to time (repeatable)."),
    ] = None,
    model: ModelOpt = None,
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision",
            "-p",
            help="Precisions to time (repeatable) \\[default: fp32, int8; fp16 on CUDA].",
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            exists=True,
            dir_okay=False,
            help="Also time geoclip's predict(), served by this worker script "
            "(benchmarks/reference_worker.py in a source checkout; needs PyTorch and geoclip).",
            show_default=False,
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(
            min=1, help="Timed calls of each precision per photo, right after the reference's."
        ),
    ] = 2,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Passes over the photos (the reference runs once per photo each)."
        ),
    ] = 1,
    scan_files: Annotated[
        int, typer.Option(min=0, help="Files for the scan-throughput run (0 skips it).")
    ] = 48,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Scan batch size \\[default: 64 on CUDA, 16 on the CPU].",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON object per result row (kind: latency, scan, startup)."
        ),
    ] = False,
) -> None:
    """Per-image latency (warm and cold), peak memory and scan throughput.

    Times geoguess at each precision, and with --reference the reference
    geoclip predict() (it re-encodes the 100K gallery on every call), on the
    same photos in one run, each in its own process, taking turns photo by
    photo, and prints the ratios. Build a benchmark model with the real
    ViT-L/14 geometry first if the real weights cannot be downloaded:

      geoguess models build --backbone random:vit-l14 --name bench-vitl14

    [bold]Examples[/]

      geoguess bench --photos ~/Pictures/sample -m bench-vitl14 \\
          --reference benchmarks/reference_worker.py

      geoguess bench --photos a.jpg --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..bench import bench_latency, bench_plan, bench_scan, help_seconds, rows_to_dicts
    from ..output import print_json
    from .render import show_bench

    with _errors():
        files = _photo_files(photos or [])
        plan = bench_plan(device, precision)
        precisions = plan.precisions
        rep = RichReporter()
        rows = bench_latency(
            model,
            files,
            precisions=precisions,
            device=device,
            reference=reference,
            repeats=repeats,
            rounds=rounds,
            reporter=rep,
        )
        scan_rows = []
        if scan_files:
            scan_rows.append(
                bench_scan(
                    model,
                    files,
                    precision=plan.scan_precision,
                    device=device,
                    n_files=scan_files,
                    batch_size=batch_size,
                    reporter=rep,
                )
            )
        help_s = help_seconds()
        if json_out:
            for r in rows_to_dicts(rows):
                print_json({"kind": "latency", **r})
            for r in rows_to_dicts(scan_rows):
                print_json({"kind": "scan", **r})
            print_json({"kind": "startup", "help_s": help_s})
            return
        show_bench(rows, scan_rows, help_s, n_photos=len(files))


# --- geoguess bench search ------------------------------------------------------------


@bench_app.command("search")
def bench_search(
    model: ModelOpt = None,
    gallery: Annotated[
        str | None, typer.Option("--gallery", help="Gallery \\[default: the default one].")
    ] = None,
    levels: Annotated[
        list[str] | None,
        typer.Option(
            "--levels",
            help="Tree configuration (repeat): e.g. 800, 20,100, auto (ours), with "
            "+capsules and/or +gps for the published features and node keys "
            "\\[default: the three published trees and ours].",
        ),
    ] = None,
    beams: Annotated[str, typer.Option("--beams", help="Beam widths.")] = "1,2,4,8,16,24,32",
    queries: Annotated[
        Path | None,
        typer.Option(
            "--queries", help="Real image embeddings (.npy, Q x 512) instead of the proxy."
        ),
    ] = None,
    n_queries: Annotated[
        int, typer.Option("--n-queries", min=1, help="Held-out proxy queries per cosine level.")
    ] = 1000,
    cosines: Annotated[
        str, typer.Option("--cosines", help="Proxy noise levels (cosine to the clean point).")
    ] = "0.95,0.7,0.45,0.3",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=100, help="Use only the first N real gallery points."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for held-out points and noise.")] = 0,
    json_out: RowsJsonOpt = False,
) -> None:
    """Tree search against flat search: agreement, dot products, speed, memory.

    Builds each tree over the gallery with held-out query points removed, and
    compares its top-1 with exact flat search (docs/search.md).

    [bold]Examples[/]

      geoguess bench search

      geoguess bench search --levels auto --beams 8,16,24 --cosines 0.45 --json

      geoguess bench search --limit 20000 --levels 200 --levels auto
    """
    from ..bench_search import DEFAULT_CONFIGS, SearchBenchOptions, run_search_bench
    from ..number_lists import parse_number_list
    from ..output import print_json
    from .render import show_search_bench

    with _errors():
        opts = SearchBenchOptions(
            model=model,
            gallery=gallery,
            configs=tuple(levels) if levels else DEFAULT_CONFIGS,
            beams=parse_number_list(beams, int, "--beams"),
            queries=queries,
            cosines=parse_number_list(cosines, float, "--cosines"),
            n_queries=n_queries,
            limit=limit,
            seed=seed,
        )

        def emit(row: Any) -> None:
            if json_out:
                print_json(row.to_dict())
                sys.stdout.flush()

        rows = run_search_bench(opts, RichReporter(), emit)
        if json_out:
            return
        show_search_bench(rows, queries)
