"""``geoguess bench``: per-image latency, cold start and peak memory against the reference.

Every variant runs in its own child process, so each one's peak memory and cold start
are its own, and all of them run in one invocation on the same photos, so the ratios
compare like with like. The reference, the upstream ``geoclip`` package's
``GeoCLIP.predict()``, needs PyTorch, so its worker lives outside the package
(benchmarks/reference_worker.py) and is started only when asked for. Models built
from a random backbone (``--backbone random:vit-l14``) cost the same FLOPs as the real
ViT-L/14 and are what this machine can measure; their answers are never shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
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
    warm_ms: float  # median per image over every timed call, after one warm-up image
    cold_s: float  # new process to first result, model load included
    peak_rss_mb: float
    cli_cold_s: float | None = None  # `geoguess --json PHOTO` wall time in a new process
    # Median over photos and rounds of (reference time / this variant's time), each pair
    # timed back to back, so that a slow spell of the machine hits both sides alike.
    speedup: float | None = None
    cosine_to_fp32: float | None = None
    samples: int = 0  # timed calls behind warm_ms
    notes: dict[str, Any] = field(default_factory=dict)


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


# --- variants (each runs in a child process and answers requests one at a time) --------


class _GeoguessVariant:
    def __init__(self, args: dict[str, Any]) -> None:
        from .geolocator import Geolocator
        from .locate import locate

        self.geo = Geolocator.load(
            args["model"], precision=args["precision"], device=args["device"]
        )
        first = locate(self.geo, args["photos"][0], top_k=5)
        if first.error:
            raise SystemExit(f"{first.file}: {first.error}")
        self.ready = {"cold_s": time.time() - float(args["t0"]), "provider": self.geo.provider}

    def time(self, photo: str) -> float:
        from .locate import locate

        start = time.perf_counter()
        result = locate(self.geo, photo, top_k=5)
        elapsed = time.perf_counter() - start
        if result.error:
            raise SystemExit(f"{photo}: {result.error}")
        return elapsed

    def embed(self, photos: list[str]) -> list[list[float]]:
        from .locate import prepare

        return [
            self.geo.embed_pixels(prepare(self.geo, p).pixels[None])[0].tolist() for p in photos
        ]

    def finish(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"peak_rss_mb": peak_rss_mb(), "embeddings": self.embed(args["photos"])}


class _ScanVariant:
    """Alternates encoder-only passes over pre-decoded pixels with full scans."""

    def __init__(self, args: dict[str, Any]) -> None:
        import numpy as np

        from .geolocator import Geolocator
        from .locate import prepare

        self.geo = Geolocator.load(
            args["model"], precision=args["precision"], device=args["device"]
        )
        self.files = list(args["files"])
        self.batch = int(args["batch_size"] or self.geo.default_batch_size)
        self.pixels = np.stack([prepare(self.geo, f).pixels for f in self.files])
        emb = self.geo.embed_pixels(self.pixels[: self.batch])  # warm-up
        self.geo.search(emb, 5)
        self.ready = {"provider": self.geo.provider, "batch_size": self.batch}

    def encoder(self) -> float:
        start = time.perf_counter()
        for i in range(0, len(self.pixels), self.batch):
            self.geo.embed_pixels(self.pixels[i : i + self.batch])
        return time.perf_counter() - start

    def scan(self) -> float:
        from .scan import locate_files

        start = time.perf_counter()
        results = locate_files(self.geo, self.files, top_k=5, batch_size=self.batch)
        failed = [r for r in results if r.error is not None]
        if failed:
            raise SystemExit(f"{failed[0].file}: {failed[0].error}")
        return time.perf_counter() - start

    def finish(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"peak_rss_mb": peak_rss_mb()}


VARIANTS: dict[str, type] = {"geoguess": _GeoguessVariant, "scan": _ScanVariant}


def serve(variant_class: type) -> None:
    """Child side: set up from the first request line, then answer one line per line.

    A variant is a class built from the set-up arguments, with a ``ready`` dict (at least
    ``cold_s`` and ``provider``; ``notes`` is copied into the row), ``time(photo)``
    returning seconds, and ``finish(args)`` returning at least ``peak_rss_mb``. Worker
    scripts outside the package (the PyTorch reference in benchmarks/) call this.
    """
    # Replies travel on the original stdout; anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    args = json.loads(sys.stdin.readline())
    variant = variant_class(args)
    replies.write(json.dumps(variant.ready) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        if op == "finish":
            replies.write(json.dumps(variant.finish(args)) + "\n")
            return
        method = getattr(variant, op)
        replies.write(json.dumps({"s": method(**msg)}) + "\n")


class _Child:
    """The parent's handle on one variant's process."""

    #: Pause before timing a different process, so that the previous one's worker
    #: threads (ONNX Runtime and OpenMP spin for a while after a call) have gone idle.
    SETTLE_S = 0.2

    def __init__(
        self, kind: str, args: dict[str, Any], timeout: float, script: Path | None = None
    ) -> None:
        self.kind = kind
        self.timeout = timeout
        # Kept open for the child's lifetime and closed in close(): no `with` fits.
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
        payload = dict(args, t0=time.time())
        command = [str(script)] if script else ["-m", __name__, kind]
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.ready = self._ask(payload)

    def _ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        import threading

        assert self.proc.stdin is not None and self.proc.stdout is not None
        watchdog = threading.Timer(self.timeout, self.proc.kill)
        watchdog.start()
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        finally:
            watchdog.cancel()
        if not line:
            self.proc.kill()
            self.proc.wait()
            self._stderr.seek(0)
            tail = self._stderr.read().strip().splitlines()[-3:]
            raise SetupError(f"benchmark {self.kind} worker failed: {' | '.join(tail)}")
        return json.loads(line)

    def time(self, op: str = "time", **kwargs: Any) -> float:
        time.sleep(self.SETTLE_S)
        return float(self._ask({"op": op, **kwargs})["s"])

    def finish(self) -> dict[str, Any]:
        out = self._ask({"op": "finish"})
        self.close()
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


@dataclass
class ScanRow:
    precision: str
    device: str
    files: int
    batch_size: int
    rounds: int
    encoder_images_per_s: float  # mean over the encoder-only passes
    scan_files_per_s: float  # mean over the scan passes
    # Median over rounds of (scan throughput / encoder throughput), each round an
    # encoder-only pass and a scan pass back to back.
    ratio: float
    outside_encoder_share: float  # 1 - ratio: the scan's time not explained by the encoder
    peak_rss_mb: float


def bench_scan(
    model: str | None,
    photos: Sequence[Path],
    *,
    precision: str = "int8",
    device: str = "cpu",
    n_files: int = 48,
    batch_size: int | None = None,
    rounds: int = 3,
    reporter: Reporter | None = None,
    timeout: float = 1800,
) -> ScanRow:
    """Folder-scan throughput against the encoder-bound ceiling on the same photos."""
    rep = reporter or Reporter()
    paths = [str(p) for p in photos]
    files = [paths[i % len(paths)] for i in range(max(n_files, len(paths)))]
    args = {
        "model": model,
        "precision": precision,
        "device": device,
        "files": files,
        "batch_size": batch_size,
    }
    encoder_s: list[float] = []
    scan_s: list[float] = []
    with rep.task(f"scan throughput, {len(files)} files x {rounds}, {precision} on {device}"):
        child = _Child("scan", args, timeout)
        try:
            for _ in range(rounds):
                encoder_s.append(child.time("encoder"))
                scan_s.append(child.time("scan"))
            final = child.finish()
        finally:
            child.close()
    ratio = statistics.median(e / s for e, s in zip(encoder_s, scan_s))
    return ScanRow(
        precision,
        child.ready["provider"],
        len(files),
        child.ready["batch_size"],
        rounds,
        len(files) / statistics.mean(encoder_s),
        len(files) / statistics.mean(scan_s),
        ratio,
        max(0.0, 1 - ratio),
        final["peak_rss_mb"],
    )


def _cosine(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float(cos.mean())


def _cli_cold_s(
    model: str | None, precision: str, device: str, photo: str, timeout: float
) -> float:
    cmd = [sys.executable, "-m", "geoguess", "--json", "-p", precision, "--device", device, photo]
    cmd += ["-m", model] if model else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise SetupError(f"benchmark run of `geoguess {photo}` failed: {tail}")
    return elapsed


@dataclass(frozen=True)
class BenchPlan:
    """What ``geoguess bench`` compares on a device: the precisions timed side by side
    and the one the scan row runs (the one users get by default there)."""

    precisions: list[str]
    scan_precision: str
    on_cuda: bool


def bench_plan(device: str, precisions: Sequence[str] | None = None) -> BenchPlan:
    """The default comparison for ``device``: fp32 against int8 on CPU, fp16 against
    fp32 on CUDA (the pairs a user chooses between there); ``precisions`` overrides."""
    from .providers import providers_for

    on_cuda = providers_for(device)[0] == "CUDAExecutionProvider"
    chosen = list(precisions) if precisions else (["fp16", "fp32"] if on_cuda else ["fp32", "int8"])
    # The default on each device: fp16 on CUDA, int8 on CPU (geoguess.model.default_precision).
    preferred = "fp16" if on_cuda else "int8"
    scan = preferred if preferred in chosen else chosen[-1 if not on_cuda else 0]
    return BenchPlan(chosen, scan, on_cuda)


def bench_latency(
    model: str | None,
    photos: Sequence[Path],
    *,
    precisions: Sequence[str] = ("fp32", "int8"),
    device: str = "cpu",
    reference: Path | None = None,
    repeats: int = 2,
    rounds: int = 1,
    reference_clip: Path | None = None,
    reporter: Reporter | None = None,
    timeout: float = 1800,
) -> list[LatencyRow]:
    """Warm and cold per-image latency and peak memory of each variant, in one run.

    Every variant gets its own process. Each starts alone (its cold start is its own),
    then they take turns: per photo, the reference once, then each geoguess precision
    ``repeats`` times, for ``rounds`` passes over the photos. Timing them side by side
    rather than one after the other keeps a slow spell of a shared machine from
    landing on one variant only. ``reference`` is a worker script serving the reference
    (benchmarks/reference_worker.py in a source checkout: it needs PyTorch and geoclip,
    which geoguess itself never imports); ``reference_clip`` is a CLIP folder for it
    (default: the ViT-L/14 geometry with random weights).
    """
    rep = reporter or Reporter()
    paths = [str(p) for p in photos]
    children: dict[str, _Child] = {}
    rows: dict[str, LatencyRow] = {}
    times: dict[str, dict[int, list[float]]] = {}
    try:
        for precision in precisions:
            with rep.task(f"starting geoguess {precision} on {device}"):
                # One unmeasured run first: a set's first start writes the derived
                # cache (geoguess.derived), which every later start reads.
                _cli_cold_s(model, precision, device, paths[0], timeout)
                args = {"model": model, "precision": precision, "device": device, "photos": paths}
                child = children[precision] = _Child("geoguess", args, timeout)
                cli = _cli_cold_s(model, precision, device, paths[0], timeout)
            rows[precision] = LatencyRow(
                precision,
                child.ready["provider"],
                len(paths),
                0.0,
                child.ready["cold_s"],
                0.0,
                cli_cold_s=cli,
            )
        if reference:
            with rep.task("starting the reference geoclip predict()"):
                child = children["reference"] = _Child(
                    "reference",
                    {"photos": paths, "clip_path": str(reference_clip) if reference_clip else None},
                    timeout,
                    script=reference,
                )
            rows["reference"] = LatencyRow(
                "reference",
                child.ready["provider"],
                len(paths),
                0.0,
                child.ready["cold_s"],
                0.0,
                notes=dict(child.ready.get("notes", {})),
            )
        order = (["reference"] if reference else []) + list(precisions)
        times = {v: {} for v in order}
        calls = len(paths) * rounds * ((1 if reference else 0) + repeats * len(precisions))
        with rep.task("timing, variants taking turns", total=calls) as advance:
            for r in range(rounds):
                for i, photo in enumerate(paths):
                    key = r * len(paths) + i
                    for variant in order:
                        n = 1 if variant == "reference" else repeats
                        times[variant][key] = [
                            children[variant].time(photo=photo) for _ in range(n)
                        ]
                        advance(n)
        fp32_emb = None
        for variant in order:
            final = children.pop(variant).finish()
            row = rows[variant]
            samples = [t for ts in times[variant].values() for t in ts]
            row.warm_ms = 1000 * statistics.median(samples)
            row.samples = len(samples)
            row.peak_rss_mb = final["peak_rss_mb"]
            if variant == "fp32":
                fp32_emb = final["embeddings"]
            if "embeddings" in final and variant != "fp32" and fp32_emb is not None:
                row.cosine_to_fp32 = _cosine(fp32_emb, final["embeddings"])
    finally:
        for child in children.values():
            child.close()
    if reference:
        ref = times["reference"]
        for variant in precisions:
            ratios = [ref[k][0] / statistics.median(ts) for k, ts in times[variant].items()]
            rows[variant].speedup = statistics.median(ratios)
        rows["reference"].speedup = 1.0
    return [rows[v] for v in order]


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
    serve(VARIANTS[sys.argv[1]])
