"""Choosing ONNX Runtime execution providers, in one place.

``device`` is "auto" (CUDA when it really works, else CPU), "cpu" or "cuda". The
providers that a session actually runs with are read back from the session, since
onnxruntime-gpu lists CUDA as available even on machines whose CUDA libraries are
missing, and then silently runs on the CPU.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import derived
from .errors import SetupError, UsageError

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
    #: Why the session runs on the CPU although CUDA was tried, for the user to see.
    fallback: str | None = None

    @property
    def on_cuda(self) -> bool:
        return self.provider == "CUDAExecutionProvider"

    def run(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> list[Any]:
        return self.inner.run(outputs, feeds)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def default_threads() -> int:
    env = os.environ.get("GEOGUESS_THREADS", "").strip()
    if not env:
        return 0  # onnxruntime's own choice: one thread per physical core
    try:
        threads = int(env)
    except ValueError:
        threads = 0
    if threads < 1:
        raise UsageError(f"GEOGUESS_THREADS must be a whole number of at least 1, got {env!r}")
    return threads


@functools.cache
def _machine_tag() -> str:
    """What an optimised CPU graph depends on: ORT version, architecture, CPU features."""
    import hashlib
    import platform

    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    digest = hashlib.sha256(f"{platform.machine()}|{platform.processor()}|{flags}".encode())
    return f"ort{_ort().__version__}-{digest.hexdigest()[:12]}"


def _optimized_graph(source_sha256: str, cache_dir: Path) -> Path:
    return cache_dir / f"{source_sha256[:24]}-{_machine_tag()}.onnx"


def _weights_name(graph: Path) -> str:
    # The graph names its weights file for good, so each writer uses its own name:
    # two processes publishing at once never pair one's graph with the other's weights.
    return f"{graph.stem}.{os.getpid()}.weights"


def open_session(
    path: Path,
    device: str = "auto",
    *,
    threads: int | None = None,
    source_sha256: str | None = None,
    cache_dir: Path | None = None,
) -> Session:
    """An ONNX Runtime session for ``path`` on ``device``.

    With ``source_sha256`` and ``cache_dir``, the graph that ONNX Runtime optimises for
    this CPU is saved once and reused, which skips the optimisation passes on later
    starts. The saved graph is tied to this ORT version and CPU and checked by sha256.
    """
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = default_threads() if threads is None else threads
    opts.log_severity_level = 3
    # ONNX Runtime's threads spin for a while after each run. They then hold the cores
    # that the gallery search, the spread and the next photo's decoding need (numpy's
    # mat-vec over 100K points ran at half speed); stopping them when a run ends costs
    # the encoder nothing measurable, since they still spin between its operators.
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    providers = providers_for(device)
    load_path = path
    graph = cached = None
    if source_sha256 and cache_dir is not None and providers[0] == "CPUExecutionProvider":
        graph = _optimized_graph(source_sha256, cache_dir)
        cached = derived.lookup(graph)
    if cached is not None:
        load_path = cached
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if graph is not None:
            with contextlib.suppress(OSError):  # an unwritable cache only costs time
                # Written under temporary names; published below only once complete.
                # The weights go to a file of their own: ONNX Runtime then reads them
                # straight into place instead of through a 1.2 GB protobuf, which
                # (fp32 ViT-L/14) took start-up from 5.8 to 1.5-2.2 s and peak memory
                # from 1.8 to 1.3 GB.
                tmp = derived.temporary(graph)
                opts.optimized_model_filepath = str(tmp)
                opts.add_session_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    _weights_name(graph),
                )
                opts.add_session_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
                )
    fallback = None
    try:
        inner = ort.InferenceSession(str(load_path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        if providers[0] != "CPUExecutionProvider" and device == "auto":
            fallback = f"CUDA could not load {path.name} ({_one_line(exc)}); using the CPU"
            inner = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        else:
            raise SetupError(f"{path}: onnxruntime cannot load this model: {exc}") from exc
    if graph is not None and cached is None and opts.optimized_model_filepath:
        tmp = Path(opts.optimized_model_filepath)
        weights = graph.with_name(_weights_name(graph))
        if tmp.is_file():
            companions = {weights: weights} if weights.is_file() else {}
            derived.publish(tmp, graph, companions)
            for old in graph.parent.glob(f"{graph.stem}.*.weights"):
                if old != weights:  # an earlier writer's; a reader may still map it
                    with contextlib.suppress(OSError):
                        old.unlink()
    used = inner.get_providers()[0]
    if device == "cuda" and used != "CUDAExecutionProvider":
        raise SetupError(
            f"{path}: CUDA was asked for but onnxruntime fell back to {used} "
            "(check the CUDA and cuDNN libraries, or use --device cpu)"
        )
    if providers[0] == "CUDAExecutionProvider" and used != "CUDAExecutionProvider":
        fallback = fallback or "CUDA is not usable here (see --verbose); using the CPU"
    return Session(inner, path, used, fallback)
