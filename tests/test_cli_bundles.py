"""Option bundles: declared once, expanded into each command's options, handed back as
one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from geoguess.cli.bundles import bundled

LevelOpt = Annotated[int, typer.Option("--level", min=0, help="How loud.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Who.")]


@dataclass(frozen=True)
class Voice:
    level: LevelOpt = 1
    name: NameOpt = None


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @bundled("voice", Voice)
    def say(
        word: Annotated[str, typer.Argument()],
        voice: Voice = Voice(),
        times: Annotated[int, typer.Option("--times")] = 1,
    ) -> None:
        typer.echo(f"{word} x{times} {voice!r}")

    return app


def test_a_bundle_becomes_options_and_comes_back_as_one_object() -> None:
    runner = CliRunner()
    out = runner.invoke(_app(), ["hi", "--level", "3", "--times", "2"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "hi x2 Voice(level=3, name=None)"
    out = runner.invoke(_app(), ["hi", "--name", "ann"])
    assert out.output.strip() == "hi x1 Voice(level=1, name='ann')"
    # The fields' own typer settings hold (min=0).
    assert runner.invoke(_app(), ["hi", "--level", "-1"]).exit_code == 2


def test_help_lists_the_bundles_options_where_the_command_declares_it() -> None:
    text = CliRunner().invoke(_app(), ["--help"], env={"COLUMNS": "100"}).output
    assert "--level" in text and "--name" in text and "How loud." in text
    assert text.index("--level") < text.index("--times")


def test_a_bundle_needs_its_parameter_and_must_not_shadow_options() -> None:
    def no_slot(word: str) -> None: ...

    with pytest.raises(TypeError, match="no parameter 'voice'"):
        bundled("voice", Voice)(no_slot)

    def clash(voice: Voice = Voice(), level: int = 0) -> None: ...

    with pytest.raises(TypeError, match="already has options"):
        bundled("voice", Voice)(clash)


def test_the_photo_commands_take_the_model_and_llm_bundles() -> None:
    from geoguess.cli import app

    runner = CliRunner()
    for command in ("locate", "scan", "eval"):
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        for option in ("--model", "--precision", "--device", "--search", "--beam", "--verbose"):
            assert option in text, (command, option)
        assert ("--llm-samples" in text) == (command != "eval"), command
