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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import derived, environment
from .errors import SetupError, UsageError, one_line

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


def check_device(device: str) -> None:
    """UsageError unless ``device`` is one of DEVICES."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")


def providers_for(device: str) -> list[str]:
    check_device(device)
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


def default_threads() -> int:
    env = environment.text(environment.THREADS) or ""
    if not env:
        return 0  # onnxruntime's own choice: one thread per physical core
    try:
        threads = int(env)
    except ValueError:
        threads = 0
    if threads < 1:
        raise UsageError(f"{environment.THREADS} must be a whole number of at least 1, got {env!r}")
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
    starts. The saved graph is tied to this ORT version and CPU and checked by sha256
    (see geoguess.derived); one that cannot be loaded is set aside and made again.
    """
    ort = _ort()
    providers = providers_for(device)
    key = None
    if source_sha256 and cache_dir is not None and providers[0] == "CPUExecutionProvider":
        key = derived.graph_key(source_sha256, _machine_tag())
        cached = derived.find(cache_dir, key, source_sha256)
        if cached is not None:
            opts = _options(ort, threads)
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                inner = ort.InferenceSession(
                    str(cached.path / derived.GRAPH_NAME), sess_options=opts, providers=providers
                )
                return _checked(Session(inner, path, inner.get_providers()[0]), device, providers)
            except Exception:  # damaged beyond what its checksums saw, or just moved aside
                derived.set_aside(cached.path, cached.inode)
    opts = _options(ort, threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    fallback = None
    with derived.new_entry(
        cache_dir if key else None, key or "", "onnx-graph", source_sha256 or ""
    ) as folder:
        if folder is not None:
            # Written into the entry's private folder, published whole once ORT has
            # written both files. The weights go to a file of their own: ONNX Runtime
            # then reads them straight into place instead of through a 1.2 GB protobuf,
            # which (fp32 ViT-L/14) took start-up from 5.8 to 1.5-2.2 s and peak memory
            # from 1.8 to 1.3 GB. The graph names that file relative to itself.
            opts.optimized_model_filepath = str(folder / derived.GRAPH_NAME)
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", derived.GRAPH_WEIGHTS
            )
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
            )
        try:
            inner = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            if providers[0] != "CPUExecutionProvider" and device == "auto":
                fallback = f"CUDA could not load {path.name} ({one_line(exc, 200)}); using the CPU"
                inner = ort.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            else:
                raise SetupError(f"{path}: onnxruntime cannot load this model: {exc}") from exc
    return _checked(Session(inner, path, inner.get_providers()[0], fallback), device, providers)


def _options(ort: Any, threads: int | None) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = default_threads() if threads is None else threads
    opts.log_severity_level = 3
    # ONNX Runtime's threads spin for a while after each run. They then hold the cores
    # that the gallery search, the spread and the next photo's decoding need (numpy's
    # mat-vec over 100K points ran at half speed); stopping them when a run ends costs
    # the encoder nothing measurable, since they still spin between its operators.
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def _checked(session: Session, device: str, providers: list[str]) -> Session:
    """The session, refused when CUDA was demanded but not used; notes a silent fallback."""
    path, used = session.path, session.provider
    if device == "cuda" and used != "CUDAExecutionProvider":
        raise SetupError(
            f"{path}: CUDA was asked for but onnxruntime fell back to {used} "
            "(check the CUDA and cuDNN libraries, or use --device cpu)"
        )
    if providers[0] == "CUDAExecutionProvider" and used != "CUDAExecutionProvider":
        session.fallback = (
            session.fallback or "CUDA is not usable here (see --verbose); using the CPU"
        )
    return session
