"""`geoguess scan` killed with SIGKILL at random moments, and power cuts, then resumed.

Makes a scan folder (a seeded random subset of a folder of photos, e.g. the 3,000
IM2GPS3K test photos, plus the real photos of ../shared/photos), writes a reference
output with an uninterrupted scan (twice: the two must agree), then for each round
starts the same scan into a fresh output, sends SIGKILL at a random (seeded) moment,
possibly several times, and reruns it until it completes (the resume). The final file
must be byte-identical to the reference. Some kills are followed by a simulated power
cut: the output is cut at a random byte offset, or its tail from that offset is
overwritten with zero bytes (what a lost page cache leaves on some file systems),
before the resume, which must repair it to the same bytes. Each output format gets
its own kills (CSV and JSON Lines by default). Prints the counts; exits 1 on any
failure.

Uses the tiny random model set (built into the work folder's GEOGUESS_HOME unless
``--home`` has one); its answers mean nothing, but the scan pipeline, output writing
and resume are the real ones.

    python benchmarks/scan_interrupts.py --photos /tmp/im2gps3k --subset 500 \\
        --kills csv=30 --kills jsonl=10
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MODEL = "tiny"
SUFFIXES = {"csv": ".csv", "jsonl": ".jsonl", "geojson": ".geojson"}
HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parent.parent / "shared" / "photos"


def _env(home: Path, model: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GEOGUESS_HOME=str(home), GEOGUESS_MODEL=model, HF_HUB_DISABLE_TELEMETRY="1")
    return env


def _build(home: Path) -> None:
    if (home / "models" / MODEL / "manifest.json").is_file():
        return
    print(f"building the tiny random model set in {home} ...", flush=True)
    cmd = [sys.executable, "-m", "geoguess", "models", "build", "--backbone", "random:tiny"]
    res = subprocess.run(
        [*cmd, "--name", MODEL], env=_env(home, MODEL), capture_output=True, text=True
    )
    if res.returncode != 0:
        sys.exit(f"building the tiny model set failed:\n{res.stderr}")


def _place(src: Path, dst: Path) -> None:
    # A hard link where the file system allows it (no copy of hundreds of MB).
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _make_folder(
    folder: Path, photos: Path | None, subset: int, shared: Path | None, seed: int
) -> int:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = 0
    if photos is not None:
        names = sorted(p.name for p in photos.iterdir() if p.is_file())
        for name in random.Random(seed).sample(names, min(subset, len(names))):
            _place(photos / name, folder / name)
            count += 1
    if shared is not None and shared.is_dir():
        (folder / "shared").mkdir()
        for p in sorted(shared.iterdir()):
            if p.is_file() and p.name != "MANIFEST.csv":
                _place(p, folder / "shared" / p.name)
                count += 1
    return count


@dataclass
class Counts:
    rounds: int = 0
    kills: int = 0
    finished_before_kill: int = 0
    torn: int = 0  # kills that left a last row cut in the middle
    cuts: int = 0  # simulated power cuts (truncated)
    zeroed: int = 0  # simulated power cuts (tail overwritten with zeros)
    resumes: int = 0
    identical: int = 0
    repaired: int = 0  # rounds with a power cut whose final file is identical
    failures: list[str] = field(default_factory=list)


class Scanner:
    def __init__(self, folder: Path, env: dict[str, str], extra: list[str], log: Path):
        self.folder = folder
        self.env = env
        self.extra = extra
        self.log = log

    def cmd(self, output: Path) -> list[str]:
        base = [sys.executable, "-m", "geoguess", "scan", str(self.folder), "-o", str(output)]
        return [*base, "-q", *self.extra]

    def start(self, output: Path) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            # A session of its own, so that the kill reaches only this scan.
            return subprocess.Popen(
                self.cmd(output),
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def run(self, output: Path) -> tuple[int, float]:
        t0 = time.perf_counter()
        proc = self.start(output)
        return proc.wait(), time.perf_counter() - t0


def _power_cut(path: Path, rng: random.Random, counts: Counts) -> str:
    """Cut the file at a random offset, or zero its tail from there; what was done."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return ""
    offset = rng.randrange(size)
    if rng.random() < 0.5:
        os.truncate(path, offset)
        counts.cuts += 1
        return f"cut at {offset}/{size}"
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * (size - offset))
    counts.zeroed += 1
    return f"zeroed from {offset}/{size}"


