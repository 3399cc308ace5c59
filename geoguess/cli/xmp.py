"""XMP sidecars on the command line: the ``--xmp`` options of ``locate`` and ``scan``
(one bundle) and ``geoguess xmp RESULTS``, which writes sidecars from a reviewed scan."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

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

    def tally(self, model: Mapping[str, Any]) -> SidecarTally | None:
        """What writes the sidecars of results made by ``model`` (its model record), or
        None without ``--xmp``."""
        from dataclasses import replace

        from ..xmp import sidecar_extra

        options = self.sidecars()
        return (
            None if options is None else SidecarTally(replace(options, extra=sidecar_extra(model)))
        )


_CHANGED = ("written", "merged")  # the actions that put a position into a sidecar


class SidecarTally:
    """Writes a command's sidecars: counts what was done, prints each failure as one
    line naming the sidecar or photo, and says it all in one line at the end."""

    def __init__(self, options: SidecarOptions, *, dry_run: bool = False) -> None:
        self.options, self.dry_run = options, dry_run
        self.counts: Counter[str] = Counter()

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    def write(self, item: Any, *, need_photo: bool = False) -> None:
        """``item``: a LocateResult, or a ``--json`` record read back from a results file."""
        from ..xmp import XmpError, write_record_sidecar, write_result_sidecar

        try:
            if isinstance(item, dict):
                done = write_record_sidecar(
                    item, self.options, dry_run=self.dry_run, need_photo=need_photo
                )
            else:
                done = write_result_sidecar(item, self.options)
        except XmpError as exc:
            self.counts["failed"] += 1
            _err(str(exc))
            return
        self.counts[done.action] += 1
        if done.kind == "reviewed" and done.action in _CHANGED:
            self.counts["reviewed"] += 1

    def print_summary(self) -> None:
        from ..output import stderr_console
        from ..xmp import sidecar_summary

        stderr_console().print(sidecar_summary(self.counts, dry_run=self.dry_run), markup=False)


@app.command("xmp")
def xmp_cmd(
    results: Annotated[
        str,
        typer.Argument(
            help="A scan's output (CSV, JSON Lines or GeoJSON, or a folder of shards), "
            "reviewed or not; '-' reads stdin.",
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

    Each row's best guess goes beside its photo. A position you changed (an
    edited lat/lon in the CSV, a point moved in the GeoJSON, a "reviewed" member
    in JSON Lines) is written instead, marked as reviewed. Delete a row to
    write nothing for it. Relative paths start from the current folder, as
    the scan wrote them.

    [bold]Examples[/]

      geoguess scan ~/Pictures -o places.csv     then review places.csv

      geoguess xmp places.csv --dry-run

      geoguess xmp places.csv --style replace
    """
    from ..results_reader import read_results
    from ..xmp import SidecarOptions

    with _errors():
        tally = SidecarTally(
            SidecarOptions(style=style, all=every, overwrite=overwrite), dry_run=dry_run
        )
        read = read_results(results)
        for problem in read.problems:
            _err(problem)
        for record in read.records:
            tally.write(record, need_photo=True)
    if read.random_weights:
        _note("these results came from random test weights: their positions are not geolocations")
    tally.print_summary()
    raise typer.Exit(EXIT_SOME_FAILED if tally.failed or read.problems else EXIT_OK)
