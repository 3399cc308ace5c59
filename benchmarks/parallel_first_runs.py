"""Many `geoguess` processes started at once on an empty derived cache.

Builds (or reuses) the tiny random model set in a private GEOGUESS_HOME, then for each
of R rounds empties the derived cache and the trust records, starts N
`python -m geoguess --json PHOTO` processes at the same moment, and checks that every
one exits 0 with the same answer. After each round it also checks that the cache left
behind works: one more run gives the same answer, a `scan` of a small folder locates
every photo, and `geoguess models verify` passes. Prints the counts; exits 1 on any
failure.

    python benchmarks/parallel_first_runs.py --rounds 40 --procs 8
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "tiny"


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GEOGUESS_HOME=str(home), GEOGUESS_MODEL=MODEL, HF_HUB_DISABLE_TELEMETRY="1")
    for var in ("GEOGUESS_CACHE_DIR", "GEOGUESS_DERIVED_CACHE"):
        env.pop(var, None)
    return env


def _geoguess(*args: str) -> list[str]:
    return [sys.executable, "-m", "geoguess", *args]


def _build(home: Path) -> None:
    if (home / "models" / MODEL / "manifest.json").is_file():
        return
    cmd = _geoguess("models", "build", "--backbone", "random:tiny", "--gallery-limit", "2000")
    res = subprocess.run(
        [*cmd, "--name", MODEL], env=_env(home), capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        sys.exit(f"building the tiny model set failed:\n{res.stderr}")


def _photo(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    path = folder / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


def _answer(stdout: str) -> str | None:
    """The predictions of a --json run, or None when the output is not one valid record."""
    try:
        record = json.loads(stdout)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("error") or not record.get("predictions"):
        return None
    return json.dumps(record["predictions"], sort_keys=True)


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("warning:")]
    return lines[-1][:200] if lines else "(no message)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--procs", type=int, default=8, help="processes started at once per round")
    ap.add_argument("--photo", type=Path, help="photo to locate (default: a synthetic JPEG)")
    ap.add_argument("--home", type=Path, help="GEOGUESS_HOME to build in and reuse")
    ap.add_argument(
        "--precisions", default="int8,fp32", help="cycled over the rounds (default int8,fp32)"
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="geoguess-parallel-"))
    home = args.home or work / "home"
    env = _env(home)
    _build(home)
    photo = args.photo or _photo(work)
    scan_dir = work / "scan"
    scan_dir.mkdir()
    for i in range(3):
        shutil.copy(photo, scan_dir / f"p{i}{photo.suffix}")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    cache = home / "cache"

    runs = failed = broken_rounds = leftovers = 0
    errors: collections.Counter[str] = collections.Counter()
    reference: dict[str, str] = {}
    started = time.perf_counter()
    for rnd in range(args.rounds):
        precision = precisions[rnd % len(precisions)]
        # An empty cache, as on a fresh install: no derived entries, no trust records.
        shutil.rmtree(cache, ignore_errors=True)
        cmd = _geoguess("--json", "--precision", precision, str(photo))
        procs = [
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(args.procs)
        ]
        answers = []
        for p in procs:
            out, err = p.communicate()
            runs += 1
            answer = _answer(out)
            if p.returncode != 0 or answer is None:
                failed += 1
                errors[f"exit {p.returncode}: {_first_line(err)}"] += 1
            else:
                answers.append(answer)
        reference.setdefault(precision, answers[0] if answers else "")
        differing = sum(a != reference[precision] for a in answers)
        if differing:
            failed += differing
            errors["answer differs from the other runs"] += differing

        # What the round left behind must work for every later run.
        problems = []
        later = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if later.returncode != 0 or _answer(later.stdout) != reference[precision]:
            problems.append(f"later run: exit {later.returncode}: {_first_line(later.stderr)}")
        csv = work / f"scan-{rnd}.csv"
        scan = subprocess.run(
            _geoguess("scan", str(scan_dir), "-o", str(csv), "--precision", precision, "-q"),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        rows = len(csv.read_text().splitlines()) - 1 if csv.is_file() else 0
        if scan.returncode != 0 or rows != 3:
            problems.append(
                f"scan: exit {scan.returncode}, {rows} rows: {_first_line(scan.stderr)}"
            )
        verify = subprocess.run(
            _geoguess("models", "verify", MODEL), env=env, capture_output=True, text=True
        )
        if verify.returncode != 0:
            problems.append(f"verify: exit {verify.returncode}: {_first_line(verify.stderr)}")
        derived = cache / "derived"
        temp = [p.name for p in derived.glob(".tmp-*")] if derived.is_dir() else []
        if temp:
            leftovers += len(temp)
            problems.append(f"temporary folders left behind: {', '.join(temp)}")
        if problems:
            broken_rounds += 1
            for prob in problems:
                errors[prob] += 1
        status = "ok" if not problems and not differing and len(answers) == args.procs else "FAIL"
        print(
            f"round {rnd + 1:3d}/{args.rounds} {precision}: "
            f"{len(answers)}/{args.procs} ok, later checks {'ok' if not problems else 'FAILED'}"
            f" [{status}]",
            flush=True,
        )

    wall = time.perf_counter() - started
    print(
        f"\n{args.rounds} rounds x {args.procs} processes at once on an empty derived cache: "
        f"{runs} runs, {failed} failed; {broken_rounds} rounds left a cache that later runs, "
        f"scans or verify could not use; {leftovers} temporary folders left behind "
        f"({wall:.0f} s, {wall / max(args.rounds, 1):.1f} s per round)"
    )
    for message, count in errors.most_common(10):
        print(f"  {count} x {message}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed or broken_rounds else 0


if __name__ == "__main__":
    sys.exit(main())
