"""A user's install: a fresh virtualenv, no C++ compiler, no PyTorch.

``pip install .`` with the compiler hidden (CC=/bin/false CXX=/bin/false), then
``geoguess models build --backbone DIR`` (GeoCLIP's weights fetched from the package
index, pinned by sha256, as a user's first build does) and ``geoguess PHOTO``.
This is the one test that reaches the package index; CI can.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def test_clean_venv_without_compiler_or_torch(tmp_path, tiny_backbone_dir, photos_dir, capsys):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    py = str(bindir / "python")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "PYTHON", "GEOGUESS_"))
    }
    env.update(
        CC="/bin/false",
        CXX="/bin/false",
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        GEOGUESS_HOME=str(tmp_path / "home"),
        HF_HOME=str(tmp_path / "hf"),
    )
    _run([py, "-m", "pip", "install", "-q", str(REPO)], env)

    probe = subprocess.run(
        [py, "-c", "import torch"], env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    for absent in ("transformers", "hnswlib", "geoclip"):
        found = subprocess.run(
            [py, "-c", f"import importlib.util as u; print(u.find_spec({absent!r}) is None)"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert found.stdout.strip() == "True", f"{absent} got installed"

    geoguess = str(bindir / "geoguess")
    build = _run(
        [
            geoguess,
            "models",
            "build",
            "--backbone",
            str(tiny_backbone_dir),
            "--gallery-limit",
            "3000",
        ],
        env,
    )
    assert "installed geoclip-vit-l14" in build.stderr
    photo = photos_dir / "gps_DSCN0010.jpg"
    out = _run([geoguess, "--json", str(photo)], env)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(record["predictions"]) == 5
    manifest = json.loads(
        (Path(env["GEOGUESS_HOME"]) / "models/geoclip-vit-l14/manifest.json").read_text()
    )
    wheel = manifest["provenance"]["geoclip"]
    assert wheel["sha256"] == "08a93791166a279d52b95c466a952c75f17f654cc61bdf6ab20355325b564dec"
    with capsys.disabled():
        print("\nclean venv: pip install ., build and locate without compiler or torch: OK")
