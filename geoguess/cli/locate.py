"""`geoguess locate` (the default command)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from .common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    BeamOpt,
    DeviceOpt,
    ExactDecodeOpt,
    GalleryOpt,
    JsonOpt,
    MapOpt,
    ModelOpt,
    PrecisionOpt,
    RawCandidatesOpt,
    SearchOpt,
    TilesOpt,
    TopKOpt,
    VerboseOpt,
    _err,
    _errors,
    _note,
    app,
    check_options,
    open_geolocator,
)
from .llm_options import (
    DEFAULT_REFS,
    LLMBaseUrlOpt,
    LLMConcurrencyOpt,
    LLMOpt,
    LLMRefsOpt,
    LLMRetriesOpt,
    LLMSamplesOpt,
    LLMTemperatureOpt,
    LLMTimeoutOpt,
    NoCacheOpt,
    YesOpt,
    open_refiner,
)


@app.command("locate")
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
    model: ModelOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = "auto",
    gallery: GalleryOpt = None,
    search: SearchOpt = "auto",
    beam: BeamOpt = None,
    exact_decode: ExactDecodeOpt = False,
    raw_candidates: RawCandidatesOpt = False,
    verbose: VerboseOpt = False,
    llm: LLMOpt = None,
    llm_base_url: LLMBaseUrlOpt = None,
    llm_samples: LLMSamplesOpt = 2,
    llm_temperature: LLMTemperatureOpt = 1.0,
    llm_refs: LLMRefsOpt = DEFAULT_REFS,
    llm_concurrency: LLMConcurrencyOpt = 4,
    llm_timeout: LLMTimeoutOpt = 60.0,
    llm_retries: LLMRetriesOpt = 3,
    no_cache: NoCacheOpt = False,
    yes: YesOpt = False,
    map_file: MapOpt = None,
    tiles: TilesOpt = False,
) -> None:
    """Locate photos: a table of candidate places per photo (the default command).

    [bold]Examples[/]

      geoguess photo.jpg

      geoguess locate --top-k 10 --precision fp32 a.jpg b.heic

      cat photo.jpg | geoguess --json -

      geoguess photo.jpg --format geojson > photo.geojson

      geoguess photo.jpg --map photo.html        open it in any browser, offline

      geoguess photo.jpg --llm gpt-4o          refine with a vision LLM
    """
    import contextlib

    from ..errors import UsageError
    from ..images import read_stream
    from ..locate import locate_many
    from ..output import print_json, show_refinement, show_result, stdout_console

    with _errors(), contextlib.ExitStack() as stack:
        fmt = (fmt or ("json" if json_out else "table")).lower()
        if fmt not in ("table", "json", "geojson"):
            raise UsageError(f"unknown format {fmt!r} (choose table, json or geojson)")
        json_out = fmt == "json"
        features: list[dict[str, Any]] = []
        check_options(precision, device)
        if map_file is not None:
            from ..maps import map_format

            map_format(map_file)  # a wrong suffix is known before any work
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
        geo = open_geolocator(
            model,
            precision,
            device,
            gallery,
            verbose,
            search,
            beam,
            exact_decode,
            yes=yes,
            raw_candidates=raw_candidates,
        )
        refiner = None
        if llm:
            refiner = open_refiner(
                llm,
                base_url=llm_base_url,
                samples=llm_samples,
                temperature=llm_temperature,
                refs=llm_refs,
                concurrency=llm_concurrency,
                timeout=llm_timeout,
                retries=llm_retries,
                no_cache=no_cache,
                yes=yes,
            )
            stack.enter_context(refiner)
        sources: list[Any] = []
        for p in photos:
            sources.append(read_stream(sys.stdin.buffer) if p == "-" else p)
        names = ["<stdin>" if p == "-" else p for p in photos]
        failed = 0
        mapped: list[Any] = []
        console = stdout_console()
        # Batches bound memory for long argument lists while keeping the encoder busy.
        for start in range(0, len(sources), 16):
            batch, batch_names = sources[start : start + 16], names[start : start + 16]
            results = locate_many(geo, batch, top_k=top_k, names=batch_names)
            if refiner is not None:
                results = refiner.refine_results(geo, results, batch)
            for res in results:
                if map_file is not None:
                    mapped.append(res)
                if res.error:
                    failed += 1
                    _err(f"{res.file}: {res.error}")
                if fmt == "geojson":
                    from ..geojson import photo_features

                    features.extend(photo_features(res.to_dict()))
                elif json_out:
                    rec = res.to_dict()
                    rec["model"] = {
                        "name": geo.model.name,
                        "precision": geo.precision,
                        "random_weights": geo.random_weights,
                    }
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
            from ..output import usage_text

            _note(f"total {usage_text(refiner.usage)}")
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)
