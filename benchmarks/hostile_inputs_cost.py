"""Peak RSS and time of the hostile inputs of issue 12 (problems 2 and 3), each in a child.

Makes a FIFO named ``x.jpg`` (no writer ever opens it), a symlink ``zero.jpg`` to
/dev/zero, and PNG strips of 20000 x 1 and 60000 x 1 pixels (a few hundred bytes each),
then measures, for each one and for a normal photo as the baseline, in a child process
of its own (peak RSS from wait4, so the child's alone, and wall time, under a time
limit so that a hang shows as one):

- ``decode``: ``geoguess.images.load_image(path)`` alone, the decoder path;
- ``locate``: ``geoguess --json PATH`` with the model set (warm derived cache);
- ``scan``: one ``geoguess scan`` of a folder holding all of them and two photos.

Every hostile case must end with an error (exit 1 from the CLI, ImageError from
load_image), in seconds, with a peak RSS close to the baseline's. Prints one line per
case; exits 1 when a case hangs, crashes or is accepted.

    GEOGUESS_HOME=/tmp/b-home GEOGUESS_MODEL=tiny python benchmarks/hostile_inputs_cost.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from child_usage import run_measured

HERE = Path(__file__).resolve().parent
DEFAULT_PHOTO = HERE.parent.parent / "shared" / "photos" / "es_Canon_40D.jpg"

_DECODE = """
import sys
from geoguess.errors import ImageError
from geoguess.images import load_image
try:
    image = load_image(sys.argv[1])
except ImageError as exc:
    print(f"ImageError: {exc}")
    sys.exit(1)
print(f"decoded {image.size[0]}x{image.size[1]}")
"""


def _measured(
    cmd: list[str], env: dict[str, str], limit: float
) -> tuple[int | None, float, float, str]:
    """(exit or None when killed at ``limit``, wall s, peak RSS MB, last output line)."""
    run = run_measured(cmd, env, limit=limit, merge_stderr=True)
    lines = [ln for ln in run.stdout.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    with contextlib.suppress(ValueError, AttributeError):  # a --json record: its error
        last = json.loads(last).get("error") or "located"
    return run.returncode, run.wall_s, run.peak_mb, str(last)[:160]


def _make_cases(folder: Path, photo: Path) -> dict[str, Path]:
    from PIL import Image

    folder.mkdir(parents=True)
    cases = {"photo (baseline)": folder / f"photo{photo.suffix.lower()}"}
    shutil.copy(photo, cases["photo (baseline)"])
    cases["FIFO x.jpg"] = folder / "x.jpg"
    os.mkfifo(cases["FIFO x.jpg"])
    cases["symlink to /dev/zero"] = folder / "zero.jpg"
    cases["symlink to /dev/zero"].symlink_to("/dev/zero")
    for width in (20000, 60000):
        path = folder / f"strip-{width}x1.png"
        Image.new("RGB", (width, 1)).save(path)
        cases[f"{width}x1 PNG ({path.stat().st_size} B)"] = path
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="the baseline photo")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds before a case is a hang")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (the worst is shown)")
    args = ap.parse_args()
    if not os.environ.get("GEOGUESS_HOME"):
        ap.error("set GEOGUESS_HOME (and GEOGUESS_MODEL) to a home with a model set")

    work = Path(tempfile.mkdtemp(prefix="geoguess-hostile-"))
    env = dict(os.environ)
    failures = 0
    try:
        folder = work / "photos"
        cases = _make_cases(folder, args.photo)
        geoguess = [sys.executable, "-m", "geoguess"]
        # Fill the derived cache first: the locate runs are then warm starts.
        _measured([*geoguess, "--json", str(cases["photo (baseline)"])], env, args.limit)
        print(f"{'case':28} {'what':7} {'exit':>5} {'wall s':>7} {'peak MB':>8}  output")
        for label, path in cases.items():
            hostile = label != "photo (baseline)"
            for what, cmd in (
                ("decode", [sys.executable, "-c", _DECODE, str(path)]),
                ("locate", [*geoguess, "--json", str(path)]),
            ):
                runs = [_measured(cmd, env, args.limit) for _ in range(args.repeat)]
                rc = runs[-1][0]
                wall = max(r[1] for r in runs)
                peak = max(r[2] for r in runs)
                ok = all(r[0] == (1 if hostile else 0) for r in runs)
                failures += not ok
                shown = "hang" if rc is None else str(rc)
                print(
                    f"{label:28} {what:7} {shown:>5} {wall:7.2f} {peak:8.0f}  "
                    f"{runs[-1][3]}{'' if ok else '  [FAIL]'}",
                    flush=True,
                )
        out = work / "scan.csv"
        scan = [*geoguess, "scan", str(folder), "-o", str(out), "-q"]
        rc, wall, peak, _ = _measured(scan, env, args.limit)
        import csv

        rows = list(csv.DictReader(out.open(newline=""))) if out.is_file() else []
        errors = sum(bool(r.get("error")) for r in rows)
        ok = rc == 1 and len(rows) == len(cases) and errors == len(cases) - 1
        failures += not ok
        label = f"scan of all {len(cases)}"
        shown = "hang" if rc is None else str(rc)
        print(
            f"{label:28} {'scan':7} {shown:>5} {wall:7.2f} {peak:8.0f}  "
            f"{len(rows)} rows, {errors} error rows"
            f"{'' if ok else '  [FAIL]'}",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
