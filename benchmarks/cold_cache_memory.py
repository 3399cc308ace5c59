"""Peak memory of `geoguess --json PHOTO` with an empty derived cache and a warm one.

The first run after an install (or `geoguess models cache clear`) has ONNX Runtime
optimise the image encoder and save the optimised graph into the derived cache
(geoguess.derived); later runs load the saved graph. For each precision this runs, in
child processes, one cold start (empty cache) and then ``--warm`` warm starts, and
reports each child's peak RSS (its own, from wait4) and wall time; ``--scan FOLDER``
does the same for `geoguess scan FOLDER`. ``--stages`` also measures the session
creation alone (no gallery, no photo) in the three ways a start can make it: optimise
and save (the cold start), load the saved graph (the warm start), and optimise without
saving (as with GEOGUESS_DERIVED_CACHE=0).

    python benchmarks/cold_cache_memory.py --home /tmp/vitl/home --model bench-vitl14 \\
        --precision int8 --precision fp32 [--stages] [--scan FOLDER]

The cache used is a temporary folder of its own (GEOGUESS_CACHE_DIR), removed at the
end, so no other cache is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from child_usage import run_measured

HERE = Path(__file__).resolve().parent
DEFAULT_PHOTO = HERE.parent.parent / "shared" / "photos" / "es_Canon_40D.jpg"

# One ONNX Runtime session made as geoguess makes it (providers.open_session), in a
# child of its own so that its peak RSS is its alone.
_STAGE = """
import json, sys, time
from pathlib import Path
from geoguess import providers, derived
from geoguess.store import get_model
mode, name, precision = sys.argv[1:4]
model = get_model(name)
rel = model.manifest.image_encoders[precision]
path = model.file(rel)
sha = model.content_sha256(rel)
root = derived.cache_dir()
t0 = time.perf_counter()
if mode == "nocache":
    s = providers.open_session(path, "cpu")
else:
    s = providers.open_session(path, "cpu", source_sha256=sha, cache_dir=root)
print(json.dumps({"session_s": time.perf_counter() - t0}))
"""


def _measured(cmd: list[str], env: dict[str, str]) -> tuple[int, float, float, str, str]:
    """(exit, wall s, peak RSS GB, stdout, stderr) of that child alone."""
    run = run_measured(cmd, env)
    return int(run.returncode or 0), run.wall_s, run.peak_mb / 1e3, run.stdout, run.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="GEOGUESS_HOME with the model set")
    ap.add_argument("--model", required=True, help="model set name")
    ap.add_argument("--precision", action="append", help="precisions (repeat) [int8, fp32]")
    ap.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    ap.add_argument("--warm", type=int, default=2, help="warm runs after the cold one")
    ap.add_argument("--stages", action="store_true", help="also the session creation alone")
    ap.add_argument("--threads", help="GEOGUESS_THREADS for the children")
    ap.add_argument("--scan", type=Path, help="also `geoguess scan` this folder, cold and warm")
    args = ap.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="geoguess-cold-cache-"))
    env = dict(os.environ, GEOGUESS_HOME=str(args.home), GEOGUESS_MODEL=args.model)
    env["GEOGUESS_CACHE_DIR"] = str(cache)
    env.pop("GEOGUESS_DERIVED_CACHE", None)
    if args.threads:
        env["GEOGUESS_THREADS"] = args.threads
    failed = 0
    try:
        for precision in args.precision or ["int8", "fp32"]:
            cmd = [sys.executable, "-m", "geoguess", "--json", "-p", precision, str(args.photo)]
            answers = set()
            for run in ["cold"] + ["warm"] * args.warm:
                if run == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                    cache.mkdir()
                rc, wall, peak, out, err = _measured(cmd, env)
                if rc != 0:
                    failed += 1
                    print(f"{precision} {run}: exit {rc}: {err.strip().splitlines()[-1:]}")
                    continue
                answers.add(json.dumps(json.loads(out).get("predictions"), sort_keys=True))
                print(f"{precision} {run}: peak RSS {peak:.2f} GB, {wall:.1f} s", flush=True)
            if len(answers) > 1:
                failed += 1
                print(f"{precision}: cold and warm runs gave different answers")
            if args.scan is not None:
                out = cache.parent / f"{cache.name}-scan.csv"
                scan = [sys.executable, "-m", "geoguess", "scan", str(args.scan), "-q"]
                scan += ["-p", precision, "-o", str(out), "--overwrite"]
                for run in ["cold"] + ["warm"] * args.warm:
                    if run == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                        cache.mkdir()
                    rc, wall, peak, _, err = _measured(scan, env)
                    out.unlink(missing_ok=True)
                    if rc not in (0, 1):
                        failed += 1
                        print(f"{precision} scan {run}: exit {rc}: {err.strip()[-300:]}")
                        continue
                    summary = [ln for ln in err.splitlines() if " located, " in ln][-1:]
                    print(
                        f"{precision} scan {run}: peak RSS {peak:.2f} GB, {wall:.1f} s "
                        f"({''.join(summary)})",
                        flush=True,
                    )
            if not args.stages:
                continue
            stage = [sys.executable, "-c", _STAGE]
            for label, mode, empty in (
                ("session, optimise + save (cold)", "cache", True),
                ("session, load saved graph (warm)", "cache", False),
                ("session, optimise, no save", "nocache", True),
            ):
                if empty:
                    shutil.rmtree(cache, ignore_errors=True)
                    cache.mkdir()
                rc, wall, peak, out, err = _measured([*stage, mode, args.model, precision], env)
                if rc != 0:
                    failed += 1
                    print(f"{precision} {label}: exit {rc}: {err.strip()[-500:]}")
                    continue
                session_s = json.loads(out.strip().splitlines()[-1])["session_s"]
                print(
                    f"{precision} {label}: peak RSS {peak:.2f} GB, session {session_s:.1f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
