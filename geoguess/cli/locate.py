"""`geoguess locate` (the default command)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from .bundles import bundled
from .common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    JsonOpt,
    MapOpt,
    ModelOptions,
    TilesOpt,
    TopKOpt,
    _err,
    _errors,
    _note,
    app,
)
from .llm_options import LLMOptions, YesOpt
from .xmp import XmpOptions


@app.command("locate")
@bundled("xmp_options", XmpOptions)
@bundled("llm_options", LLMOptions)
@bundled("model_options", ModelOptions)
def locate_cmd(
    photos: Annotated[list[str], typer.Argument(help="Photo files; '-' reads one from stdin.")],
    top_k: TopKOpt = 5,
    json_out: JsonOpt = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="table, json (as --json) or geojson (one FeatureCollection: a Feature "
            "per candidate and for the EXIF GPS) \\[default: table].",
            show_default=False,
        ),
    ] = None,
    model_options: ModelOptions = ModelOptions(),
    llm_options: LLMOptions = LLMOptions(),
    yes: YesOpt = False,
    map_file: MapOpt = None,
    tiles: TilesOpt = False,
    xmp_options: XmpOptions = XmpOptions(),
) -> None:
    """Locate photos: a table of candidate places per photo (the default command).

    Under each table: the spread of the probability around the best guess, a
    confidence word, where the probability lies by country and region, and the
    photo's EXIF GPS with the error of the guess when it has one.

    [bold]Examples[/]

      geoguess photo.jpg

      geoguess locate --top-k 10 --precision fp32 a.jpg b.heic

      cat photo.jpg | geoguess --json -

      geoguess photo.jpg --format geojson > photo.geojson

      geoguess photo.jpg --map photo.html        open it in any browser, offline

      geoguess photo.jpg --llm gpt-4o          refine with a vision LLM

      geoguess photo.jpg --xmp                 the guess into photo.jpg.xmp
    """
    import contextlib

    from ..errors import UsageError
    from ..images import read_stream
    from ..locate import locate_batches
    from ..model import model_record
    from ..output import print_json, stdout_console
    from .render import show_refinement, show_result

    with _errors(), contextlib.ExitStack() as stack:
        fmt = (fmt or ("json" if json_out else "table")).lower()
        if fmt not in ("table", "json", "geojson"):
            raise UsageError(f"unknown format {fmt!r} (choose table, json or geojson)")
        json_out = fmt == "json"
        features: list[dict[str, Any]] = []
        model_options.check()
        if map_file is not None:
            from ..maps import map_format

            map_format(map_file)  # a wrong suffix is known before any work
        if xmp_options.sidecars() is not None and "-" in photos:
            raise UsageError("--xmp writes a sidecar beside each photo file; stdin has none")
        if "-" in photos and sys.stdin.isatty():
            raise UsageError(
                "'-' reads a photo from stdin, but stdin is a terminal; pipe one in: "
                "cat photo.jpg | geoguess -"
            )
        missing = [p for p in photos if p != "-" and not os.path.lexists(p)]
        if len(missing) == len(photos):
            # Nothing to locate: say so before asking for (or loading) a model set.
            for p in missing:
                _err(f"{p}: no such file")
            raise typer.Exit(EXIT_SOME_FAILED)
        geo = model_options.open(yes=yes)
        refiner = llm_options.open(yes=yes)
        if refiner is not None:
            stack.enter_context(refiner)
        sources: list[Any] = []
        for p in photos:
            sources.append(read_stream(sys.stdin.buffer) if p == "-" else p)
        names = ["<stdin>" if p == "-" else p for p in photos]
        failed = 0
        sidecars = xmp_options.tally(model_record(geo))
        mapped: list[Any] = []
        console = stdout_console()
        for batch, results in locate_batches(geo, sources, top_k=top_k, names=names):
            if refiner is not None:
                results = refiner.refine_results(geo, results, batch)
            for res in results:
                if map_file is not None:
                    mapped.append(res)
                if res.error:
                    failed += 1
                    _err(f"{res.file}: {res.error}")
                elif sidecars is not None:
                    sidecars.write(res)
                if fmt == "geojson":
                    from ..geojson import photo_features

                    features.extend(photo_features(res.to_dict()))
                elif json_out:
                    rec = res.to_dict()
                    rec["model"] = model_record(geo)
                    print_json(rec)
                elif not res.error:
                    show_result(res, console)
                    if res.llm is not None:
                        show_refinement(res.llm, console)
                sys.stdout.flush()
        if fmt == "geojson":
            from ..geojson import collection

            print_json(collection(features))
        if map_file is not None:
            from ..maps import write_locate_map

            stdin = {n: s for n, s in zip(names, sources) if isinstance(s, bytes)}
            written = write_locate_map(mapped, map_file, geo=geo, sources=stdin, tiles=tiles)
            _note(f"map written to {written}")
        if refiner is not None and len(sources) > 1:
            from .render import usage_text

            _note(f"total {usage_text(refiner.usage)}")
        if sidecars is not None:
            sidecars.print_summary()
            failed += sidecars.failed
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)
