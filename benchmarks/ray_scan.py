"""The Ray scan against the single-process scan, over the same real photos, in one run.

Builds (or reuses) the tiny random model set in a GEOGUESS_HOME, makes a folder of
COPIES hard links to each of the real photos (../shared/photos), then locates it

  * with the single-process scan (geoguess.scan.scan_folder), and
  * with the Ray scan (geoguess.ray_scan.scan_folder) on a local Ray, for each
    workers x threads layout asked for,

and prints for each the median seconds over ``--rounds`` passes (taken in turns),
photos per second, the ratio to the local scan, and the peak resident memory: of the
local scan's process (it runs in a child process, model loaded before its clock
starts), of the Ray driver and of the workers (summed over the actor processes,
sampled from /proc every 0.2 s, in the last round), plus the time Ray takes to start
(ray.init, and one worker opening the model set). Every run's results are checked
to be the same set of paths, each once. The tiny model's answers mean nothing; only
the plumbing and the decoding are real, so the encoder's share of the time is far
smaller than with ViT-L/14.

    python benchmarks/ray_scan.py --copies 20 --layouts 1x2,2x1 --rounds 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "photos"


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"MapWorker(" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


class PeakMemory:
    """Peak RSS of this process and, summed, of the Ray actor processes, while running."""

    def __init__(self) -> None:
        self.driver_kb = 0
        self.workers_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.driver_kb = max(self.driver_kb, _rss_kb(os.getpid()))
            self.workers_kb = max(self.workers_kb, sum(_rss_kb(p) for p in _actor_pids()))
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _build(home: Path, model: str) -> None:
    if (home / "models" / model / "manifest.json").is_file():
        return
    cmd = [sys.executable, "-m", "geoguess", "models", "build", "--backbone", "random:tiny"]
    env = {**os.environ, "GEOGUESS_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    res = subprocess.run([*cmd, "--name", model], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"building the tiny model set failed:\n{res.stderr}")


def _folder(root: Path, copies: int) -> Path:
    photos = sorted(p for p in PHOTOS.iterdir() if p.name != "MANIFEST.csv")
    if not photos:
        sys.exit(f"no photos in {PHOTOS}")
    for i in range(copies):
        sub = root / f"copy{i:03d}"
        sub.mkdir(parents=True)
        for photo in photos:
            try:
                os.link(photo, sub / photo.name)
            except OSError:  # another file system: copies then
                (sub / photo.name).write_bytes(photo.read_bytes())
    return root


def _line(name: str, n: int, seconds: float, base: float | None, mem: PeakMemory) -> str:
    rate = n / seconds
    ratio = "" if base is None else f"  {rate / base:4.2f}x local"
    return (
        f"{name:<22} {seconds:7.1f} s  {rate:6.1f} photos/s{ratio}"
        f"  peak RSS driver {mem.driver_kb / 1024:6.0f} MiB,"
        f" workers {mem.workers_kb / 1024:6.0f} MiB"
    )


def _local_child(listing: Path, model: str, precision: str | None) -> None:
    """The local scan of the files listed: prints seconds, peak RSS (KiB), precision."""
    import resource

    from geoguess import scan
    from geoguess.geolocator import Geolocator

    files = [Path(line) for line in listing.read_text(encoding="utf-8").splitlines()]
    geo = Geolocator.load(model, precision=precision, device="cpu")
    geo.image_encoder  # noqa: B018  (loaded before the clock starts, as Ray's describe)
    geo.searcher  # noqa: B018
    done: list[str] = []
    t = time.perf_counter()
    scan.scan_folder(geo, listing.parent, files=files, on_result=lambda r: done.append(r.file))
    seconds = time.perf_counter() - t
    assert sorted(done) == sorted(map(str, files))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(seconds, peak, geo.precision)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--local-child":
        ap = argparse.ArgumentParser()
        ap.add_argument("--local-child", type=Path)
        ap.add_argument("--model")
        ap.add_argument("--precision")
        child = ap.parse_args()
        _local_child(child.local_child, child.model, child.precision)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="GEOGUESS_HOME (default: a temporary one)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--precision", help="default: the CPU default (int8)")
    ap.add_argument("--copies", type=int, default=20, help="hard links to each real photo")
    ap.add_argument(
        "--layouts", default="1x2,2x1", help="Ray workers x ORT threads, comma-separated"
    )
    ap.add_argument("--rounds", type=int, default=2, help="timed passes of each variant")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs given to the local Ray")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="geoguess-ray-bench-")
    home = args.home or Path(tmp.name) / "home"
    os.environ["GEOGUESS_HOME"] = str(home)
    os.environ["GEOGUESS_MODEL"] = args.model
    _build(home, args.model)
    folder = _folder(Path(tmp.name) / "photos", args.copies)

    from geoguess import ray_scan, scan

    files = scan.list_images(folder)
    print(f"{len(files)} photos ({args.copies} links to each of {PHOTOS}), {os.cpu_count()} CPUs")

    # The local scan runs in a child process of its own, so that its loaded model is not
    # counted in the Ray driver's memory, nor Ray's in its own.
    listing = Path(tmp.name) / "files.txt"
    listing.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
    local_precision = "?"

    import ray

    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=40)
    init_s = time.perf_counter() - t
    options = ray_scan.WorkerOptions(precision=args.precision, env=ray_scan.driver_env())
    layouts = [tuple(int(x) for x in lay.lower().split("x")) for lay in args.layouts.split(",")]

    def run_local() -> tuple[float, PeakMemory]:
        nonlocal local_precision
        # The last Ray scan's actors take a moment to exit: not the local scan's memory.
        deadline = time.monotonic() + 30
        while _actor_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        cmd = [sys.executable, __file__, "--local-child", str(listing), "--model", args.model]
        if args.precision:
            cmd += ["--precision", args.precision]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        seconds, rss_kb, local_precision = float(out[0]), int(out[1]), out[2]
        mem = PeakMemory()
        mem.driver_kb = rss_kb
        return seconds, mem

    describe: list[float] = []
    ray_precision: list[str] = []

    def run_ray(workers: int, threads: int, some: list[Path]) -> tuple[float, PeakMemory]:
        t = time.perf_counter()
        engine = ray_scan.RayScan(dataclasses.replace(options, threads=threads), workers=workers)
        describe.append(time.perf_counter() - t)
        ray_precision[:] = [engine.precision]
        done: list[str] = []
        with PeakMemory() as mem:
            t = time.perf_counter()
            summary = ray_scan.scan_folder(
                engine, folder, files=some, on_result=lambda r: done.append(r.file)
            )
            seconds = time.perf_counter() - t
        assert len(done) == len(set(done)) == len(some), "lost or doubled rows"
        assert not summary.interrupted
        return seconds, mem

    try:
        # Ray's first actors also start its worker processes: one small untimed scan, so
        # that the first layout measured does not pay for all of them.
        run_ray(*layouts[0], files[:8])
        times: dict[str, list[float]] = {}
        mems: dict[str, PeakMemory] = {}
        # Rounds take turns, so that a slow spell of a shared machine hits all alike.
        for _ in range(args.rounds):
            seconds, mems["local"] = run_local()
            times.setdefault("local", []).append(seconds)
            for workers, threads in layouts:
                name = f"ray {workers}x{threads}"
                seconds, mems[name] = run_ray(workers, threads, files)
                times.setdefault(name, []).append(seconds)
        median = {k: statistics.median(v) for k, v in times.items()}
        local_rate = len(files) / median["local"]
        for name, seconds in median.items():
            spread = ", ".join(f"{x:.1f}" for x in times[name])
            base = None if name == "local" else local_rate
            precision = local_precision if name == "local" else ray_precision[0]
            print(_line(f"{name} ({precision})", len(files), seconds, base, mems[name]))
            print(f"{'':<22} rounds: {spread} s")
        print(
            f"Ray start-up: ray.init of a local Ray ({args.cpus} CPUs) {init_s:.1f} s; a "
            f"worker opening the model set to describe it {min(describe):.1f}-"
            f"{max(describe):.1f} s; the actors' start (model load) is inside each Ray time"
        )
    finally:
        ray.shutdown()
        tmp.cleanup()


if __name__ == "__main__":
    main()
