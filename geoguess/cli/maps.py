"""`geoguess map`: draw a scan's results (CSV, JSON Lines or GeoJSON) on a map."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import EXIT_OK, EXIT_SOME_FAILED, TilesOpt, _err, _errors, _note, app


@app.command("map")
def map_cmd(
    results: Annotated[
        str,
        typer.Argument(
            help="A scan's output: CSV, JSON Lines or GeoJSON, or a folder of shards; "
            "'-' reads stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="The map to write: .html or .png.", show_default=False),
    ],
    tiles: TilesOpt = False,
    thumbnails: Annotated[
        bool,
        typer.Option(
            "--thumbnails/--no-thumbnails",
            help="Small pictures of the photos in the popups (read from their paths).",
        ),
    ] = True,
    title: Annotated[
        str | None,
        typer.Option(
            "--title",
            help="Title shown on the map [default: the results file].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw a scan's results on a map, one marker per photo coloured by its error.

    The error is the distance to the photo's EXIF GPS, where it has one.

    [bold]Examples[/]

      geoguess map places.csv -o places.html

      geoguess map trip.jsonl -o trip.png

      geoguess scan trip/ | geoguess map - -o trip.html
    """
    from ..maps import map_format, write_scan_map
    from ..results_reader import read_results

    with _errors():
        map_format(output)
        read = read_results(results)
        for problem in read.problems:
            _err(problem)
        written = write_scan_map(
            read.records,
            output,
            title=title or ("<stdin>" if results == "-" else results),
            tiles=tiles,
            random_weights=read.random_weights,
            with_thumbnails=thumbnails,
        )
    located = sum(1 for r in read.records if r.get("predictions"))
    shown = f"{len(read.records)} photos" + (
        f" ({located} located)" if located < len(read.records) else ""
    )
    _note(f"map of {shown} written to {written}")
    raise typer.Exit(EXIT_SOME_FAILED if read.problems else EXIT_OK)
