"""`geoguess models gallery ...` and `geoguess models tree`: galleries and search trees."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import EXIT_SETUP, JsonListOpt, ModelOpt, RichReporter, _errors, models_app

gallery_app = typer.Typer(
    no_args_is_help=True,
    help="Add, list and remove the GPS galleries of a model set.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app.add_typer(gallery_app, name="gallery")

LevelsOpt = Annotated[
    str | None,
    typer.Option(
        "--levels",
        help="Tree shape: clusters at the top, then children per node, e.g. 800, 20,100 "
        "or 200,10 \\[default: auto, about 25 points per leaf cluster].",
    ),
]


@gallery_app.command("add")
def gallery_add(
    name: Annotated[str, typer.Argument(help="Name of the new gallery.")],
    csv_path: Annotated[
        Path, typer.Argument(help="CSV with LAT and LON columns (and optionally NAME).")
    ],
    model: ModelOpt = None,
    levels: LevelsOpt = None,
    force: Annotated[bool, typer.Option(help="Replace a gallery of the same name.")] = False,
) -> None:
    """Embed your own coordinates and add them to a model set as a gallery.

    Predict with it using --gallery NAME.

    [bold]Examples[/]

      geoguess models gallery add alps alps.csv

      geoguess locate --gallery alps photo.jpg
    """
    from ..galleries import add_gallery

    with _errors():
        entry = add_gallery(
            name, csv_path, model=model, levels=levels, force=force, reporter=RichReporter()
        )
        typer.echo(
            f"added gallery {name} ({entry['size']:,} points, tree {entry['default_tree']})",
            err=True,
        )


@gallery_app.command("list")
def gallery_list(model: ModelOpt = None, json_out: JsonListOpt = False) -> None:
    """List the galleries of a model set and their search trees."""
    from ..galleries import list_galleries
    from ..output import print_json
    from .render import show_gallery_list

    with _errors():
        rows = list_galleries(model)
        if json_out:
            for r in rows:
                print_json(r)
            return
        show_gallery_list(rows)


@gallery_app.command("remove")
def gallery_remove(
    name: Annotated[str, typer.Argument(help="Gallery to delete.")],
    model: ModelOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a gallery (and its trees) from a model set."""
    from ..galleries import remove_gallery

    with _errors():
        if not yes and not typer.confirm(f"Delete gallery {name}?", err=True):
            raise typer.Exit(EXIT_SETUP)
        remove_gallery(name, model=model)
        typer.echo(f"removed gallery {name}", err=True)


@models_app.command("tree")
def models_tree(
    levels: LevelsOpt = None,
    gallery: Annotated[
        str | None, typer.Option("--gallery", help="Gallery \\[default: the default one].")
    ] = None,
    model: ModelOpt = None,
    features: Annotated[
        str,
        typer.Option(
            help="Cluster on 'embedding' (full location embeddings) or 'capsules' "
            "(per-sigma capsules, the published scheme)."
        ),
    ] = "embedding",
    node: Annotated[
        str,
        typer.Option(
            help="Node keys: 'mean' (normalised mean member embedding) or 'gps' "
            "(mean position, embedded; the published scheme)."
        ),
    ] = "mean",
    default: Annotated[bool, typer.Option(help="Make it the tree that --search tree uses.")] = True,
) -> None:
    """(Re)build the search tree of a gallery for an installed model set.

    Deterministic: rebuilding the same levels gives the same files.

    [bold]Examples[/]

      geoguess models tree

      geoguess models tree --levels 20,100

      geoguess locate --search tree --beam 16 photo.jpg
    """
    from ..galleries import build_gallery_tree

    with _errors():
        entry = build_gallery_tree(
            gallery,
            levels,
            model=model,
            features=features,
            node=node,
            make_default=default,
            reporter=RichReporter(),
        )
        nodes = " x ".join(f"{n:,}" for n in entry["nodes_per_level"])
        typer.echo(
            f"built tree {entry['key']} of gallery {entry['gallery']} ({nodes} nodes)", err=True
        )