def run_format(
    scanner: Scanner,
    fmt: str,
    kills_wanted: int,
    work: Path,
    rng: random.Random,
    args: argparse.Namespace,
) -> Counts:
    counts = Counts()
    suffix = SUFFIXES[fmt]
    reference = work / f"reference{suffix}"
    reference.unlink(missing_ok=True)
    # Twice: the first also fills the derived cache, so the second times a warm scan
    # (the span kills are drawn from), and the two must agree to the byte.
    rc_ref, _ = scanner.run(reference)
    ref = reference.read_bytes() if reference.is_file() else b""
    again = work / f"reference-again{suffix}"
    again.unlink(missing_ok=True)
    rc_again, t_ref = scanner.run(again)
    if rc_ref not in (0, 1) or not ref:
        counts.failures.append(f"{fmt}: reference scan exited {rc_ref}; see {scanner.log}")
        return counts
    if rc_again != rc_ref or again.read_bytes() != ref:
        counts.failures.append(f"{fmt}: two uninterrupted scans differ ({reference}, {again})")
        return counts
    print(f"{fmt}: reference {len(ref)} bytes, {t_ref:.1f} s (exit {rc_ref})", flush=True)
    output = work / f"out{suffix}"
    while counts.kills < kills_wanted:
        counts.rounds += 1
        output.unlink(missing_ok=True)
        events: list[str] = []
        cut = False
        for _ in range(rng.randint(1, args.max_kills_per_round)):
            if counts.kills >= kills_wanted:
                break
            proc = scanner.start(output)
            # Anywhere from interpreter start-up to the end of a whole scan.
            delay = rng.uniform(0.0, t_ref)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                counts.kills += 1
                data = output.read_bytes() if output.exists() else b""
                torn = bool(data) and not data.endswith(b"\n")
                counts.torn += torn
                event = f"kill at {delay:.2f} s ({len(data)} bytes{', torn' if torn else ''})"
                if rng.random() < args.power_cuts:
                    what = _power_cut(output, rng, counts)
                    if what:
                        cut = True
                        event += f", {what}"
                events.append(event)
            else:
                counts.finished_before_kill += 1
                events.append(f"finished before the kill at {delay:.2f} s")
                break  # the file is complete: later runs would only resume nothing
        counts.resumes += 1
        rc, _ = scanner.run(output)  # the resume, to the end
        final = output.read_bytes() if output.exists() else b""
        ok = rc == rc_ref and final == ref
        if ok:
            counts.identical += 1
            counts.repaired += cut
        else:
            keep = work / f"failure-{fmt}-{counts.rounds}{suffix}"
            if output.exists():
                shutil.copy2(output, keep)
            where = next((i for i, (a, b) in enumerate(zip(final, ref)) if a != b), None)
            if where is None:
                where = min(len(final), len(ref))
            counts.failures.append(
                f"{fmt} round {counts.rounds}: resume exited {rc} (reference {rc_ref}), "
                f"{len(final)} vs {len(ref)} bytes, first difference at byte {where}; "
                f"kept as {keep}; events: {'; '.join(events)}"
            )
        if args.verbose:
            print(
                f"  {fmt} round {counts.rounds}: {'ok' if ok else 'DIFFERENT'}: "
                f"{'; '.join(events)}",
                flush=True,
            )
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, help="folder of photos to draw the subset from")
    ap.add_argument("--subset", type=int, default=500, help="photos drawn from --photos")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="real photos added")
    ap.add_argument(
        "--kills",
        action="append",
        metavar="FORMAT=N",
        help="SIGKILLs for an output format (csv, jsonl, geojson) [default: csv=30, jsonl=10]",
    )
    ap.add_argument("--max-kills-per-round", type=int, default=3)
    ap.add_argument(
        "--power-cuts", type=float, default=0.5, help="share of kills followed by a power cut"
    )
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--home", type=Path, help="GEOGUESS_HOME with the model set")
    ap.add_argument("--model", default=MODEL, help="model set (built only when 'tiny')")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--batch-size", type=int, help="passed to scan")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per round")
    args = ap.parse_args()

    wanted: dict[str, int] = {}
    for item in args.kills or ["csv=30", "jsonl=10"]:
        fmt, _, n = item.partition("=")
        if fmt not in SUFFIXES or not n.isdigit():
            ap.error(f"--kills {item!r}: expected FORMAT=N with FORMAT one of csv, jsonl, geojson")
        wanted[fmt] = int(n)
    work = args.work or Path(tempfile.mkdtemp(prefix="geoguess-interrupts-"))
    work.mkdir(parents=True, exist_ok=True)
    home = args.home or work / "home"
    if args.model == MODEL:
        _build(home)
    shared = args.shared if args.shared and args.shared.is_dir() else None
    folder = work / "photos"
    n = _make_folder(folder, args.photos, args.subset, shared, args.seed)
    if n == 0:
        ap.error("no photos: give --photos and/or --shared")
    print(f"scan folder {folder}: {n} files (seed {args.seed})", flush=True)
    extra = ["--precision", args.precision]
    if args.batch_size:
        extra += ["--batch-size", str(args.batch_size)]
    scanner = Scanner(folder, _env(home, args.model), extra, work / "scan-stderr.log")
    rng = random.Random(args.seed)
    failures = 0
    t0 = time.perf_counter()
    for fmt, kills in wanted.items():
        c = run_format(scanner, fmt, kills, work, rng, args)
        print(
            f"{fmt}: rounds {c.rounds}, kills {c.kills} ({c.torn} left a torn row, "
            f"{c.finished_before_kill} scans finished before their kill), power cuts "
            f"{c.cuts + c.zeroed} ({c.cuts} truncated, {c.zeroed} zeroed tails), resumes "
            f"{c.resumes}, identical {c.identical}/{c.rounds}, repaired {c.repaired}, "
            f"failures {len(c.failures)}",
            flush=True,
        )
        for line in c.failures:
            print(f"  FAILED: {line}", flush=True)
        failures += len(c.failures)
    print(f"total {time.perf_counter() - t0:.0f} s; work folder {work}", flush=True)
    if not args.keep and not failures and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
