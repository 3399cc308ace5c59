"""Shared fixtures: a temporary user directory for every test, and a tiny model set.

The tiny model set is built once per session through the real build path
(``geoguess models build --backbone DIR``) from a randomly initialised CLIP saved in
Hugging Face format, with GeoCLIP's real location encoder, head and gallery from the
installed geoclip wheel. Its image answers mean nothing; its plumbing is the real one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# huggingface_hub reads this once, at import: no telemetry requests from the tests.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from shared_data import MANIFEST, PHOTOS, missing

from geoguess.builder.backbone import RANDOM_GEOMETRIES

REPO = Path(__file__).resolve().parents[1]

# The same geometry as `geoguess models build --backbone random:tiny`.
TINY_VISION = dict(RANDOM_GEOMETRIES["tiny"])


@pytest.fixture(autouse=True)
def geoguess_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty GEOGUESS_HOME, so nothing touches the user's."""
    home = tmp_path / "geoguess-home"
    monkeypatch.setenv("GEOGUESS_HOME", str(home))
    monkeypatch.delenv("GEOGUESS_MODEL", raising=False)
    return home


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    if not MANIFEST.is_file():
        missing(MANIFEST)
    return PHOTOS


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny CLIP (vision + text) saved like a hub checkpoint."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1234)
    cfg = transformers.CLIPConfig(
        projection_dim=768,
        vision_config=TINY_VISION,
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=100,
            max_position_embeddings=16,
        ),
    )
    model = transformers.CLIPModel(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    # A hub checkpoint carries its preprocessing; the reference GeoCLIP reads it too.
    transformers.CLIPImageProcessor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_home(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> Path:
    """A GEOGUESS_HOME holding model set 'tiny' (fp32 + int8, full 100K gallery)."""
    pytest.importorskip("geoclip", reason="needs: pip install --no-deps geoclip==1.3.0")
    from geoguess.builder.build import BuildOptions, build_model_set

    home = tmp_path_factory.mktemp("tiny-home")
    old = os.environ.get("GEOGUESS_HOME")
    os.environ["GEOGUESS_HOME"] = str(home)
    try:
        build_model_set(BuildOptions(name="tiny", backbone=str(tiny_backbone_dir)))
    finally:
        if old is None:
            os.environ.pop("GEOGUESS_HOME", None)
        else:
            os.environ["GEOGUESS_HOME"] = old
    return home


@pytest.fixture
def tiny_home(tiny_model_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point GEOGUESS_HOME at the shared tiny model set (do not modify it)."""
    monkeypatch.setenv("GEOGUESS_HOME", str(tiny_model_home))
    monkeypatch.setenv("GEOGUESS_MODEL", "tiny")
    return tiny_model_home


@pytest.fixture
def tiny_home_copy(tiny_model_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the tiny model home, for tests that alter or delete files."""
    home = tmp_path / "home-copy"
    shutil.copytree(tiny_model_home, home)
    monkeypatch.setenv("GEOGUESS_HOME", str(home))
    monkeypatch.setenv("GEOGUESS_MODEL", "tiny")
    return home


@pytest.fixture
def cli_home(tiny_model_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private GEOGUESS_HOME (own LLM cache) sharing the tiny model set's files."""
    home = tmp_path / "cli-home"
    home.mkdir()
    (home / "models").symlink_to(tiny_model_home / "models", target_is_directory=True)
    monkeypatch.setenv("GEOGUESS_HOME", str(home))
    monkeypatch.setenv("GEOGUESS_MODEL", "tiny")
    return home


@pytest.fixture(scope="module")
def tiny_geo(tiny_model_home: Path):
    """A Geolocator on the shared tiny model set, for a whole test module (read only)."""
    from geoguess.geolocator import Geolocator

    mp = pytest.MonkeyPatch()
    mp.setenv("GEOGUESS_HOME", str(tiny_model_home))
    try:
        yield Geolocator.load("tiny")
    finally:
        mp.undo()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fake OpenAI chat-completions server on 127.0.0.1 (tests/fake_llm.py), with a
    fake API key and no consent or base URL from the caller's environment."""
    from fake_llm import serve

    yield from serve(monkeypatch)
