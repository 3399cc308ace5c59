"""`geoguess models ...`: build, install, list, inspect, verify and remove model sets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import (
    EXIT_SETUP,
    DeviceOpt,
    JsonOpt,
    RichReporter,
    _err,
    _errors,
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
    """Build a model set: fetch the weights, write the ONNX graphs, quantise, embed the
    gallery, install.

    Downloads (resumable, checked by sha256) what is not on this machine yet: the CLIP
    ViT-L/14 weights from the Hugging Face hub (HF_HOME, HF_ENDPOINT and HF_TOKEN
    apply) and GeoCLIP's weights from the package index.

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
def models_list(json_out: JsonOpt = False) -> None:
    """List installed model sets."""
    from ..output import json_line, print_table, stdout_console
    from ..store import default_model_name, list_models, models_dir

    with _errors():
        models = list_models()
        if json_out:
            for m in models:
                sys.stdout.write(json_line(_model_summary(m)) + "\n")
            return
        if not models:
            typer.echo(f"no model sets in {models_dir()}; run: geoguess models build", err=True)
            return
        default = default_model_name()
        rows = []
        for m in models:
            s = _model_summary(m)
            rows.append(
                [
                    m.name + (" (default)" if m.name == default else ""),
                    ", ".join(s["precisions"]),
                    ", ".join(s["galleries"]),
                    f"{s['size_bytes'] / 1e6:,.0f} MB",
                    s["backbone"] + (" (random weights)" if s["random_weights"] else ""),
                    s["path"],
                ]
            )
        print_table(
            stdout_console(),
            ["name", "precisions", "galleries", "size", "backbone", "path"],
            rows,
            right={"size"},
        )


def _model_summary(m: Any) -> dict[str, Any]:
    prov = m.manifest.raw.get("provenance", {}).get("backbone", {})
    backbone = prov.get("id") or prov.get("path") or f"random:{prov.get('geometry')}"
    return {
        "name": m.name,
        "path": str(m.path),
        "precisions": list(m.manifest.image_encoders),
        "galleries": list(m.manifest.galleries),
        "size_bytes": m.size_bytes(),
        "backbone": backbone,
        "random_weights": m.manifest.random_weights,
    }


@models_app.command("info")
def models_info(
    name: Annotated[
        str | None, typer.Argument(help="Model set \\[default: the default one].")
    ] = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Show a model set's manifest summary, quality figures and the provider in use."""
    from ..output import json_line
    from ..store import get_model

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
            sys.stdout.write(json_line(info) + "\n")
            return
        lines = [
            f"name         {info['name']}",
            f"path         {info['path']}",
            f"created      {info['created']}",
            f"backbone     {info['backbone']}"
            + ("  (RANDOM WEIGHTS)" if info["random_weights"] else ""),
            f"precisions   {', '.join(info['precisions'])}",
            "galleries    "
            + ", ".join(
                f"{g} ({e.get('size', '?'):,} points)" for g, e in m.manifest.galleries.items()
            ),
            f"size         {info['size_bytes'] / 1e6:,.1f} MB",
            f"provider     {info['provider']} "
            f"(available: {', '.join(info['providers_available'])})",
        ]
        for prec, q in info["quality"].items():
            if "top1_agreement" in q:
                lines.append(
                    f"{prec:<12} cosine to fp32 {q['cosine_mean']:.4f}, top-1 agreement "
                    f"{q['top1_agreement']:.3f}, top-5 overlap {q['top5_overlap']:.3f} "
                    f"({q.get('scheme', '')})"
                )
        typer.echo("\n".join(lines))


@models_app.command("verify")
def models_verify(
    name: Annotated[
        str | None, typer.Argument(help="Model set \\[default: the default one].")
    ] = None,
) -> None:
    """Check every file of a model set against the sha256 in its manifest."""
    from ..store import verify_model

    with _errors():
        model, problems = verify_model(name)
        for p in problems:
            _err(str(p))
        if problems:
            raise typer.Exit(EXIT_SETUP)
        typer.echo(f"{model.name}: {len(model.manifest.files)} files OK", err=True)


@models_app.command("remove")
def models_remove(
    name: Annotated[str, typer.Argument(help="Model set to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete an installed model set."""
    from ..store import get_model, remove_model

    with _errors():
        m = get_model(name)
        if not yes and not typer.confirm(f"Delete {m.path}?", err=True):
            raise typer.Exit(EXIT_SETUP)
        remove_model(name)
        typer.echo(f"removed {name}", err=True)


@models_app.command("install")
def models_install(
    source: Annotated[str, typer.Argument(help="A built model folder, a .tar(.gz), or a URL.")],
    name: Annotated[str | None, typer.Option(help="Install under this name.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an installed set of the same name.")] = False,
) -> None:
    """Install a built model set, checking every file's sha256 against its manifest."""
    from ..store import install_model

    with _errors():
        m = install_model(source, name=name, force=force)
        typer.echo(f"installed {m.name} at {m.path}", err=True)
