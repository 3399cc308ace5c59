"""`geoguess models ...`: build, install, list, inspect, verify and remove model sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import (
    EXIT_SETUP,
    DeviceOpt,
    JsonListOpt,
    JsonObjectOpt,
    RichReporter,
    _err,
    _errors,
    _note,
    models_app,
)


@models_app.command("build")
def models_build(
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Hugging Face hub id, a local Hugging Face-format CLIP folder, or "
            "random:vit-l14|vit-b32|tiny (tests and benchmarks) "
            "\\[default: openai/clip-vit-large-patch14]."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Name of the model set \\[default: geoclip-vit-l14; random-<geometry> for "
            "random backbones]."
        ),
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision of the backbone.")] = None,
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision", help="Image encoder precisions to build (repeat): fp32, int8, fp16."
        ),
    ] = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe TOML (see models/).")] = None,
    geoclip: Annotated[
        str | None,
        typer.Option(
            "--geoclip",
            help="GeoCLIP's weights: a geoclip wheel, a folder, or a hub release id "
            "\\[default: the installed geoclip package, else geoclip 1.3.0 from the "
            "package index, checked by sha256].",
        ),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Folder of photos to compare precisions on.")
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Download nothing: use the Hugging Face cache and local files only "
            "(also when HF_HUB_OFFLINE=1).",
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an installed set of the same name.")] = False,
    gallery_limit: Annotated[
        int | None,
        typer.Option(min=1, help="Keep only the first N gallery points (quick test builds)."),
    ] = None,
) -> None:
    """Build a model set: fetch weights, write ONNX graphs, quantise, install.

    Downloads (resumable, checked by sha256) what is not on this machine yet:
    the CLIP ViT-L/14 weights from the Hugging Face hub (HF_HOME, HF_ENDPOINT
    and HF_TOKEN apply) and GeoCLIP's weights from the package index, then
    embeds the gallery.

    [bold]Examples[/]

      geoguess models build

      geoguess models build --backbone ~/clip-vit-large-patch14 --geoclip ~/geoclip.whl --offline

      geoguess models build --precision fp32 --precision int8 --precision fp16 --force
    """
    with _errors():
        from ..builder.build import BuildOptions, build_model_set
        from ..builder.recipe import DEFAULT_RECIPE, load_recipe

        rec = load_recipe(recipe) if recipe else DEFAULT_RECIPE
        opts = BuildOptions(
            name=name,
            backbone=backbone,
            revision=revision,
            precisions=tuple(precision) if precision else None,
            geoclip=geoclip,
            calibration_dir=calibration,
            offline=offline,
            # Running the build command is the user's consent to its downloads.
            allow_download=True,
            force=force,
            gallery_limit=gallery_limit,
        )
        installed = build_model_set(opts, rec, RichReporter())
        typer.echo(f"installed {installed.name} at {installed.path}", err=True)


@models_app.command("list")
def models_list(json_out: JsonListOpt = False) -> None:
    """List installed model sets, with their size and that of their derived cache."""
    from .. import derived
    from ..output import print_json
    from ..store import default_model_name, models_dir, scan_models
    from .render import show_model_list

    with _errors():
        models, unreadable = scan_models()
        cached = derived.entries()
        summaries = [_model_summary(m, cached) for m in models]
        for name, exc in unreadable.items():
            # Not a usable set, but not one to hide either: the user must repair it.
            _err(f"model set {name!r} cannot be used: {exc}")
        if json_out:
            for s in summaries:
                print_json(s)
            return
        if not models:
            if not unreadable:
                typer.echo(f"no model sets in {models_dir()}; run: geoguess models build", err=True)
            return
        show_model_list(
            summaries,
            default_model_name(),
            derived.cache_dir(),
            derived.size_bytes(cached),
            len(cached),
        )


def _model_summary(m: Any, cached: list[Any] | None = None) -> dict[str, Any]:
    from .. import derived
    from ..store import verify_failures

    prov = m.manifest.raw.get("provenance", {}).get("backbone", {})
    backbone = prov.get("id") or prov.get("path") or f"random:{prov.get('geometry')}"
    sources = derived.sources_of(m)
    entries = derived.entries() if cached is None else cached
    return {
        "name": m.name,
        "path": str(m.path),
        "precisions": list(m.manifest.image_encoders),
        "galleries": list(m.manifest.galleries),
        "size_bytes": m.size_bytes(),
        "cache_bytes": derived.size_bytes([e for e in entries if e.source_sha256 in sources]),
        "backbone": backbone,
        "random_weights": m.manifest.random_weights,
        "damaged": verify_failures(m.path) is not None,
    }


@models_app.command("info")
def models_info(
    name: Annotated[
        str | None, typer.Argument(help="Model set \\[default: the default one].")
    ] = None,
    device: DeviceOpt = "auto",
    json_out: JsonObjectOpt = False,
) -> None:
    """Show a model set's manifest summary, quality figures and provider in use."""
    from ..output import print_json
    from ..store import get_model
    from .render import show_model_info

    with _errors():
        from ..providers import available_providers, providers_for

        m = get_model(name)
        raw = m.manifest.raw
        info = _model_summary(m)
        info.update(
            {
                "created": raw.get("created"),
                "logit_scale": m.manifest.logit_scale,
                "quality": raw.get("quality", {}),
                "provenance": raw.get("provenance", {}),
                "providers_available": available_providers(),
                "provider": providers_for(device)[0],
                "files": {k: v["size"] for k, v in raw["files"].items()},
            }
        )
        if json_out:
            print_json(info)
            return
        show_model_info(info, m.manifest)


