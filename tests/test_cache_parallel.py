"""Many processes starting at once on an empty derived cache (issue 12, problem 1).

The full stress run is benchmarks/parallel_first_runs.py (40 rounds of 8); this is the
short version that runs with the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROCESSES = 6
ROUNDS = 3


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> Path:
    """A home with model set 'small': the tiny backbone and a 2,000-point gallery."""
    pytest.importorskip("geoclip", reason="needs: pip install --no-deps geoclip==1.3.0")
    from geoguess.builder.build import BuildOptions, build_model_set

    home = tmp_path_factory.mktemp("parallel-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOGUESS_HOME", str(home))
    try:
        build_model_set(
            BuildOptions(name="small", backbone=str(tiny_backbone_dir), gallery_limit=2000)
        )
    finally:
        mp.undo()
    return home


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(7).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("parallel-photo") / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


def test_processes_started_together_on_an_empty_cache_all_answer_alike(
    small_home: Path, photo: Path, tmp_path: Path
) -> None:
    outputs: dict[str, str] = {}
    for rnd in range(ROUNDS):
        precision = ("int8", "fp32")[rnd % 2]
        cache = tmp_path / f"cache-{rnd}"  # empty: nothing derived yet
        env = {
            **os.environ,
            "GEOGUESS_HOME": str(small_home),
            "GEOGUESS_CACHE_DIR": str(cache),
            "GEOGUESS_MODEL": "small",
        }
        cmd = [sys.executable, "-m", "geoguess", "--json", "-p", precision, str(photo)]
        procs = [
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(PROCESSES)
        ]
        results = [(p.communicate(), p.returncode) for p in procs]
        for (out, err), rc in results:
            assert rc == 0, err
            assert json.loads(out)["predictions"]
        assert len({out for (out, _), _ in results}) == 1, "processes disagree"
        outputs.setdefault(precision, results[0][0][0])
        assert results[0][0][0] == outputs[precision]
        # One whole entry per derived file (the graph, the float32 gallery), nothing half-made.
        derived = cache / "derived"
        entries = sorted(p.name for p in derived.iterdir() if not p.name.startswith("."))
        assert len(entries) == 2, entries
        assert not list(derived.glob(".tmp-*"))
        for entry in entries:
            described = json.loads((derived / entry / "entry.json").read_text())["files"]
            on_disk = {p.name for p in (derived / entry).iterdir()} - {"entry.json"}
            assert set(described) == on_disk
        later = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        assert later.returncode == 0 and later.stdout == outputs[precision], later.stderr
