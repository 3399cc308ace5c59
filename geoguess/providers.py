"""Choosing ONNX Runtime execution providers, in one place.

``device`` is "auto" (CUDA when it really works, else CPU), "cpu" or "cuda". The
providers that a session actually runs with are read back from the session, since
onnxruntime-gpu lists CUDA as available even on machines whose CUDA libraries are
missing, and then silently runs on the CPU.
"""

from __future__ import annotations

import ctypes.util
import functools
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SetupError, UsageError

log = logging.getLogger("geoguess")

DEVICES = ("auto", "cpu", "cuda")


def _ort() -> Any:
    import onnxruntime

    # onnxruntime logs provider fallbacks at warning level to stderr by itself; we report
    # the provider in use ourselves, so keep its own chatter to errors.
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


@functools.cache
def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded; without one CUDA cannot work at all."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists()
    return ctypes.util.find_library("nvcuda") is not None


def cuda_candidate() -> bool:
    # onnxruntime-gpu lists CUDA as available even with no GPU; asking it to load the CUDA
    # provider there prints a library error, so check for a driver first.
    return "CUDAExecutionProvider" in available_providers() and nvidia_driver_present()


def providers_for(device: str) -> list[str]:
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if cuda_candidate():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise SetupError(
            "CUDA was asked for but no NVIDIA driver or onnxruntime CUDA provider was found "
            "(install onnxruntime-gpu with its CUDA runtime, or use --device cpu)"
        )
    return ["CPUExecutionProvider"]


@dataclass
class Session:
    """An ONNX Runtime session and the provider it really runs on."""

    inner: Any
    path: Path
    provider: str

    @property
    def on_cuda(self) -> bool:
        return self.provider == "CUDAExecutionProvider"

    def run(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> list[Any]:
        return self.inner.run(outputs, feeds)


def default_threads() -> int:
    env = os.environ.get("GEOGUESS_THREADS")
    if env:
        return max(1, int(env))
    return 0  # onnxruntime's own choice: one thread per physical core


def open_session(path: Path, device: str = "auto", *, threads: int | None = None) -> Session:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = default_threads() if threads is None else threads
    opts.log_severity_level = 3
    providers = providers_for(device)
    try:
        inner = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        if providers[0] != "CPUExecutionProvider" and device == "auto":
            log.warning("CUDA session failed (%s); falling back to CPU", exc)
            inner = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        else:
            raise SetupError(f"{path}: onnxruntime cannot load this model: {exc}") from exc
    used = inner.get_providers()[0]
    if device == "cuda" and used != "CUDAExecutionProvider":
        raise SetupError(
            f"{path}: CUDA was asked for but onnxruntime fell back to {used} "
            "(check the CUDA and cuDNN libraries, or use --device cpu)"
        )
    if providers[0] == "CUDAExecutionProvider" and used != "CUDAExecutionProvider":
        log.info("CUDA is not usable here; running on the CPU")
    return Session(inner, path, used)
