"""`geoguess eval`: accuracy on a benchmark CSV of images with known coordinates."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .bundles import bundled
from .common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    BatchSizeOpt,
    ModelOptions,
    QuietOpt,
    WorkersOpt,
    _err,
    _errors,
    _note,
    app,
)

if TYPE_CHECKING:
    from ..evaluate import EvalMetrics

# Missing images are often many (dead Flickr links); name a few, count the rest.
_LIST_AT_MOST = 5


def _convention(metrics: EvalMetrics) -> str:
    who = "G3's convention" if metrics.strict_less else "GeoCLIP's convention"
    return (
        f"top-1 prediction; WGS-84 geodesic distance; an image counts when its error is "
        f"{metrics.comparison} the threshold ({who})"
    )


def _counts(metrics: EvalMetrics) -> str:
    text = f"{metrics.n_evaluated} images evaluated"
    extra = [
        f"{n} {what}"
        for n, what in (
            (metrics.n_missing, "missing"),
            (metrics.n_failed, "undecodable"),
            (metrics.n_bad_rows, "bad CSV rows"),
        )
        if n
    ]
    return text + (f" ({', '.join(extra)} excluded)" if extra else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _km(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _show(metrics: EvalMetrics, random_weights: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..evaluate import SCALES
    from ..output import stdout_console

    console = stdout_console()
    acc = metrics.accuracy
    notes = [_counts(metrics), _convention(metrics)]
    if random_weights:
        notes.append("model with random weights: these numbers measure nothing")
    if not console.is_terminal:
        out = [f"# {n}" for n in notes]
        out.append("threshold_km\tscale\taccuracy_pct\tcorrect")
        for t in metrics.thresholds_km:
            scale = SCALES.get(t, "")
            out.append(f"{t:g}\t{scale}\t{_pct(acc[t])}\t{metrics.correct[t]}")
        out.append(f"# median_error_km\t{_km(metrics.median_km)}")
        out.append(f"# mean_error_km\t{_km(metrics.mean_km)}")
        sys.stdout.write("\n".join(out) + "\n")
        return
    table = Table(title=escape(_counts(metrics)), title_justify="left", header_style="bold")
    table.add_column("within", justify="right")
    table.add_column("scale")
    table.add_column("accuracy", justify="right")
    table.add_column("images", justify="right")
    for t in metrics.thresholds_km:
        table.add_row(
            f"{metrics.comparison} {t:g} km",
            SCALES.get(t, ""),
            f"{_pct(acc[t])} %",
            f"{metrics.correct[t]}",
        )
    table.add_section()
    table.add_row("median error", "", f"{_km(metrics.median_km)} km", "")
    table.add_row("mean error", "", f"{_km(metrics.mean_km)} km", "")
    console.print(table)
    for note in notes[1:]:
        console.print(escape(note), style="dim")


@app.command("eval")
@bundled("model_options", ModelOptions)
def eval_cmd(
    csv_file: Annotated[
        Path, typer.Argument(help="CSV of image ids and true coordinates.", show_default=False)
    ],
    images: Annotated[
        Path,
        typer.Option("--images", "-i", help="Folder holding the images.", show_default=False),
    ],
    id_column: Annotated[str, typer.Option("--id-column", help="Image file name column.")] = (
        "IMG_ID"
    ),
    lat_column: Annotated[str, typer.Option("--lat-column", help="Latitude column.")] = "LAT",
    lon_column: Annotated[str, typer.Option("--lon-column", help="Longitude column.")] = "LON",
    swap_latlon: Annotated[
        bool,
        typer.Option("--swap-latlon", help="Read the latitude column as longitude and back."),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="Only the first N rows.", show_default=False),
    ] = None,
    strict_less: Annotated[
        bool,
        typer.Option(
            "--strict-less",
            help="Count an image when its error is < the threshold (G3) instead of <= (GeoCLIP).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object with the metrics.")] = (
        False
    ),
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            help="Also write per-image predictions and errors to this CSV.",
            show_default=False,
        ),
    ] = None,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
    model_options: ModelOptions = ModelOptions(),
) -> None:
    """Measure accuracy on a benchmark (IM2GPS3K, YFCC4K, or your own CSV).

    Reports the share of images whose top-1 prediction lies within 1, 25,
    200, 750 and 2500 km of the truth (WGS-84 geodesic distance, counted
    with <= as GeoCLIP does; --strict-less for G3's <), and the median and
    mean error. Missing or undecodable images are excluded and counted; the
    exit status is then 1.

    [bold]Examples[/]

      geoguess eval im2gps3k_places365.csv --images im2gps3ktest/

      geoguess eval yfcc4k.csv --images yfcc4k/ --swap-latlon --json

      geoguess eval mine.csv --images photos/ --id-column file
      --lat-column lat --lon-column lon --predictions preds.csv
    """
    from ..evaluate import PredictionsWriter, evaluate, read_eval_csv
    from ..model import model_record
    from ..output import print_json, stderr_console
    from ..reporting import Reporter
    from .common import RichReporter

    with _errors():
        eval_set = read_eval_csv(
            csv_file,
            images,
            id_column=id_column,
            lat_column=lat_column,
            lon_column=lon_column,
            limit=limit,
            swap_latlon=swap_latlon,
        )
        if eval_set.swap_warning:
            _note(f"warning: {csv_file}: {eval_set.swap_warning}")
        for problem in eval_set.bad_rows[:_LIST_AT_MOST]:
            _err(f"{csv_file}: {problem}")
        if len(eval_set.bad_rows) > _LIST_AT_MOST:
            _err(f"{csv_file}: ... and {len(eval_set.bad_rows) - _LIST_AT_MOST} more bad rows")
        missing = eval_set.missing
        for s in missing[:_LIST_AT_MOST]:
            _err(f"{images / s.id}: image not found")
        if len(missing) > _LIST_AT_MOST:
            _err(f"... and {len(missing) - _LIST_AT_MOST} more images not found in {images}")

        geo = model_options.open()
        show_progress = not quiet and stderr_console().is_terminal
        reporter = RichReporter(unit="images") if show_progress else Reporter()
        writer = PredictionsWriter(predictions) if predictions is not None else None
        failures: list[str] = []

        def on_prediction(p: Any) -> None:
            if writer is not None:
                writer.write(p)
            if p.status == "failed":
                failures.append(f"{p.sample.path}: {p.error}")
                if len(failures) <= _LIST_AT_MOST:
                    _err(failures[-1])

        try:
            report = evaluate(
                geo,
                eval_set,
                batch_size=batch_size,
                workers=workers,
                strict_less=strict_less,
                reporter=reporter,
                on_prediction=on_prediction,
            )
        finally:
            if writer is not None:
                writer.close()
        if len(failures) > _LIST_AT_MOST:
            _err(f"... and {len(failures) - _LIST_AT_MOST} more images could not be decoded")

    metrics = report.metrics
    if json_out:
        record = metrics.to_dict()
        record["csv"] = str(csv_file)
        record["model"] = model_record(geo)
        print_json(record)
    else:
        _show(metrics, geo.random_weights)
    bad = metrics.n_missing + metrics.n_failed + metrics.n_bad_rows
    raise typer.Exit(EXIT_SOME_FAILED if bad else EXIT_OK)
