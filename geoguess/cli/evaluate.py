"""`geoguess eval`: accuracy on a benchmark CSV of images with known coordinates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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

# Missing images are often many (dead Flickr links); name a few, count the rest.
_LIST_AT_MOST = 5


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
    from .render import show_metrics

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
        _some_errors(
            [f"{csv_file}: {problem}" for problem in eval_set.bad_rows],
            lambda n: f"{csv_file}: ... and {n} more bad rows",
        )
        _some_errors(
            [f"{images / s.id}: image not found" for s in eval_set.missing],
            lambda n: f"... and {n} more images not found in {images}",
        )

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
        _some_errors(
            failures, lambda n: f"... and {n} more images could not be decoded", shown=True
        )

    metrics = report.metrics
    if json_out:
        record = metrics.to_dict()
        record["csv"] = str(csv_file)
        record["model"] = model_record(geo)
        print_json(record)
    else:
        show_metrics(metrics, geo.random_weights)
    bad = metrics.n_missing + metrics.n_failed + metrics.n_bad_rows
    raise typer.Exit(EXIT_SOME_FAILED if bad else EXIT_OK)


def _some_errors(lines: list[str], more: Callable[[int], str], *, shown: bool = False) -> None:
    """The first few error lines, then one line counting the rest (``more(n)``);
    ``shown``: the first few were printed as they happened."""
    if not shown:
        for line in lines[:_LIST_AT_MOST]:
            _err(line)
    if len(lines) > _LIST_AT_MOST:
        _err(more(len(lines) - _LIST_AT_MOST))
