"""Execution providers: chosen in one place, read back from the session, fallbacks said.

CI machines have no GPU, so the CUDA cases make geoguess *believe* one is there and
check what really happens when onnxruntime then cannot use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geoguess import providers
from geoguess.cli import app
from geoguess.errors import SetupError, UsageError


@pytest.fixture
def no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: False)


@pytest.fixture
def believed_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver seems present and onnxruntime lists CUDA, but nothing can really run."""
    if "CUDAExecutionProvider" not in providers.available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider to try")
    if providers.nvidia_driver_present():
        pytest.skip("a real GPU is present")
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: True)


def _encoder(home: Path) -> Path:
    return home / "models" / "tiny" / "image_encoder.fp32.onnx"


def test_cpu_is_cpu_only() -> None:
    assert providers.providers_for("cpu") == ["CPUExecutionProvider"]


def test_unknown_device_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        providers.providers_for("tpu")


def test_without_a_driver_auto_is_cpu_and_cuda_is_refused(no_driver: None) -> None:
    assert providers.providers_for("auto") == ["CPUExecutionProvider"]
    with pytest.raises(SetupError, match="CUDA was asked for but no NVIDIA driver"):
        providers.providers_for("cuda")


def test_auto_falls_back_to_cpu_with_a_message(tiny_home: Path, believed_gpu: None) -> None:
    assert providers.providers_for("auto")[0] == "CUDAExecutionProvider"
    session = providers.open_session(_encoder(tiny_home), "auto")
    assert session.provider == "CPUExecutionProvider" and not session.on_cuda
    assert session.fallback and "using the CPU" in session.fallback
    x = np.zeros((1, 3, 224, 224), np.float32)
    assert session.run({"pixel_values": x})[0].shape == (1, 512)  # and it still works


def test_cuda_asked_for_but_unusable_is_a_setup_error(tiny_home: Path, believed_gpu: None) -> None:
    with pytest.raises(SetupError, match="CUDA was asked for"):
        providers.open_session(_encoder(tiny_home), "cuda")


def test_cli_says_which_provider_runs_and_why(
    tiny_home: Path, photos_dir: Path, believed_gpu: None
) -> None:
    photo = photos_dir / "gps_DSCN0010.jpg"
    res = CliRunner().invoke(app, ["--verbose", "--json", str(photo)])
    assert res.exit_code == 0, res.output
    assert "using the CPU" in res.stderr
    assert "provider CPUExecutionProvider" in res.stderr
    info = CliRunner().invoke(app, ["models", "info", "tiny"])
    assert info.exit_code == 0 and "provider" in info.stdout


def test_thread_count_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEOGUESS_THREADS", raising=False)
    assert providers.default_threads() == 0  # onnxruntime decides
    monkeypatch.setenv("GEOGUESS_THREADS", "3")
    assert providers.default_threads() == 3
    for bad in ("abc", "0", "-2", "1.5"):
        monkeypatch.setenv("GEOGUESS_THREADS", bad)
        with pytest.raises(UsageError, match="GEOGUESS_THREADS"):
            providers.default_threads()
