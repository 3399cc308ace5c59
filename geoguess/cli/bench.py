"""`geoguess bench`: speed and memory, measured against baselines in the same run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, JsonOpt, ModelOpt, RichReporter, _errors, app

bench_app = typer.Typer(
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
)
app.add_typer(bench_app, name="bench")


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
        bool, typer.Option("--reference/--no-reference", help="Also time geoclip's predict().")
    ] = True,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes over the photos.")] = 2,
    scan_files: Annotated[
        int, typer.Option(min=0, help="Files for the scan-throughput run (0 skips it).")
    ] = 48,
    batch_size: Annotated[int, typer.Option(min=1, help="Scan batch size.")] = 16,
    json_out: JsonOpt = False,
) -> None:
    """Per-image latency (warm and cold), peak memory and scan throughput.

    Times the reference geoclip predict() (it re-encodes the 100K gallery on every call)
    and geoguess at each precision on the same photos in one run, each in its own
    process, and prints the ratios. Build a benchmark model with the real ViT-L/14
    geometry first if the real weights cannot be downloaded:

      geoguess models build --backbone random:vit-l14 --name bench-vitl14

    [bold]Examples[/]

      geoguess bench --photos ~/Pictures/sample -m bench-vitl14

      geoguess bench --photos a.jpg --no-reference --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..bench import bench_latency, bench_scan, help_seconds, rows_to_dicts
    from ..output import json_line, print_table, stdout_console
    from ..providers import providers_for

    with _errors():
        files = _photo_files(photos or [])
        on_cuda = providers_for(device)[0] == "CUDAExecutionProvider"
        precisions = precision or (["fp16", "fp32"] if on_cuda else ["fp32", "int8"])
        rep = RichReporter()
        rows = bench_latency(
            model,
            files,
            precisions=precisions,
            device=device,
            reference=reference,
            repeats=repeats,
            reporter=rep,
        )
        scan_rows = []
        if scan_files:
            # The precision users run by default on this device.
            scan_rows.append(
                bench_scan(
                    model,
                    files,
                    precision=precisions[-1] if not on_cuda else precisions[0],
                    device=device,
                    n_files=scan_files,
                    batch_size=64 if on_cuda else batch_size,
                    reporter=rep,
                )
            )
        help_s = help_seconds()
        if json_out:
            for r in rows_to_dicts(rows):
                sys.stdout.write(json_line({"kind": "latency", **r}) + "\n")
            for r in rows_to_dicts(scan_rows):
                sys.stdout.write(json_line({"kind": "scan", **r}) + "\n")
            sys.stdout.write(json_line({"kind": "startup", "help_s": help_s}) + "\n")
            return
        console = stdout_console()
        columns = [
            "variant",
            "provider",
            "warm ms/image",
            "speed-up",
            "cold start s",
            "CLI cold s",
            "peak RSS MB",
            "cosine to fp32",
        ]
        table_rows = [
            [
                r.variant,
                r.device,
                f"{r.warm_ms:,.0f}",
                f"{r.speedup:.1f}x" if r.speedup else "",
                f"{r.cold_s:.2f}",
                f"{r.cli_cold_s:.2f}" if r.cli_cold_s else "",
                f"{r.peak_rss_mb:,.0f}",
                f"{r.cosine_to_fp32:.4f}" if r.cosine_to_fp32 is not None else "",
            ]
            for r in rows
        ]
        print_table(
            console,
            columns,
            table_rows,
            title=f"Per image, {len(files)} photos",
            right=set(columns[2:]),
        )
        for s in scan_rows:
            console.print(
                f"Scan ({s.precision}, batch {s.batch_size}, {s.files} files): "
                f"{s.scan_files_per_s:.2f} files/s against {s.encoder_images_per_s:.2f} "
                f"images/s for the bare encoder on pre-decoded tensors = {s.ratio:.0%}; "
                f"time outside the encoder {s.outside_encoder_share:.0%}; "
                f"peak RSS {s.peak_rss_mb:,.0f} MB"
            )
        console.print(f"geoguess --help: {help_s:.2f} s")
