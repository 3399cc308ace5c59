"""First use, end to end through the command line: `geoguess PHOTO` with no model set
offers to fetch and build geoclip-vit-l14; `geoguess models build` does it unasked.

The backbone comes from a real HTTP server posing as the Hugging Face hub (hubserver.py),
serving the tiny random CLIP as openai/clip-vit-large-patch14; GeoCLIP's weights come from
the installed geoclip package. Nothing here mocks HTTP, the hub client or the prompt.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hubserver import DEFAULT_REPO, HubServer, Request, fake_hub, use_hub
from typer.testing import CliRunner

from geoguess.builder.backbone import RANDOM_GEOMETRIES
from geoguess.builder.hub import NEEDED_FILES
from geoguess.cli import app
from geoguess.store import DEFAULT_MODEL

MiB = 1 << 20
QUESTION = b"Download and build it now?"
runner = CliRunner()


@pytest.fixture(scope="session")
def repo_dir(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP with 24 MiB of weights (a filler tensor no build reads), so that a cut
    past huggingface_hub's first 10 MiB chunk can resume; plus weights a build must skip."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path_factory.mktemp("hub-repo")
    shutil.copytree(tiny_backbone_dir, folder, dirs_exist_ok=True)
    tensors = load_file(folder / "model.safetensors")
    tensors["text_model.filler"] = np.random.default_rng(0).random(6 * MiB, dtype=np.float32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "pytorch_model.bin").write_bytes(os.urandom(4096))
    return folder


@pytest.fixture
def serve(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., HubServer]]:
    """serve(**knobs): the fake hub, with HF_ENDPOINT at it and an empty HF_HOME."""
    monkeypatch.delenv("GEOGUESS_YES", raising=False)
    with contextlib.ExitStack() as stack:

        def start(**knobs: object) -> HubServer:
            hub = stack.enter_context(fake_hub(repo_dir, **knobs))
            use_hub(monkeypatch, hub.url, tmp_path / "hf-home")
            return hub

        yield start


@pytest.fixture
def photo(photos_dir: Path) -> Path:
    return photos_dir / "gps_DSCN0010.jpg"


def downloads(requests: list[Request]) -> set[str]:
    """The repo files whose bytes were asked for (HEAD and model_info are metadata)."""
    return {r.file for r in requests if r.method == "GET" and r.file}


def installed(home: Path) -> list[str]:
    """Model sets in the store, staging folders included."""
    return sorted(p.name for p in (home / "models").glob("*"))


def graphs(home: Path) -> list[Path]:
    return list(home.rglob("*.onnx"))


def backbone_provenance(home: Path) -> dict:
    manifest = json.loads((home / "models" / DEFAULT_MODEL / "manifest.json").read_text())
    return manifest["provenance"]["backbone"]


def assert_built_from(hub: HubServer, home: Path) -> None:
    prov = backbone_provenance(home)
    assert (prov["source"], prov["id"], prov["revision"]) == ("hub", DEFAULT_REPO, hub.commit)
    assert {n: f["sha256"] for n, f in prov["files"].items()} == {
        n: hub.files[n].sha256 for n in NEEDED_FILES
    }


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def error_line(stderr: str) -> str:
    """The error: one line, the last, after whatever progress was shown."""
    lines = stderr.strip().splitlines()
    assert [i for i, s in enumerate(lines) if s.startswith("error:")] == [len(lines) - 1], stderr
    return lines[-1]


# --- 1, 2: `geoguess PHOTO` without a terminal ------------------------------------------


def test_without_a_terminal_nothing_is_downloaded_unasked(
    serve: Callable[..., HubServer], photo: Path, geoguess_home: Path
) -> None:
    hub = serve()
    res = runner.invoke(app, ["--json", str(photo)])
    assert res.exit_code == 2 and res.stdout == ""
    assert "geoguess models build" in one_line(res.stderr)
    assert not hub.requests  # the refusal comes before any network
    assert installed(geoguess_home) == [] and graphs(geoguess_home) == []


@pytest.mark.parametrize("consent", ["--yes", "GEOGUESS_YES=1"])
def test_consent_builds_from_the_hub_and_installs(
    serve: Callable[..., HubServer],
    photo: Path,
    geoguess_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    consent: str,
) -> None:
    hub = serve()
    if consent == "--yes":
        args = ["--yes", "--json", str(photo)]
    else:
        monkeypatch.setenv("GEOGUESS_YES", "1")
        args = ["--json", str(photo)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.stderr
    (record,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(record["predictions"]) == 5 and record["error"] is None
    assert record["model"]["name"] == DEFAULT_MODEL
    assert installed(geoguess_home) == [DEFAULT_MODEL]
    assert downloads(hub.requests) == set(NEEDED_FILES)
    assert_built_from(hub, geoguess_home)

    seen = len(hub.requests)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and len(json.loads(again.stdout)["predictions"]) == 5
    assert not downloads(hub.requests[seen:])


# --- 3: `geoguess PHOTO` on a terminal ---------------------------------------------------

_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[=>()].?)")


def run_in_terminal(args: list[str], env: dict[str, str], answer: str, timeout: float) -> tuple:
    """Run ``args`` with a pseudo-terminal as stdin, stdout and stderr; type ``answer``
    at the question. Returns (exit code, output without escape codes, whether asked)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out, asked, deadline = b"", False, time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no exit after {timeout} s:\n{out.decode(errors='replace')}"
            if not select.select([master], [], [], min(left, 1.0))[0]:
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every handle on the terminal's other side is closed
                chunk = b""
            if not chunk:
                break
            out += chunk
            if not asked and QUESTION in out:
                os.write(master, answer.encode() + b"\n")
                asked = True
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = _ANSI.sub("", out.decode(errors="replace")).replace("\r", "")
    return code, text, asked


