"""The command line: exit codes, streams, JSON and start-up cost (that docs/ names every
command and option is tests/test_docs.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from geoguess import __version__
from geoguess.cli import app

runner = CliRunner()


def test_version_and_help():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"geoguess {__version__}"
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for command in ("locate", "models"):
        assert command in res.stdout


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from geoguess.cli import main\n"
        "sys.argv = ['geoguess', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'onnxruntime', 'torch', 'transformers', 'litellm',"
        " 'hnswlib', 'PIL', 'ray') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in res.stderr


def test_locate_streams_and_exit_codes(tiny_home, photos_dir, tmp_path):
    good = photos_dir / "gps_DSCN0010.jpg"
    bad = photos_dir / "pillow_truncated_jpeg.jpg"
    res = runner.invoke(app, ["--json", "-k", "3", str(good), str(bad)])
    assert res.exit_code == 1
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(good), str(bad)]
    ok, failed = records
    assert len(ok["predictions"]) == 3 and ok["error"] is None
    assert ok["predictions"][0]["place"]["country_code"]
    assert abs(ok["exif_gps"]["lat"] - 43.4674483) < 1e-5
    assert ok["exif_error_km"] > 0
    assert ok["model"]["random_weights"] is False
    assert failed["predictions"] == [] and "truncated" in failed["error"]
    # One line per failure on stderr, naming the file.
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: image file is truncated"]


def test_locate_plain_output_when_piped(tiny_home, photos_dir):
    res = runner.invoke(app, ["-k", "2", str(photos_dir / "mei_FujiFilm_FinePixS2Pro.jpg")])
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[1].split("\t")[:3] == ["rank", "lat", "lon"]
    assert len([line for line in lines if re.match(r"^\d+\t", line)]) == 2
    assert "\x1b[" not in res.stdout  # no colour codes in a pipe
    assert any("EXIF GPS: 48.85783" in line for line in lines)


def test_locate_reads_stdin(tiny_home, photos_dir):
    data = (photos_dir / "gps_DSCN0010.jpg").read_bytes()
    res = runner.invoke(app, ["--json", "-"], input=data)
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["file"] == "<stdin>" and len(rec["predictions"]) == 5
    assert rec["exif_gps"] is not None


def test_unknown_precision_is_a_usage_error(tiny_home, photos_dir):
    res = runner.invoke(app, ["-p", "fp16", str(photos_dir / "gps_DSCN0010.jpg")])
    assert res.exit_code == 2
    assert "no fp16 image encoder" in res.stderr


@pytest.mark.parametrize("args", [["-k", "0", "x.jpg"], ["--device", "tpu", "x.jpg"]])
def test_bad_arguments_exit_2(tiny_home, args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2


def test_help_texts_do_not_break_lines_in_an_80_column_terminal() -> None:
    # Typer keeps a docstring's line breaks; a line longer than the terminal leaves a
    # stub of one or two words on a line of its own ("CLIP" above "ViT-L/14 ...").
    import typer

    def commands(c, path=()):
        if hasattr(c, "commands"):
            for name, sub in c.commands.items():
                yield from commands(sub, (*path, name))
        yield path, c

    too_long = []
    for path, command in commands(typer.main.get_command(app)):
        for paragraph in (command.help or "").split("\n\n"):
            lines = paragraph.splitlines()
            if len(lines) < 2:
                continue  # one line: rich wraps it as a paragraph
            too_long += [(" ".join(path), line) for line in lines if len(line) > 76]
    assert not too_long
    # Typer dedents the paragraphs after the summary as one block, its first line
    # aside: when every other line is indented (only examples follow "Examples"),
    # the examples lose their indent.
    import inspect

    flush = []
    for path, command in commands(typer.main.get_command(app)):
        rest = "\n\n".join((command.help or "").split("\n\n")[1:])
        if rest and inspect.cleandoc(rest) != rest.strip("\n"):
            flush.append(" ".join(path))
    assert not flush


def test_help_lists_commands_in_the_order_people_use_them() -> None:
    res = CliRunner().invoke(app, ["--help"], terminal_width=100)
    at = [res.output.find(f"│ {name} ") for name in ("locate", "scan", "map", "xmp", "eval")]
    assert -1 not in at and at == sorted(at), res.output
