"""``geoguess bench``: per-image latency, cold start and peak memory against the reference.

Every variant runs in its own child process, so each one's peak memory and cold start
are its own, and all of them run in one invocation on the same photos, so the ratios
compare like with like. The reference is the upstream ``geoclip`` package's
``GeoCLIP.predict()``; it needs the export and reference extras (torch, transformers,
geoclip). Models built from a random backbone (``--backbone random:vit-l14``) cost the
same FLOPs as the real ViT-L/14 and are what this machine can measure; their answers
are never shown.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ImageError, SetupError
from .reporting import Reporter


def usable_photos(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The photos that decode, and a message for each one that does not."""
    from .images import load_image

    ok, skipped = [], []
    for p in paths:
        try:
            load_image(p)
        except ImageError as exc:
            skipped.append(str(exc))
        else:
            ok.append(p)
    return ok, skipped


@dataclass
class LatencyRow:
    variant: str  # "reference", "fp32", "int8", "fp16"
    device: str
    images: int
    warm_ms: float  # median per image, after one warm-up image
    cold_s: float  # new process to first result, model load included
    peak_rss_mb: float
    cli_cold_s: float | None = None  # `geoguess --json PHOTO` wall time in a new process
    speedup: float | None = None  # reference warm time / this warm time
    cosine_to_fp32: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


# --- workers (run in child processes) ----------------------------------------------------


def _worker_geoguess(args: dict[str, Any]) -> dict[str, Any]:
    t0 = float(args["t0"])
    from .geolocator import Geolocator
    from .locate import locate, prepare

    geo = Geolocator.load(args["model"], precision=args["precision"], device=args["device"])
    photos = args["photos"]
    first = locate(geo, photos[0], top_k=5)
    cold = time.time() - t0
    times = []
    embeddings = []
    for _ in range(int(args["repeats"])):
        for p in photos:
            start = time.perf_counter()
            res = locate(geo, p, top_k=5)
            times.append(time.perf_counter() - start)
            if res.error:
                raise SystemExit(f"{p}: {res.error}")
    for p in photos:
        prep = prepare(geo, p)
        embeddings.append(geo.embed_pixels(prep.pixels[None])[0].tolist())
    return {
        "cold_s": cold,
        "warm_ms": 1000 * statistics.median(times),
        "peak_rss_mb": _peak_rss_mb(),
        "provider": geo.provider,
        "first_ok": first.error is None,
        "embeddings": embeddings,
    }


def _worker_reference(args: dict[str, Any]) -> dict[str, Any]:
    t0 = float(args["t0"])
    import warnings

    warnings.simplefilter("ignore")
    import torch
    from geoclip import GeoCLIP

    torch.manual_seed(0)
    # Full ViT-L/14 geometry with random weights (the real one cannot be downloaded
    # here): the same FLOPs as upstream, with GeoCLIP's released head, location
    # encoder, logit scale and gallery loaded exactly as upstream does.
    model = GeoCLIP(from_pretrained=False, clip_pretrained=False)
    model.weights_folder = os.path.join(
        os.path.dirname(sys.modules[GeoCLIP.__module__].__file__), "weights"
    )
    model._load_weights()
    model.eval()
    photos = args["photos"]
    with torch.no_grad():
        model.predict(photos[0], top_k=5)
        cold = time.time() - t0
        times = []
        for _ in range(int(args["repeats"])):
            for p in photos:
                start = time.perf_counter()
                model.predict(p, top_k=5)
                times.append(time.perf_counter() - start)
    return {
        "cold_s": cold,
        "warm_ms": 1000 * statistics.median(times),
        "peak_rss_mb": _peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
    }


