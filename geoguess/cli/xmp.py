"""XMP sidecars on the command line: the ``--xmp`` options of ``locate`` and ``scan``
(one bundle) and ``geoguess xmp RESULTS``, which writes sidecars from a reviewed scan."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from .common import EXIT_OK, EXIT_SOME_FAILED, _err, _errors, _note, app

if TYPE_CHECKING:
    from ..xmp import SidecarOptions

_PANEL = "XMP sidecars"
_STYLE_HELP = (
    "Sidecar names: append (photo.jpg.xmp: darktable, digiKam) or replace "
    "(photo.xmp: Lightroom, Capture One)."
)

XmpOpt = Annotated[
    bool,
    typer.Option(
        "--xmp",
        help="Write each located photo's best guess to an XMP sidecar beside it, for "
        "photo libraries (photos with EXIF GPS are left alone). The photo is never "
        "changed; an existing sidecar keeps its other tags.",
        rich_help_panel=_PANEL,
    ),
]
XmpAllOpt = Annotated[
    bool,
    typer.Option(
        "--xmp-all", help="With --xmp: also photos that have EXIF GPS.", rich_help_panel=_PANEL
    ),
]
XmpStyleOpt = Annotated[str, typer.Option("--xmp-style", help=_STYLE_HELP, rich_help_panel=_PANEL)]
XmpOverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--xmp-overwrite",
        help="With --xmp: replace GPS already in a sidecar.",
        rich_help_panel=_PANEL,
    ),
]


@dataclass(frozen=True)
class XmpOptions:
    """``--xmp`` and its companions, as ``locate`` and ``scan`` take them."""

    xmp: XmpOpt = False
    xmp_all: XmpAllOpt = False
    xmp_style: XmpStyleOpt = "append"
    xmp_overwrite: XmpOverwriteOpt = False

    def sidecars(self) -> SidecarOptions | None:
        """The library's options, or None without ``--xmp``; a companion without
        ``--xmp`` is a usage error (it would otherwise do nothing, silently)."""
        from ..errors import UsageError
        from ..xmp import SidecarOptions

        if not self.xmp:
            if self.xmp_all or self.xmp_overwrite or self.xmp_style != "append":
                raise UsageError("--xmp-all, --xmp-style and --xmp-overwrite go with --xmp")
            return None
        return SidecarOptions(style=self.xmp_style, all=self.xmp_all, overwrite=self.xmp_overwrite)


@app.command("xmp")
def xmp_cmd(
    results: Annotated[
        str,
        typer.Argument(
            help="A scan's output (CSV, JSON Lines or GeoJSON), reviewed or not; '-' reads stdin.",
            show_default=False,
        ),
    ],
    style: Annotated[str, typer.Option("--style", help=_STYLE_HELP)] = "append",
    every: Annotated[
        bool, typer.Option("--all", help="Also photos that have EXIF GPS of their own.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace GPS already in a sidecar (a reviewed position replaces "
            "geoguess's own estimate without it).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be written; write nothing.")
    ] = False,
) -> None:
    """Write XMP sidecars from a scan's results, after you reviewed them.

    Each row's best guess goes beside its photo; a position you changed (an edited
    lat/lon in the CSV, a point moved in the GeoJSON, a "reviewed" member in JSON Lines)
    is written instead and marked as reviewed. Delete a row to write nothing for it.
    Relative paths are read from the current folder, as the scan wrote them.

    [bold]Examples[/]

      geoguess scan ~/Pictures -o places.csv     then review places.csv

      geoguess xmp places.csv --dry-run

      geoguess xmp places.csv --style replace
    """
    from ..results_reader import read_results
    from ..xmp import SidecarOptions, XmpError, sidecar_summary, write_record_sidecar

    counts: Counter[str] = Counter()
    with _errors():
        options = SidecarOptions(style=style, all=every, overwrite=overwrite)
        read = read_results(results)
        for problem in read.problems:
            _err(problem)
        for record in read.records:
            try:
                done = write_record_sidecar(record, options, dry_run=dry_run, need_photo=True)
            except XmpError as exc:
                counts["failed"] += 1
                _err(str(exc))
                continue
            counts[done.action] += 1
    from ..output import stderr_console

    if read.random_weights:
        _note("these results came from random test weights: their positions are not geolocations")
    stderr_console().print(sidecar_summary(counts, dry_run=dry_run), markup=False)
    raise typer.Exit(EXIT_SOME_FAILED if counts["failed"] or read.problems else EXIT_OK)