def test_on_a_terminal_it_asks_once_and_respects_the_answer(
    serve: Callable[..., HubServer], repo_dir: Path, photo: Path, geoguess_home: Path
) -> None:
    hub = serve()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "160", "PYTHONIOENCODING": "utf-8"}
    args = [sys.executable, "-m", "geoguess", str(photo)]

    code, text, asked = run_in_terminal(args, env, "n", timeout=60)
    assert asked and code == 2, text
    prompt = text[: text.index(QUESTION.decode())]
    size = sum(len(hub.files[n].data) for n in NEEDED_FILES)
    assert f"CLIP vision backbone {DEFAULT_REPO}" in prompt
    assert f"{size / 1e6:,.0f} MB from the Hugging Face hub" in prompt
    assert "licence MIT (OpenAI CLIP)" in prompt
    assert f"kept in {Path(env['HF_HOME']) / 'hub'}" in prompt
    assert str(geoguess_home / "models" / DEFAULT_MODEL) in prompt
    assert text.count(QUESTION.decode()) == 1 and "nothing was downloaded" in text
    assert not downloads(hub.requests) and installed(geoguess_home) == []

    code, text, asked = run_in_terminal(args, env, "y", timeout=300)
    assert asked and code == 0, text
    # A table row: rank, latitude, longitude, a place name, a probability.
    row = re.compile(r"[│|]\s*1\s*[│|]\s*-?\d+\.\d{5}\s*[│|]\s*-?\d+\.\d{5}\s*[│|][^│|\n]*\w")
    assert row.search(text), text
    assert installed(geoguess_home) == [DEFAULT_MODEL]
    assert_built_from(hub, geoguess_home)


# --- 4, 5: `geoguess models build` --------------------------------------------------------

BUILD = ["models", "build", "--gallery-limit", "500"]


def test_models_build_downloads_unasked_refuses_to_overwrite_and_works_offline(
    serve: Callable[..., HubServer], geoguess_home: Path
) -> None:
    hub = serve()
    res = runner.invoke(app, BUILD)
    assert res.exit_code == 0, res.stderr
    assert QUESTION.decode() not in res.stderr
    assert downloads(hub.requests) == set(NEEDED_FILES)
    assert installed(geoguess_home) == [DEFAULT_MODEL]
    assert_built_from(hub, geoguess_home)

    seen, started = len(hub.requests), time.perf_counter()
    again = runner.invoke(app, BUILD)
    assert again.exit_code == 2 and "already exists" in one_line(again.stderr)
    assert "--force" in again.stderr
    assert time.perf_counter() - started < 3 and len(hub.requests) == seen

    hub.stop()
    offline = runner.invoke(app, [*BUILD, "--offline", "--force"])
    assert offline.exit_code == 0, offline.stderr
    assert installed(geoguess_home) == [DEFAULT_MODEL]
    assert_built_from(hub, geoguess_home)


@pytest.mark.parametrize(
    "args, message",
    [
        (["random:nope"], ", ".join(f"random:{g}" for g in RANDOM_GEOMETRIES)),
        (["/no/such/dir"], "/no/such/dir: no such backbone folder"),
        (["random:tiny", "--name", DEFAULT_MODEL], f"cannot be named {DEFAULT_MODEL!r}"),
    ],
)
def test_bad_build_options_fail_before_any_work(
    serve: Callable[..., HubServer], geoguess_home: Path, args: list[str], message: str
) -> None:
    hub = serve()
    started = time.perf_counter()
    res = runner.invoke(app, [*BUILD, "--backbone", *args])
    assert time.perf_counter() - started < 0.5
    assert res.exit_code == 2 and message in one_line(res.stderr)
    assert not hub.requests and installed(geoguess_home) == [] and graphs(geoguess_home) == []


def test_a_random_backbone_gets_a_name_of_its_own(
    serve: Callable[..., HubServer], geoguess_home: Path
) -> None:
    hub = serve()
    res = runner.invoke(app, [*BUILD, "--backbone", "random:tiny"])
    assert res.exit_code == 0, res.stderr
    assert installed(geoguess_home) == ["random-tiny"] and not hub.requests


# --- 6: damaged transfers during a first run ---------------------------------------------


def test_a_cut_download_is_resumed_within_the_run(
    serve: Callable[..., HubServer], photo: Path, geoguess_home: Path
) -> None:
    hub = serve(cut={"model.safetensors": [15 * MiB, 1]})
    res = runner.invoke(app, ["--yes", "--json", str(photo)])
    assert res.exit_code == 0, res.stderr
    first, resumed = hub.gets("model.safetensors")
    assert first.range is None and resumed.range is not None
    assert int(resumed.range.removeprefix("bytes=").rstrip("-")) >= 10 * MiB
    assert len(json.loads(res.stdout)["predictions"]) == 5
    assert installed(geoguess_home) == [DEFAULT_MODEL]
    assert_built_from(hub, geoguess_home)


def test_a_corrupt_download_is_refused_and_nothing_is_installed(
    serve: Callable[..., HubServer], photo: Path, geoguess_home: Path
) -> None:
    hub = serve(corrupt={"model.safetensors": 99})
    res = runner.invoke(app, ["--yes", "--json", str(photo)])
    assert res.exit_code == 2 and res.stdout == ""
    line = error_line(res.stderr)
    assert "model.safetensors" in line and "corrupt" in line
    assert len(hub.gets("model.safetensors")) == 2  # one retry, then a clear refusal
    assert installed(geoguess_home) == [] and graphs(geoguess_home) == []
