"""benchmarks/search.py --top-efs: trees' hnswlib-routed top level at chosen ef values."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from geoguess.errors import UsageError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _search_harness():
    # Child processes (spawn) import the module by name too: it must be on sys.path.
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("search")


def test_top_efs_adds_hnsw_rows_at_each_ef(tiny_home: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("hnswlib")
    search = _search_harness()

    args = ["--model", "tiny", "--levels", "60,5", "--beams", "2,4", "--tops", "exact,hnsw"]
    args += ["--top-efs", "4,64", "--cosines", "0.45", "--n-queries", "20", "--limit", "3000"]
    args += ["--ef", "", "--replay-queries", "5", "--flat-queries", "5"]
    args += ["--workdir", str(tmp_path / "work"), "--json"]
    assert search.main(args) == 0
    rows = [search.BenchRow(**json.loads(line)) for line in capsys.readouterr().out.splitlines()]
    trees = [r for r in rows if r.method == "tree"]
    # The default routes first (hnsw at TreeSearch's own ef), then one row per beam and ef.
    swept = [(r.beam, r.ef) for r in trees if any("--top-efs" in n for n in r.notes)]
    assert swept == [(2, 4), (2, 64), (4, 4), (4, 64)]
    for r in trees:
        if r.top == "hnsw":
            # hnswlib's replayed distance computations are counted in these rows too.
            assert any("replaying 5 queries" in n for n in r.notes)
    by_ef = {(r.beam, r.ef): r for r in trees if r.top == "hnsw"}
    # A wider search list visits more of the 60 top-level nodes.
    assert by_ef[(4, 64)].compared_mean > by_ef[(4, 4)].compared_mean
    with pytest.raises(UsageError, match="--top-efs"):
        search.main(["--top-efs", "8,x"])
