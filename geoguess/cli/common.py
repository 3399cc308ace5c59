"""Shared pieces of the command line: the app, shared options, errors, progress.

Heavy modules (numpy, onnxruntime, torch) are imported inside the commands so that
``geoguess --help`` and ``--version`` start fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import GeoguessError
from ..reporting import Reporter

EXIT_OK, EXIT_SOME_FAILED, EXIT_SETUP = 0, 1, 2


class DefaultToLocate(TyperGroup):
    """``geoguess photo.jpg`` means ``geoguess locate photo.jpg``.

    A first word that is no command and no existing file, but close to a command
    (``modles``), is a usage error with a suggestion rather than a missing photo.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] == "help":  # what people type first
            args = ["--help", *args[1:]]
        if args and args[0] not in self.commands and args[0] not in {"--help", "-h", "--version"}:
            self._refuse_typo(ctx, args[0])
            args = ["locate", *args]
        return super().parse_args(ctx, args)

    def _refuse_typo(self, ctx: Any, word: str) -> None:
        import difflib
        import os

        if word.startswith("-") or os.path.lexists(word):
            return
        names = [*self.commands, "version"]
        close = difflib.get_close_matches(word.lower(), names, n=1, cutoff=0.75)
        if close:
            hint = "--version" if close[0] == "version" else close[0]
            ctx.fail(f"{word!r} is no command and no file; did you mean {hint!r}?")

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage("geoguess", "[OPTIONS] PHOTO... | COMMAND [ARGS]...")

    #: ``--help`` lists commands in the order of a user's day, not of registration.
    ORDER = ("locate", "scan", "map", "xmp", "eval", "models", "bench")

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(self.ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


app = typer.Typer(
    cls=DefaultToLocate,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Tell where a photo was taken.\n\n"
        "[bold]Examples[/]\n\n"
        "  geoguess photo.jpg                   top-5 candidate places\n\n"
        "  geoguess --json --top-k 10 a.jpg b.jpg\n\n"
        "  geoguess scan ~/Pictures -o places.csv\n\n"
        "  geoguess models build                fetch and build the model set (once)\n\n"
        "[bold]Options for photos[/] (geoguess PHOTO... is geoguess locate PHOTO...):"
        " --top-k, --json, --model, --precision, --device, --search, --llm and more;"
        " see geoguess locate --help."
    ),
)
models_app = typer.Typer(
    no_args_is_help=True,
    help="Build, install, list and check model sets.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geoguess {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


# --- shared options (one definition, used by every command that takes them) ------------

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Model set name \\[default: $GEOGUESS_MODEL or geoclip-vit-l14]."
    ),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        "-p",
        help="Image encoder precision: int8, fp32 or fp16 "
        "\\[default: int8 on CPU, fp16/fp32 on CUDA].",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
GalleryOpt = Annotated[
    str | None, typer.Option("--gallery", help="GPS gallery of the model set to search.")
]
SearchOpt = Annotated[
    str,
    typer.Option(
        "--search",
        help="Gallery search: flat (exact), tree (beam search in the gallery's cluster "
        "tree) or auto (tree from 500,000 gallery points on).",
    ),
]
BeamOpt = Annotated[
    int | None,
    typer.Option(
        "--beam", min=1, help="Tree nodes kept per level (implies --search tree) \\[default: 24]."
    ),
]
TopKOpt = Annotated[
    int, typer.Option("--top-k", "-k", min=1, max=1000, help="Candidates per photo.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per photo (JSON Lines).")]