def _worker_scan(args: dict[str, Any]) -> dict[str, Any]:
    from .geolocator import Geolocator
    from .locate import prepare
    from .scan import locate_files

    geo = Geolocator.load(args["model"], precision=args["precision"], device=args["device"])
    files = list(args["files"])
    batch = int(args["batch_size"])
    # Encoder-bound ceiling: the same photos decoded beforehand, only encoder batches timed.
    import numpy as np

    pixels = np.stack([prepare(geo, f).pixels for f in files])
    geo.embed_pixels(pixels[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        geo.embed_pixels(pixels[i : i + batch])
    encoder_s = time.perf_counter() - start
    del pixels
    rss_before_scan = _peak_rss_mb()
    start = time.perf_counter()
    n = sum(1 for r in locate_files(geo, files, top_k=5, batch_size=batch) if r.error is None)
    scan_s = time.perf_counter() - start
    return {
        "files": len(files),
        "located": n,
        "batch_size": batch,
        "encoder_images_per_s": len(files) / encoder_s,
        "scan_files_per_s": len(files) / scan_s,
        "outside_encoder_share": max(0.0, 1 - encoder_s / scan_s),
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_before_scan_mb": rss_before_scan,
        "provider": geo.provider,
    }


@dataclass
class ScanRow:
    precision: str
    device: str
    files: int
    batch_size: int
    encoder_images_per_s: float
    scan_files_per_s: float
    ratio: float  # scan throughput / encoder-bound throughput
    outside_encoder_share: float
    peak_rss_mb: float


def bench_scan(
    model: str | None,
    photos: Sequence[Path],
    *,
    precision: str = "int8",
    device: str = "cpu",
    n_files: int = 48,
    batch_size: int = 16,
    reporter: Reporter | None = None,
    timeout: float = 1800,
) -> ScanRow:
    """Folder-scan throughput against the encoder-bound ceiling on the same photos."""
    rep = reporter or Reporter()
    paths = [str(p) for p in photos]
    files = [paths[i % len(paths)] for i in range(max(n_files, len(paths)))]
    with rep.task(f"scan throughput, {len(files)} files, {precision} on {device}"):
        out = _run_worker(
            "scan",
            {
                "model": model,
                "precision": precision,
                "device": device,
                "files": files,
                "batch_size": batch_size,
            },
            timeout,
        )
    return ScanRow(
        precision,
        out["provider"],
        out["files"],
        out["batch_size"],
        out["encoder_images_per_s"],
        out["scan_files_per_s"],
        out["scan_files_per_s"] / out["encoder_images_per_s"],
        out["outside_encoder_share"],
        out["peak_rss_mb"],
    )


WORKERS = {"geoguess": _worker_geoguess, "reference": _worker_reference, "scan": _worker_scan}


def _run_worker(kind: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    payload = dict(args, t0=time.time())
    proc = subprocess.run(
        [sys.executable, "-m", "geoguess.bench", kind, json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SetupError(f"benchmark {kind} worker failed: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cosine(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float(cos.mean())


def bench_latency(
    model: str | None,
    photos: Sequence[Path],
    *,
    precisions: Sequence[str] = ("fp32", "int8"),
    device: str = "cpu",
    reference: bool = True,
    repeats: int = 2,
    reporter: Reporter | None = None,
    timeout: float = 1800,
) -> list[LatencyRow]:
    """Warm and cold per-image latency and peak memory of each variant, in one run."""
    rep = reporter or Reporter()
    paths = [str(p) for p in photos]
    rows: list[LatencyRow] = []
    fp32_emb = None
    for precision in precisions:
        with rep.task(f"geoguess {precision} on {device}"):
            out = _run_worker(
                "geoguess",
                {
                    "model": model,
                    "precision": precision,
                    "device": device,
                    "photos": paths,
                    "repeats": repeats,
                },
                timeout,
            )
        row = LatencyRow(
            precision,
            out["provider"],
            len(paths),
            out["warm_ms"],
            out["cold_s"],
            out["peak_rss_mb"],
        )
        cmd = [
            sys.executable,
            "-m",
            "geoguess",
            "--json",
            "-p",
            precision,
            "--device",
            device,
            paths[0],
        ] + (["-m", model] if model else [])
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, timeout=timeout)
        row.cli_cold_s = time.perf_counter() - start
        if precision == "fp32":
            fp32_emb = out["embeddings"]
        elif fp32_emb is not None:
            row.cosine_to_fp32 = _cosine(fp32_emb, out["embeddings"])
        rows.append(row)
    if reference:
        with rep.task("reference geoclip predict() (re-encodes the 100K gallery each call)"):
            # One repeat: each call costs tens of seconds on a laptop CPU.
            out = _run_worker("reference", {"photos": paths, "repeats": 1}, timeout)
        ref = LatencyRow(
            "reference",
            "torch-cpu",
            len(paths),
            out["warm_ms"],
            out["cold_s"],
            out["peak_rss_mb"],
            notes={"torch_threads": out["torch_threads"]},
        )
        for row in rows:
            row.speedup = ref.warm_ms / row.warm_ms
        ref.speedup = 1.0
        rows.insert(0, ref)
    return rows


def help_seconds(repeats: int = 3) -> float:
    """Best wall time of `geoguess --help` in a new process."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "geoguess", "--help"], capture_output=True, check=True
        )
        best = min(best, time.perf_counter() - start)
    return best


def rows_to_dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


if __name__ == "__main__":
    kind, raw = sys.argv[1], sys.argv[2]
    result = WORKERS[kind](json.loads(raw))
    sys.stdout.write(json.dumps(result) + "\n")