@models_app.command("verify")
def models_verify(
    name: Annotated[
        str | None, typer.Argument(help="Model set \\[default: the default one].")
    ] = None,
) -> None:
    """Check every file of a model set, and its derived cache, against the sha256s.

    A damaged file makes geoguess refuse the set until a later verify finds it
    whole (or the set is rebuilt or reinstalled with --force). Damaged cache
    entries are moved aside and rebuilt at their next use.
    """
    from .. import derived
    from ..store import verify_model

    with _errors():
        model, problems = verify_model(name)
        for p in problems:
            _err(str(p))
        checked, cache_problems = derived.verify_entries(model)
        for line in cache_problems:
            _note(line)
        if problems:
            _err(
                f"model set {model.name!r} is refused until repaired: restore the files and "
                f"run `geoguess models verify {model.name}` again, or rebuild or reinstall "
                "it with --force"
            )
            raise typer.Exit(EXIT_SETUP)
        typer.echo(
            f"{model.name}: manifest and {len(model.manifest.files)} files OK; derived cache: "
            f"{checked - len(cache_problems)} of {checked} entries OK",
            err=True,
        )


@models_app.command("remove")
def models_remove(
    name: Annotated[str, typer.Argument(help="Model set to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete an installed model set and its derived cache entries."""
    from .. import derived
    from ..store import get_model, list_models, remove_model
    from .render import megabytes

    with _errors():
        m = get_model(name)
        if not yes and not typer.confirm(f"Delete {m.path}?", err=True):
            raise typer.Exit(EXIT_SETUP)
        remove_model(name)
        freed = derived.remove_entries_of(m, keep=list_models())
        typer.echo(
            f"removed {name}" + (f" and {megabytes(freed)} of derived cache" if freed else ""),
            err=True,
        )


cache_app = typer.Typer(
    help="Show or clear the derived cache (optimised graphs, float32 galleries).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app.add_typer(cache_app, name="cache")


@cache_app.callback(invoke_without_command=True)
def models_cache(
    ctx: typer.Context,
    json_out: JsonObjectOpt = False,
) -> None:
    """Where the derived cache is, its size, and what it holds for which model set.

    Everything in it is made again when needed; `geoguess models cache clear` empties it.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .. import derived
    from ..output import print_json
    from ..store import list_models
    from .render import show_derived_cache

    with _errors():
        root = derived.cache_dir()
        entries = derived.entries()
        owners = {m.name: derived.sources_of(m) for m in list_models()}
        rows = [
            {
                "path": str(e.path),
                "kind": e.kind,
                "size_bytes": e.size_bytes,
                "model_sets": [n for n, shas in owners.items() if e.source_sha256 in shas],
            }
            for e in entries
        ]
        if json_out:
            info = {
                "path": None if root is None else str(root),
                "size_bytes": derived.size_bytes(entries),
                "entries": rows,
            }
            print_json(info)
            return
        show_derived_cache(root, derived.size_bytes(entries), rows)


@cache_app.command("clear")
def models_cache_clear() -> None:
    """Delete everything in the derived cache (it is rebuilt as needed)."""
    from .. import derived
    from .render import megabytes

    with _errors():
        freed = derived.clear()
        typer.echo(f"cleared the derived cache ({megabytes(freed)})", err=True)


@models_app.command("install")
def models_install(
    source: Annotated[str, typer.Argument(help="A built model folder, a .tar(.gz), or a URL.")],
    name: Annotated[str | None, typer.Option(help="Install under this name.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an installed set of the same name.")] = False,
) -> None:
    """Install a built model set, checking each file's sha256 against its manifest."""
    from ..store import install_model

    with _errors():
        m = install_model(source, name=name, force=force)
        typer.echo(f"installed {m.name} at {m.path}", err=True)
