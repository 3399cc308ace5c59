"""Benchmark: `geoguess models build` on the full CLIP ViT-L/14 geometry.

Writes a Hugging Face-format CLIP vision folder with random weights (the real
geometry, so the real cost; its answers mean nothing), then times the whole build
from that folder in a child process (graphs, gallery embedding, cluster tree, int8
candidates, hashing, install) and reports wall time and the child's peak RSS.

    python benchmarks/build_model.py [--work DIR] [--keep]

Targets (issue 10): <= 120 s and <= 3 GB peak RSS on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_random_clip(folder: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    from geoguess.builder.backbone import RANDOM_GEOMETRIES, open_random

    folder.mkdir(parents=True, exist_ok=True)
    backbone = open_random("vit-l14")
    weights = backbone.weights
    tensors = {name: weights[name] for name in weights._shapes}
    save_file(tensors, str(folder / "model.safetensors"))
    config = dict(RANDOM_GEOMETRIES["vit-l14"], model_type="clip_vision_model")
    config["hidden_act"] = "quick_gelu"
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    del tensors
    print(f"random ViT-L/14 folder: {sum(p.stat().st_size for p in folder.iterdir()) / 1e9:.2f} GB")
    _ = np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--precision", action="append", help="precisions to build (repeat)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="geoguess-build-bench-"))
    clip = work / "clip-vit-l14-random"
    if not (clip / "model.safetensors").is_file():
        write_random_clip(clip)
    env = dict(os.environ, GEOGUESS_HOME=str(work / "home"), GEOGUESS_DERIVED_CACHE="0")
    shutil.rmtree(work / "home", ignore_errors=True)
    cmd = [sys.executable, "-m", "geoguess", "models", "build", "--backbone", str(clip)]
    cmd += ["--name", "bench-vitl14"]
    for p in args.precision or []:
        cmd += ["--precision", p]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.exit(f"build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    manifest = json.loads((work / "home/models/bench-vitl14/manifest.json").read_text())
    size = sum(e["size"] for e in manifest["files"].values())
    steps = [line for line in proc.stderr.splitlines() if line.strip()]
    print("\n".join(steps[-25:]))
    print(
        f"\nbuild of the ViT-L/14 geometry: {wall:.1f} s wall, peak RSS {peak_kb / 1e6:.2f} GB, "
        f"model set {size / 1e9:.2f} GB, precisions {sorted(manifest['image_encoder']['files'])}"
    )
    print(
        f"targets: <= 120 s ({'met' if wall <= 120 else 'NOT met'}), "
        f"<= 3 GB ({'met' if peak_kb <= 3e6 else 'NOT met'})"
    )
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
