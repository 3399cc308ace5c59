"""``pip install .`` needs no compiler anywhere: every dependency, on every platform we
claim, resolves to wheels.

For each target (Linux x86-64 and ARM, macOS ARM, Windows x86-64; Python 3.11-3.13) the
runtime requirements are taken from pyproject.toml with their markers evaluated for
that target, and pip resolves them with ``--only-binary=:all:`` for its platform tags
(``--dry-run``: nothing is installed). This reaches the package index; CI can.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

_MANYLINUX = [f"manylinux_2_{n}" for n in (17, 24, 26, 27, 28, 31, 34, 35)] + ["manylinux2014"]
TARGETS = {
    "linux-x86_64-py3.13": (
        "3.13",
        [f"{t}_x86_64" for t in _MANYLINUX],
        {"sys_platform": "linux", "platform_machine": "x86_64"},
    ),
    "linux-aarch64-py3.12": (
        "3.12",
        [f"{t}_aarch64" for t in _MANYLINUX],
        {"sys_platform": "linux", "platform_machine": "aarch64"},
    ),
    "macos-arm64-py3.12": (
        "3.12",
        [f"macosx_{v}_0_arm64" for v in (11, 12, 13, 14, 15)],
        {"sys_platform": "darwin", "platform_machine": "arm64"},
    ),
    "windows-amd64-py3.11": (
        "3.11",
        ["win_amd64"],
        {"sys_platform": "win32", "platform_machine": "AMD64"},
    ),
}


def _requirements(env: dict[str, str]) -> list[str]:
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = []
    for text in deps:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            out.append(f"{req.name}{req.specifier}")
    return out


@pytest.mark.parametrize("target", list(TARGETS))
def test_runtime_dependencies_resolve_to_wheels(target, tmp_path):
    python, platforms, markers = TARGETS[target]
    reqs = _requirements(markers)
    gpu_wheels = (markers["sys_platform"], markers["platform_machine"]) in {
        ("linux", "x86_64"),
        ("win32", "AMD64"),
    }
    expected_ort = "onnxruntime-gpu" if gpu_wheels else "onnxruntime"
    assert expected_ort in [r.split(">")[0] for r in reqs]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed"]
    cmd += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for p in platforms:
        cmd += ["--platform", p]
    cmd += ["--target", str(tmp_path / "t"), "--report", str(report), *reqs]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{target}: {proc.stderr[-2000:]}"
    installs = json.loads(report.read_text())["install"]
    names = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower() for i in installs}
    assert {"onnx", "safetensors", "huggingface-hub", "pillow", "numpy"} <= names
    assert "hnswlib" not in names and "torch" not in names
