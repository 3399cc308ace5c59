"""`geoguess locate` (the default command)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from .common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    DeviceOpt,
    GalleryOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    TopKOpt,
    VerboseOpt,
    _err,
    _errors,
    app,
    open_geolocator,
)


@app.command("locate")
def locate_cmd(
    photos: Annotated[list[str], typer.Argument(help="Photo files; '-' reads one from stdin.")],
    top_k: TopKOpt = 5,
    json_out: JsonOpt = False,
    model: ModelOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = "auto",
    gallery: GalleryOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Locate photos: a table of candidate places per photo (the default command).

    [bold]Examples[/]

      geoguess photo.jpg

      geoguess locate --top-k 10 --precision fp32 a.jpg b.heic

      cat photo.jpg | geoguess --json -
    """
    from ..locate import locate_many
    from ..output import json_line, show_result, stdout_console

    with _errors():
        geo = open_geolocator(model, precision, device, gallery, verbose)
        sources: list[Any] = []
        for p in photos:
            sources.append(sys.stdin.buffer.read() if p == "-" else p)
        names = ["<stdin>" if p == "-" else p for p in photos]
        failed = 0
        console = stdout_console()
        # Batches bound memory for long argument lists while keeping the encoder busy.
        for start in range(0, len(sources), 16):
            for res in locate_many(
                geo, sources[start : start + 16], top_k=top_k, names=names[start : start + 16]
            ):
                if res.error:
                    failed += 1
                    _err(f"{res.file}: {res.error}")
                if json_out:
                    rec = res.to_dict()
                    rec["model"] = {
                        "name": geo.model.name,
                        "precision": geo.precision,
                        "random_weights": geo.random_weights,
                    }
                    sys.stdout.write(json_line(rec) + "\n")
                elif not res.error:
                    show_result(res, console)
                sys.stdout.flush()
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)
