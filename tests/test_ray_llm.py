"""`geoguess scan --engine ray --llm`: refinement in the Ray actors, rows as the local scan's.

A local Ray of two CPUs, the tiny model set (random image encoder: the tests check the
mechanics, never where a photo is) and the fake OpenAI-style server of
test_llm_refine on 127.0.0.1, whose answers depend only on the prompt, so both engines
get the same answers. Ray starts before the API key is set, so the key reaching the
server from the actors shows the driver passed it on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

# The fake server and its replies; importing it also skips this module without litellm.
import ray_helpers  # noqa: E402
from fake_llm import FAKE_KEY, FakeLLM, Reply, Seen, _json, _prompt_number  # noqa: E402

from geoguess.cli import app  # noqa: E402

PHOTOS = 3


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    yield from ray_helpers.local_ray(ray)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-llm-photos")
    rng = np.random.default_rng(7)
    for i in range(PHOTOS):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
            root / f"p{i}.jpg"
        )
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def _scan(folder: Path, out: Path, server: FakeLLM, *extra: str) -> Any:
    args = [
        "scan", str(folder), "-o", str(out), "-p", "fp32", "--quiet",
        "--llm", "openai/test-model", "--llm-base-url", server.url, "--llm-refs", "0,5",
        "--llm-samples", "2", "--llm-concurrency", "2", "--llm-timeout", "5",
        "--llm-retries", "1", "--no-cache", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _ray(folder: Path, out: Path, server: FakeLLM) -> Any:
    return _scan(folder, out, server, "--engine", "ray", "--ray-workers", "2")


def _jsonl(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len({r["file"] for r in rows}) == len(rows), "a photo written twice"
    return {r["file"]: r for r in rows}


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def _usage_line(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if "LLM usage" in x]
    return line


def _answer(seen: Seen) -> Reply:
    n = _prompt_number(seen)
    return Reply(contents=[_json(40 + n, 10 - n, f"Place {n}", f"prompt {n}")])


def test_ray_llm_rows_equal_the_local_scan(
    cli_home: Path, folder: Path, tmp_path: Path, server: FakeLLM
) -> None:
    server.respond = _answer
    runs: dict[str, dict[str, Any]] = {}
    for engine in ("local", "ray"):
        start = len(server.seen)
        scan = _ray if engine == "ray" else _scan
        got: dict[str, Any] = {}
        for suffix in ("jsonl", "csv"):
            res = scan(folder, tmp_path / f"{engine}.{suffix}", server)
            assert res.exit_code == 1, res.output  # broken.jpg
            assert FAKE_KEY not in res.output and "DoNotLeak" not in res.output
            got[f"usage_{suffix}"] = _usage_line(res.stderr)
        got["jsonl"] = _jsonl(tmp_path / f"{engine}.jsonl")
        got["csv"] = _csv(tmp_path / f"{engine}.csv")
        got["seen"] = server.seen[start:]
        runs[engine] = got
    local, on_ray = runs["local"], runs["ray"]

    assert (
        set(on_ray["jsonl"])
        == set(local["jsonl"])
        == {str(folder / n) for n in ("broken.jpg", *(f"p{i}.jpg" for i in range(PHOTOS)))}
    )
    for path, record in local["jsonl"].items():
        assert on_ray["jsonl"][path] == record, path  # the llm part and the rest
        assert on_ray["csv"][path] == local["csv"][path], path
        if record["error"]:
            assert "llm" not in record
            continue
        llm = record["llm"]
        assert not llm["fallback"] and llm["usage"]["requests"] == 2  # one per prompt (n=2)
        assert {c["model_place"] for c in llm["candidates"] if c["source"] == "llm"} == {
            "Place 1",
            "Place 2",
        }
        assert on_ray["csv"][path]["llm_model"] == "openai/test-model"
    # Each photo asked once per prompt in each of an engine's two scans, by the actors
    # too, with the driver's key.
    for run in (local, on_ray):
        assert len(run["seen"]) == 2 * 2 * PHOTOS
    assert all(s.headers["authorization"] == f"Bearer {FAKE_KEY}" for s in on_ray["seen"])
    # The totals the actors reported, as the local scan counts them.
    assert on_ray["usage_jsonl"] == local["usage_jsonl"] == on_ray["usage_csv"]
    assert f"LLM usage: {2 * PHOTOS} requests" in local["usage_jsonl"]


def test_ray_llm_endpoint_down_gives_fallback_rows(
    cli_home: Path, folder: Path, tmp_path: Path, server: FakeLLM
) -> None:
    server.respond = lambda seen: Reply(status=500, body={"error": {"message": "down"}})
    local = _scan(folder, tmp_path / "local.csv", server)
    asked_local = len(server.seen)
    on_ray = _ray(folder, tmp_path / "ray.csv", server)
    assert on_ray.exit_code == local.exit_code == 1, on_ray.output  # broken.jpg, nothing else
    assert len(server.seen) == 2 * asked_local == 2 * PHOTOS * 2 * 2  # 2 prompts x 2 tries
    rows, local_rows = _csv(tmp_path / "ray.csv"), _csv(tmp_path / "local.csv")
    assert rows == local_rows
    for path, row in rows.items():
        if Path(path).name == "broken.jpg":
            assert row["error"] and not row["llm_model"]
            continue
        assert not row["error"]
        # The fallback is GeoCLIP's own answer.
        assert row["llm_source"] == "retrieval #1" and row["llm_model"] == "openai/test-model"
        assert (row["llm_lat"], row["llm_lon"]) == (row["lat"], row["lon"])
    assert "3 located, 1 failed" in on_ray.stderr
