"""The command line as a new user meets it (issue 12, problems 10-12 and 14).

Typos are usage errors with a suggestion, not missing photos; help reads right; any
output encoding gives valid JSON and tables that degrade instead of crashing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoguess.cli import app


def _run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("modles", "models"), ("sacn", "scan"), ("verison", "--version"), ("bnech", "bench")],
)
def test_a_typo_of_a_command_is_a_usage_error_with_a_suggestion(
    typed: str, meant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(typed, "list")
    assert result.exit_code == 2, result.output
    assert f"did you mean '{meant}'?" in result.output
    assert "models build" not in result.output  # no advice to download 2 GB


def test_a_file_named_like_a_command_is_still_a_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("modles").write_bytes(b"not a photo")
    result = _run("modles")
    assert "did you mean" not in result.output


def test_help_is_the_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run("help")
    assert result.exit_code == 0
    assert "Usage: geoguess" in result.output and "Commands" in result.output


def test_missing_photos_are_named_before_any_model_is_asked_for() -> None:
    result = _run("nosuch.jpg", "other.heic")
    assert result.exit_code == 1
    assert "nosuch.jpg: no such file" in result.stderr
    assert "other.heic: no such file" in result.stderr
    assert "models build" not in result.stderr


def test_an_unknown_precision_is_a_usage_error(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    result = _run("--precision", "fp64", str(photo))
    assert result.exit_code == 2
    assert "precision must be one of fp32, fp16, int8, got 'fp64'" in result.stderr


def test_dash_on_a_terminal_says_what_it_waits_for() -> None:
    primary, secondary = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "geoguess", "-"],
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 2
    assert "stdin is a terminal" in done.stderr and "cat photo.jpg | geoguess -" in done.stderr


# --- help rendering -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["locate"],
        ["scan"],
        ["models", "list"],
        ["models", "info"],
        ["models", "gallery", "list"],
    ],
)
def test_help_shows_no_type_placeholders(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.exit_code == 0, result.output
    for placeholder in ("<bool>", "<str>", "<int", "{photos}", "list[str]"):
        assert placeholder not in result.output, (command, placeholder)


def test_help_texts_say_what_the_options_do() -> None:
    top = " ".join(_run("--help").output.split())
    assert "--top-k" in top and "geoguess locate --help" in top  # the default command's
    assert "per photo" not in _run("models", "list", "--help").output
    assert "per photo" not in _run("models", "info", "--help").output
    assert "PHOTOS..." in _run("locate", "--help").output
    assert "--retry-failed" in _run("scan", "--help").output


# --- output encodings -----------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["ascii", "cp1252", "latin-1"])
def test_any_stdout_encoding_gives_valid_json_and_a_table(
    tiny_home: Path, photos_dir: Path, tmp_path: Path, encoding: str
) -> None:
    photo = tmp_path / "Shibakōen 芝公園.jpg"  # the file name reaches JSON and the table
    shutil.copy(photos_dir / "gps_DSCN0010.jpg", photo)
    env = {**os.environ, "PYTHONIOENCODING": encoding}

    def geoguess(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "geoguess", *args], env=env, capture_output=True, timeout=300
        )

    as_json = geoguess("--json", str(photo))
    assert as_json.returncode == 0, as_json.stderr.decode(errors="replace")
    record = json.loads(as_json.stdout.decode("ascii"))  # escaped, so ASCII whatever it held
    assert record["file"] == str(photo)
    table = geoguess(str(photo))
    assert table.returncode == 0, table.stderr.decode(errors="replace")
    assert b"Traceback" not in table.stderr
    assert table.stdout.strip()
    missing = geoguess(str(tmp_path / "nichts-ō.jpg"))
    assert missing.returncode == 1 and b"Traceback" not in missing.stderr


@pytest.mark.parametrize("command", [["models", "list"], ["models", "gallery", "list"]])
def test_listings_are_plain_lines_when_piped(tiny_home: Path, command: list[str]) -> None:
    result = _run(*command)
    assert result.exit_code == 0, result.output
    assert not set("│╭╰─┃━") & set(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("name\t") and len(lines) >= 2
    assert all(len(line.split("\t")) == len(lines[0].split("\t")) for line in lines)
    # Whole paths: nothing cut to fit a width.
    assert "…" not in result.stdout