#: --json of the commands that describe model sets and galleries, not photos.
JsonListOpt = Annotated[bool, typer.Option("--json", help="JSON Lines: one object per entry.")]
JsonObjectOpt = Annotated[bool, typer.Option("--json", help="One JSON object.")]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        min=1,
        max=4096,
        help="Photos per encoder run \\[default: 64 on CUDA, 16 on the CPU].",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=1,
        max=256,
        help="Decoding threads \\[default: min(4, CPU count)].",
        show_default=False,
    ),
]
ExactDecodeOpt = Annotated[
    bool,
    typer.Option(
        "--exact-decode",
        help="Decode JPEGs at full resolution, exactly as GeoCLIP preprocesses "
        "(slower on large photos; default: a reduced DCT scale, still 2x the model input).",
    ),
]
RawCandidatesOpt = Annotated[
    bool,
    typer.Option(
        "--raw-candidates",
        help="GeoCLIP's raw gallery rows: a coordinate the gallery holds several times "
        "appears once per copy, as in GeoCLIP's predict (default: once, probabilities "
        "summed).",
    ),
]
MapOpt = Annotated[
    str | None,
    typer.Option(
        "--map",
        help="Also draw the result on a map: a self-contained .html page (works offline) "
        "or a .png picture.",
        show_default=False,
    ),
]
TilesOpt = Annotated[
    bool,
    typer.Option(
        "--tiles", help="HTML maps: add OpenStreetMap tiles (fetched online when opened)."
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Say which provider and model run.")
]


def _err(message: str) -> None:
    from rich.markup import escape

    from ..output import stderr_console

    stderr_console().print(f"[red]error:[/] {escape(message)}")


def _note(message: str) -> None:
    from rich.markup import escape

    from ..output import stderr_console

    stderr_console().print(escape(message), style="yellow")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Typed library errors become one-line messages and exit codes."""
    try:
        yield
    except GeoguessError as exc:
        _err(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None


class RichReporter(Reporter):
    """Progress bars and messages on stderr.

    With ``unit`` (e.g. "files"), bars with a total also show the rate in that unit.
    """

    def __init__(self, unit: str | None = None) -> None:
        from ..output import stderr_console

        self.console = stderr_console()
        self.unit = unit

    def message(self, text: str) -> None:
        from rich.markup import escape

        self.console.print(escape(text))

    @contextlib.contextmanager
    def task(
        self, description: str, total: float | None = None
    ) -> Iterator[Callable[[float], None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
            if self.unit:
                columns.append(TextColumn("{task.fields[rate]}"))
            columns += [TimeRemainingColumn()]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, rate="")

            def advance(n: float = 1) -> None:
                progress.advance(tid, n)
                if self.unit:
                    speed = progress.tasks[0].speed
                    progress.update(tid, rate=f"{speed:.1f} {self.unit}/s" if speed else "")

            yield advance
            progress.update(tid, completed=total or 1, total=total or 1)


def _size(n: int | None) -> str:
    if not n:
        return "size unknown"
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def describe_plan(plan: Any) -> str:
    """What a build will fetch and where it goes, in words for the consent prompt."""
    lines = [f"geoguess needs the model set {plan.name!r}, built once from public weights:"]
    for d in plan.downloads:
        lines.append(f"  - {d.what}")
        lines.append(f"    {_size(d.size)} from {d.source}; licence {d.licence}; kept in {d.dest}")
    lines.append(
        f"The model set (about 1.9 GB) is built into {plan.target} "
        "(a few minutes; nothing is sent anywhere)."
    )
    return "\n".join(lines)


def build_default_model(name: str, *, yes: bool) -> None:
    """First use: offer to fetch and build the default model set.

    Asks once on a terminal; ``--yes`` or GEOGUESS_YES=1 agrees in advance. Anywhere
    else (scripts, CI, a photo piped on stdin) nothing is downloaded unasked: the
    error names the command that does it.
    """
    import sys

    from .. import environment
    from ..builder.build import BuildOptions, build_model_set, plan_build
    from ..errors import SetupError

    agreed = yes or environment.flag(environment.YES, False)
    if not agreed and not (sys.stdin.isatty() and sys.stderr.isatty()):
        # Decided before planning: a script gets the same answer with or without network.
        raise SetupError(
            f"model set {name!r} is not installed; run: geoguess models build (it downloads "
            "the CLIP ViT-L/14 and GeoCLIP weights, about 1.75 GB), or pass --yes"
        )
    opts = BuildOptions(name=name, allow_download=True)
    plan = plan_build(opts)
    if plan.downloads and not agreed:
        from ..output import stderr_console

        stderr_console().print(describe_plan(plan), markup=False, highlight=False)
        if not typer.confirm("Download and build it now?", default=True, err=True):
            raise SetupError("no model set; nothing was downloaded")
    build_model_set(opts, reporter=RichReporter())
    _note(f"installed {name}; locating")


def check_options(precision: str | None, device: str) -> None:
    """Usage errors in options, before anything is loaded: a typo must not lead to
    "build the model set" or to a missing-photo message."""
    from ..manifest import check_precision
    from ..providers import check_device

    check_precision(precision)
    check_device(device)


@dataclass(frozen=True)
class ModelOptions:
    """The options that choose and open a model set (``locate``, ``scan``, ``eval``):
    take them with ``@bundled("model_options", ModelOptions)``."""

    model: ModelOpt = None
    precision: PrecisionOpt = None
    device: DeviceOpt = "auto"
    gallery: GalleryOpt = None
    search: SearchOpt = "auto"
    beam: BeamOpt = None
    exact_decode: ExactDecodeOpt = False
    raw_candidates: RawCandidatesOpt = False
    verbose: VerboseOpt = False

    def check(self) -> None:
        check_options(self.precision, self.device)

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Geolocator.load`` (and of Ray's worker options)."""
        return {
            "precision": self.precision,
            "device": self.device,
            "gallery": self.gallery,
            "search": self.search,
            "beam": self.beam,
            "exact_decode": self.exact_decode,
            "merge_duplicates": not self.raw_candidates,
        }

    def open(self, *, yes: bool = False) -> Any:
        """The Geolocator, offering to build the default set on first use."""
        return open_geolocator(self, yes=yes)


def open_geolocator(options: ModelOptions, *, yes: bool = False) -> Any:
    from ..errors import ModelNotFoundError
    from ..geolocator import Geolocator
    from ..store import DEFAULT_MODEL, default_model_name

    options.check()
    model = options.model

    def load() -> Any:
        return Geolocator.load(model, **options.loader_kwargs())

    try:
        geo = load()
    except ModelNotFoundError:
        # Only the default set has a recipe to build it from; others were named by
        # the user, who built or installed them.
        if (model or default_model_name()) != DEFAULT_MODEL:
            raise
        build_default_model(DEFAULT_MODEL, yes=yes)
        geo = load()
    if geo.random_weights:
        _note(
            f"warning: model set {geo.model.name!r} has random backbone weights (built for "
            "tests and benchmarks): its answers are not geolocations"
        )
    fallback = geo.image_encoder.session.fallback
    if fallback:
        _note(fallback)
    if options.verbose:
        _note(
            f"model {geo.model.name} ({geo.precision}), gallery {geo.gallery_name}, "
            f"provider {geo.provider}"
        )
    return geo
