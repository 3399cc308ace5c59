"""LLM refinement end to end: litellm talking to a real OpenAI-style server on 127.0.0.1.

The server (http.server in a thread, ephemeral port) speaks the chat-completions
protocol and answers from a script, so the tests see exactly what litellm sends (the
photo, the prompts, n, JSON mode) and how geoguess copes with every kind of answer
and failure. The Geolocator is the tiny model set: random image encoder, but
GeoCLIP's real location encoder and gallery, which is what retrieval and verification
use.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_llm import FAKE_KEY, FakeLLM, Reply, Seen, _json, _prompt_number
from PIL import Image
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.llm import LLMSettings, Refiner
from geoguess.llm.retrieval import retrieve

# Not importorskip: importing litellm here, before geoguess sets it up, would let it
# fetch its price list from the network.
if importlib.util.find_spec("litellm") is None:
    pytest.skip("needs litellm (pip install 'geoguess[llm]')", allow_module_level=True)


@pytest.fixture(scope="module")
def geo(tiny_geo):
    return tiny_geo


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo with EXIF GPS and a camera name, neither of which may be sent."""
    rng = np.random.default_rng(11)
    img = Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    path = tmp_path_factory.mktemp("llm-photo") / "photo.jpg"
    img.save(path, exif=exif)
    return path


@pytest.fixture(scope="module")
def embedding(geo, photo: Path) -> np.ndarray:
    from geoguess.images import load_image

    return geo.embed_images([load_image(photo)])[0]


def settings(server: FakeLLM, **kw: Any) -> LLMSettings:
    base: dict[str, Any] = dict(
        model="openai/test-model",
        base_url=server.url,
        timeout=2.0,
        retries=1,
        backoff=0.01,
        max_backoff=0.05,
        image_max_side=256,
    )
    base.update(kw)
    return LLMSettings(**base)


def run(geo, photo: Path, embedding: np.ndarray, s: LLMSettings):
    with Refiner(s) as refiner:
        return refiner.refine(geo, photo, embedding)


def test_litellm_loads_late_offline_and_quiet() -> None:
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "import geoguess.cli, geoguess.llm\n"
        "assert 'litellm' not in sys.modules, 'imported too early'\n"
        "from geoguess.llm.client import load_litellm\n"
        "lit = load_litellm()\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], lit.suppress_debug_info)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM")}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "True True\n"  # nothing else reached stdout
    assert "model cost map" not in res.stderr  # no attempt to fetch prices online


# --- requests --------------------------------------------------------------------------


def test_requests_carry_image_prompts_and_samples(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(
        contents=[_json(40 + _prompt_number(seen), 10, reason=f"p{_prompt_number(seen)}")]
    )
    out = run(geo, photo, embedding, settings(server, temperature=0.7))

    # One request per prompt, all samples in it (n=2): 4 requests for 8 answers.
    assert len(server.seen) == 4
    expected = retrieve(geo, embedding, 15)
    seen_counts = set()
    for seen in server.seen:
        body = seen.body
        assert body["model"] == "test-model"
        assert body["n"] == 2
        assert body["temperature"] == 0.7
        assert body["response_format"] == {"type": "json_object"}
        assert body["messages"][0]["role"] == "system"
        assert seen.headers["authorization"] == f"Bearer {FAKE_KEY}"
        # The photo: a small JPEG data URL with no EXIF (no GPS, no camera).
        url = seen.image_url
        assert url.startswith("data:image/jpeg;base64,")
        raw = base64.b64decode(url.split(",", 1)[1])
        sent = Image.open(io.BytesIO(raw))
        assert max(sent.size) == 256 and len(sent.getexif()) == 0 and b"SecretCam" not in raw
        # The references: the first k similar and k least similar gallery points.
        similar, dissimilar = seen.references()
        k = len(similar)
        assert len(dissimilar) == k
        seen_counts.add(k)
        want_sim = [(r.lat, r.lon) for r in expected.similar[:k]]
        want_dis = [(r.lat, r.lon) for r in expected.dissimilar[:k]]
        np.testing.assert_allclose(
            np.reshape(similar, (-1, 2)), np.reshape(want_sim, (-1, 2)), atol=1e-5
        )
        np.testing.assert_allclose(
            np.reshape(dissimilar, (-1, 2)), np.reshape(want_dis, (-1, 2)), atol=1e-5
        )
        for r in expected.similar[:k]:
            assert r.place_text in seen.text  # offline place names go with them
    assert seen_counts == {0, 5, 10, 15}

    llm = [c for c in out.candidates if c.source == "llm"]
    assert len(llm) == 8
    assert {(c.prompt.number, c.sample) for c in llm} == {
        (p, s) for p in (1, 2, 3, 4) for s in (1, 2)
    }
    for c in llm:
        assert c.lat == 40 + c.prompt.number and c.reason == f"p{c.prompt.number}"
        assert c.place is not None  # offline name of the answer
    assert sum(c.source == "retrieval" for c in out.candidates) == 5
    assert out.usage.requests == 4 and out.usage.prompt_tokens == 400
    assert out.usage.completion_tokens == 80
    assert out.usage.cost_usd is None  # litellm has no price for "test-model"
    assert not out.fallback and not out.warnings
    scores = [c.score for c in out.candidates]
    assert scores == sorted(scores, reverse=True)
    d = out.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["best"] == out.candidates[0].to_dict()
    assert {c["source"] for c in d["candidates"]} == {"llm", "retrieval"}


def test_one_request_per_sample_when_not_batching(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(contents=[_json(12.5, 13.5)])
    out = run(geo, photo, embedding, settings(server, batch_samples=False, samples=3))
    assert len(server.seen) == 12
    assert all("n" not in s.body for s in server.seen)
    assert sum(c.source == "llm" for c in out.candidates) == 12


def test_server_ignoring_n_gets_topped_up(geo, photo, embedding, server) -> None:
    # Like some OpenAI-compatible servers: one choice whatever n says.
    server.respond = lambda seen: Reply(contents=[_json(12.5, 13.5)], choices=1)
    out = run(geo, photo, embedding, settings(server, references=((0, 0),), samples=3))
    assert len(server.seen) == 3  # n=3 answered once, then two single requests
    assert [s.body.get("n") for s in server.seen] == [3, None, None]
    assert sum(c.source == "llm" for c in out.candidates) == 3


# --- answers ---------------------------------------------------------------------------


def test_prose_garbage_and_out_of_range(geo, photo, embedding, server) -> None:
    answers = {
        1: ["I'd say this is Paris: 48.85° N, 2.35° E.", "lat: -33.9, lon: 151.2"],
        2: ["I really cannot tell, sorry.", "{not json at all"],
        3: [_json(123.0, 10.0), _json(45.0, 540.0)],
        4: [_json(0, 0), _json(35.68, 139.69, "Tokyo, Japan", "kanji signs")],
    }
    server.respond = lambda seen: Reply(contents=answers[_prompt_number(seen)])
    out = run(geo, photo, embedding, settings(server))
    llm = {(c.prompt.number, c.sample): c for c in out.candidates if c.source == "llm"}
    assert set(llm) == {(1, 1), (1, 2), (4, 2)}
    assert (llm[1, 1].lat, llm[1, 1].lon) == (48.85, 2.35)
    assert (llm[1, 2].lat, llm[1, 2].lon) == (-33.9, 151.2)
    assert llm[4, 2].model_place == "Tokyo, Japan" and llm[4, 2].reason == "kanji signs"
    assert "48.85° N" in (llm[1, 1].reason or "")  # prose is kept as the reason
    rejected = {(r.prompt.number, r.sample): r.problem for r in out.rejected}
    assert set(rejected) == {(2, 1), (2, 2), (3, 1), (3, 2), (4, 1)}
    assert "latitude 123" in rejected[3, 1] and "longitude 540" in rejected[3, 2]
    assert "placeholder" in rejected[4, 1]
    assert all((c.lat, c.lon) != (0.0, 0.0) for c in out.candidates)
    assert not out.fallback


def test_all_answers_unusable_falls_back(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(contents=["no idea"])
    out = run(geo, photo, embedding, settings(server, references=((0, 0), (5, 5))))
    top = geo.search(embedding[None, :], 1)[0].indices[0]
    assert out.fallback
    assert out.best is not None and out.best.source == "retrieval"
    assert (out.best.lat, out.best.lon) == pytest.approx(tuple(geo.gallery.coords[top]))
    assert len(out.rejected) == 4
    assert any("no usable answer" in w for w in out.warnings)


def test_photo_that_cannot_be_sent_falls_back(geo, embedding, server) -> None:
    from geoguess.llm import refine

    out = refine(geo, b"not an image", embedding, settings(server), name="odd.jpg")
    assert out.file == "odd.jpg" and out.error and "cannot prepare the photo" in out.error
    assert out.fallback and out.best is not None and out.best.source == "retrieval"
    assert not server.seen  # nothing was sent
    assert out.to_dict()["error"] == out.error


def test_unexpected_errors_stay_with_the_photo(geo, photo, embedding, server, monkeypatch) -> None:
    from geoguess.cli.render import render_refinement_plain
    from geoguess.llm import pipeline
    from geoguess.locate import LocateResult

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("gallery went away")

    monkeypatch.setattr(pipeline, "retrieve", broken)
    result = LocateResult(str(photo), embedding=embedding)
    with Refiner(settings(server)) as refiner:
        refiner.refine_result(geo, result)
    assert result.llm.error == "unexpected error: RuntimeError: gallery went away"
    assert result.llm.best is None and result.to_dict()["llm"]["best"] is None
    assert "no answer (unexpected error" in render_refinement_plain(result.llm)


def test_refinement_draws_on_a_terminal_and_piped(geo, photo, embedding, server) -> None:
    import io

    from rich.console import Console

    from geoguess.cli.render import render_refinement, render_refinement_plain

    server.respond = lambda seen: Reply(contents=[_json(48.8584, 2.2945, "Paris")])
    out = run(geo, photo, embedding, settings(server))
    assert out.best is not None
    screen = io.StringIO()
    render_refinement(Console(file=screen, force_terminal=True, width=120), out)
    drawn = screen.getvalue()
    assert "48.85840" in drawn or "48.8584" in drawn, drawn
    assert "Paris" in drawn
    assert "48.8584" in render_refinement_plain(out)


# --- failures and retries --------------------------------------------------------------


def test_timeout_falls_back_to_retrieval(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(contents=[_json(1.5, 2.5)], delay=3.0)
    start = time.perf_counter()
    out = run(geo, photo, embedding, settings(server, references=((0, 0),), timeout=0.5))
    elapsed = time.perf_counter() - start
    assert len(server.seen) == 2  # first try + one retry
    assert elapsed < 2.5
    assert out.fallback and out.best is not None and out.best.source == "retrieval"
    assert any("timed out" in w for w in out.warnings)
    assert out.usage.failed_requests == 2 and out.usage.requests == 0


def test_429_then_success(geo, photo, embedding, server) -> None:
    calls = iter(range(100))

    def respond(seen: Seen) -> Reply:
        if next(calls) == 0:
            return Reply(
                status=429,
                body={"error": {"message": "rate limited", "type": "rate_limit_error"}},
                headers={"Retry-After": "0"},
            )
        return Reply(contents=[_json(51.5, -0.12, "London")])

    server.respond = respond
    out = run(geo, photo, embedding, settings(server, references=((0, 0),), retries=2))
    assert len(server.seen) == 2
    assert not out.fallback and not out.warnings
    assert out.usage.failed_requests == 1 and out.usage.requests == 1
    assert sum(c.source == "llm" for c in out.candidates) == 2


def test_500_forever_is_bounded_and_not_fatal(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(status=500, body={"error": {"message": "boom"}})
    out = run(geo, photo, embedding, settings(server, retries=2))
    assert len(server.seen) == 4 * 3  # 4 prompts x (1 + 2 retries)
    assert out.fallback and out.best is not None and out.best.source == "retrieval"
    assert len([w for w in out.warnings if "HTTP 500" in w and "3 attempts" in w]) == 4


def test_bad_request_is_not_retried(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(
        status=404, body={"error": {"message": "model not found", "type": "invalid_request_error"}}
    )
    out = run(geo, photo, embedding, settings(server, references=((0, 0),), retries=3))
    assert len(server.seen) == 1
    assert out.fallback and any("404" in w for w in out.warnings)


def test_server_refusing_json_mode(geo, photo, embedding, server) -> None:
    def respond(seen: Seen) -> Reply:
        if "response_format" in seen.body:
            return Reply(status=400, body={"error": {"message": "response_format unsupported"}})
        return Reply(contents=["Looks like Rome, 41.9 N 12.5 E"])

    server.respond = respond
    out = run(geo, photo, embedding, settings(server, references=((0, 0),)))
    assert [("response_format" in s.body) for s in server.seen] == [True, False]
    assert any("JSON mode" in w for w in out.warnings)
    assert [(c.lat, c.lon) for c in out.candidates if c.source == "llm"] == [(41.9, 12.5)] * 2


def test_other_bad_requests_are_not_blamed_on_json_mode(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(
        status=400, body={"error": {"message": "this model does not accept images"}}
    )
    out = run(geo, photo, embedding, settings(server, references=((0, 0),), retries=3))
    assert [("response_format" in s.body) for s in server.seen] == [True, False]
    assert out.fallback
    assert any("does not accept images" in w for w in out.warnings)
    assert not any("JSON mode" in w for w in out.warnings)


# --- verification ----------------------------------------------------------------------


def _better_than_gallery(geo, embedding: np.ndarray) -> tuple[float, float, float]:
    """A coordinate that the location encoder scores higher than GeoCLIP's candidates.

    The gallery is a finite sample, so points between gallery points can score higher;
    a seeded random search around the top gallery rows (by cosine: GeoCLIP's merged
    ranking sums repeated points) at several scales, then a finer one around the best
    point found, finds one.
    """
    found = geo.flat.search(embedding[None, :], 10)[0].indices
    centres = geo.gallery.coords[found].astype(np.float64)
    rng = np.random.default_rng(0)
    spans = (3.0, 1.0, 0.3, 0.1, 0.03)
    grid = np.concatenate(
        [centres]
        + [np.repeat(centres, 400, 0) + rng.uniform(-s, s, (len(centres) * 400, 2)) for s in spans]
    )
    best = centres[0]
    for span in (None, 0.1, 0.03, 0.01):
        if span is not None:
            grid = np.concatenate([best[None], best + rng.uniform(-span, span, (2000, 2))])
        grid[:, 0] = np.clip(grid[:, 0], -90, 90)
        scores = geo.embed_locations(grid.astype(np.float32)) @ embedding
        best = grid[int(np.argmax(scores))]
    i = int(np.argmax(scores))
    return float(grid[i, 0]), float(grid[i, 1]), float(scores[i])


def test_verification_prefers_the_answer_the_encoder_likes(geo, photo, embedding, server) -> None:
    lat, lon, best_score = _better_than_gallery(geo, embedding)
    top5 = geo.embed_locations(geo.gallery.coords[geo.search(embedding[None, :], 5)[0].indices])
    assert best_score > float((top5 @ embedding).max()) + 1e-3  # it beats GeoCLIP's answers
    far = (-lat, lon - 180 if lon > 0 else lon + 180)  # the antipode
    server.respond = lambda seen: Reply(contents=[_json(*far, "far"), _json(lat, lon, "near")])
    out = run(geo, photo, embedding, settings(server, references=((0, 0), (5, 5))))
    best = out.best
    assert best is not None and best.source == "llm" and best.model_place == "near"
    assert (best.lat, best.lon) == pytest.approx((lat, lon), abs=1e-4)
    assert best.score == pytest.approx(best_score, abs=1e-4)
    far_scores = [c.score for c in out.candidates if c.model_place == "far"]
    assert len(far_scores) == 2 and max(far_scores) < best.score
    assert out.candidates[-1].model_place == "far"


def test_llm_answer_at_gallery_top1_beats_a_far_one(geo, photo, embedding, server) -> None:
    top = geo.search(embedding[None, :], 1)[0].indices[0]
    lat, lon = (float(v) for v in geo.gallery.coords[top])
    far = (-lat, lon - 180 if lon > 0 else lon + 180)
    server.respond = lambda seen: Reply(contents=[_json(*far, "far"), _json(lat, lon, "top1")])
    # verify_top=0: only the model's answers compete.
    out = run(geo, photo, embedding, settings(server, references=((0, 0),), verify_top=0))
    assert [c.model_place for c in out.candidates] == ["top1", "far"]
    assert out.best is not None and out.best.distance_from_retrieval_km < 0.01


# --- cache and cost --------------------------------------------------------------------


def test_rerun_is_served_from_cache(geo, photo, embedding, server, geoguess_home) -> None:
    server.respond = lambda seen: Reply(contents=[_json(30 + _prompt_number(seen), 5)])
    first = run(geo, photo, embedding, settings(server))
    assert len(server.seen) == 4
    second = run(geo, photo, embedding, settings(server))
    assert len(server.seen) == 4  # nothing new was asked
    assert second.usage.cached == 4 and second.usage.requests == 0
    assert second.usage.total_tokens == 0 and second.usage.cost_usd == 0.0
    assert [(c.lat, c.lon, c.source) for c in second.candidates] == [
        (c.lat, c.lon, c.source) for c in first.candidates
    ]
    files = list((geoguess_home / "cache" / "llm").rglob("*"))
    assert len([f for f in files if f.suffix == ".json"]) == 4
    assert not [f for f in files if f.name.startswith(".tmp")]
    # Another temperature is another question.
    run(geo, photo, embedding, settings(server, temperature=0.3))
    assert len(server.seen) == 8
    # No cache: asked again, and nothing written.
    run(geo, photo, embedding, settings(server, cache=False, temperature=0.9))
    assert len(server.seen) == 12
    assert len([f for f in (geoguess_home / "cache" / "llm").rglob("*.json")]) == 8


def test_failures_are_not_cached(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(status=503, body={"error": {"message": "busy"}})
    run(geo, photo, embedding, settings(server, references=((0, 0),), retries=0))
    server.respond = lambda seen: Reply(contents=[_json(8.5, 9.5)])
    out = run(geo, photo, embedding, settings(server, references=((0, 0),), retries=0))
    assert len(server.seen) == 2 and not out.fallback


def test_cost_is_reported_for_priced_models(geo, photo, embedding, server) -> None:
    server.respond = lambda seen: Reply(contents=[_json(8.5, 9.5)], model="gpt-4o-mini")
    s = settings(server, model="openai/gpt-4o-mini", references=((0, 0), (5, 5)))
    with Refiner(s) as refiner:
        out = refiner.refine(geo, photo, embedding)
        again = refiner.refine(geo, photo, embedding)  # cached: free
        total = refiner.usage
    assert out.usage.cost_usd is not None and out.usage.cost_usd > 0
    assert again.usage.cost_usd == 0.0 and again.usage.cached == 2
    assert total.cost_usd == pytest.approx(out.usage.cost_usd)
    assert total.requests == 2 and total.cached == 2


# --- the command line ------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_json_has_llm_key_and_stays_valid(cli_home, photo, server) -> None:
    server.respond = lambda seen: Reply(contents=[_json(43.5, 7.0, "Nice")])
    args = [
        "locate", str(photo), str(photo), "--json",
        "--llm", "openai/test-model", "--llm-base-url", server.url, "--llm-concurrency", "1",
        "--llm-samples", "1", "--llm-refs", "0,5", "--llm-timeout", "2", "--llm-retries", "0",
    ]  # fmt: skip
    r = _cli(*args)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        rec = json.loads(line)
        assert rec["predictions"] and rec["model"]["name"] == "tiny"  # existing keys stay
        llm = rec["llm"]
        assert llm["model"] == "openai/test-model"
        assert [p["similar"] for p in llm["prompts"]] == [0, 5]
        assert {c["source"] for c in llm["candidates"]} == {"llm", "retrieval"}
        assert llm["settings"]["samples"] == 1
    # One photo at a time (--llm-concurrency 1): the second copy came from the cache.
    assert len(server.seen) == 2
    assert json.loads(lines[1])["llm"]["usage"]["cached"] == 2
    assert "note:" not in r.stderr  # a local endpoint needs no privacy notice
    assert "total LLM usage: 2 requests, 2 prompts from cache" in r.stderr
    # A rerun costs nothing.
    again = _cli(*args)
    assert len(server.seen) == 2
    assert [json.loads(line)["llm"]["usage"]["requests"] for line in again.stdout.splitlines()] == [
        0,
        0,
    ]
    assert [json.loads(line)["llm"]["best"] for line in again.stdout.splitlines()] == [
        json.loads(line)["llm"]["best"] for line in lines
    ]


def test_cli_table_shows_refined_answer(cli_home, photo, server) -> None:
    server.respond = lambda seen: Reply(contents=[_json(43.5, 7.0, "Nice", "palm trees")])
    r = _cli(
        "locate", str(photo), "--llm", "openai/test-model", "--llm-base-url", server.url,
        "--llm-samples", "1", "--llm-refs", "0", "--no-cache",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "LLM refinement (openai/test-model):" in out
    assert "llm_rank\tsource\tlat\tlon" in out
    assert "prompt 1 (0+0 refs), sample 1\t43.50000\t7.00000" in out
    assert "palm trees" in out and "LLM usage: 1 requests" in out
    assert not list((cli_home / "cache").glob("llm/**/*.json"))  # --no-cache stored nothing


def test_cli_privacy_notice_once_and_silenced(cli_home, photo, server, monkeypatch) -> None:
    # TEST-NET-1 is never routed: the photo is "sent" to a third party and fails fast.
    args = [
        "locate", str(photo), str(photo), "--json", "--llm", "openai/test-model",
        "--llm-base-url", "http://192.0.2.1:9/v1", "--llm-refs", "0", "--llm-samples", "1",
        "--llm-timeout", "0.3", "--llm-retries", "0",
    ]  # fmt: skip
    r = _cli(*args)
    assert r.exit_code == 0, r.output
    assert r.stderr.count("sends each photo") == 1
    assert "192.0.2.1" in r.stderr and "GEOGUESS_LLM_CONSENT" in r.stderr
    for line in r.stdout.strip().splitlines():
        llm = json.loads(line)["llm"]
        assert llm["fallback"] and llm["best"]["source"] == "retrieval"
    assert "sends each photo" not in _cli(*args, "--yes").stderr
    monkeypatch.setenv("GEOGUESS_LLM_CONSENT", "1")
    assert "sends each photo" not in _cli(*args).stderr


def test_cli_never_shows_the_api_key(cli_home, photo, server) -> None:
    # Like OpenAI, the server quotes the key it was given in its 401 message.
    def respond(seen: Seen) -> Reply:
        token = seen.headers["authorization"].removeprefix("Bearer ")
        message = f"Incorrect API key provided: {token}. Header was: Bearer {token}"
        return Reply(status=401, body={"error": {"message": message, "type": "invalid_api_key"}})

    server.respond = respond
    r = _cli(
        "locate", str(photo), "--json", "--verbose", "--llm", "openai/test-model",
        "--llm-base-url", server.url, "--llm-refs", "0,5", "--llm-retries", "2",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(server.seen) == 2  # 401 is not retried
    assert all(s.headers["authorization"] == f"Bearer {FAKE_KEY}" for s in server.seen)
    llm = json.loads(r.stdout)["llm"]
    assert llm["fallback"] and any("401" in w for w in llm["warnings"])
    assert FAKE_KEY not in r.stdout and FAKE_KEY not in r.stderr
    assert "DoNotLeak" not in r.stdout + r.stderr


def test_cli_unknown_model_is_a_usage_error(cli_home, photo) -> None:
    r = _cli("locate", str(photo), "--llm", "no-such-model-xyz")
    assert r.exit_code == 2
    assert "provider/model" in r.stderr


def test_cli_bad_refs(cli_home, photo) -> None:
    r = _cli("locate", str(photo), "--llm", "openai/x", "--llm-refs", "0,five")
    assert r.exit_code == 2 and "--llm-refs" in r.stderr


# --- scan ------------------------------------------------------------------------------


def test_scan_refines_with_bounded_concurrency(cli_home, tmp_path, server) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
            folder / f"p{i}.jpg"
        )
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    server.respond = lambda seen: Reply(contents=[_json(-12.5, 130.8, "Darwin")], delay=0.1)
    out = tmp_path / "out.jsonl"
    r = _cli(
        "scan", str(folder), "-o", str(out), "--quiet",
        "--llm", "openai/test-model", "--llm-base-url", server.url, "--llm-concurrency", "2",
        "--llm-samples", "1", "--llm-timeout", "5", "--llm-retries", "0",
    )  # fmt: skip
    assert r.exit_code == 1, r.output  # the broken photo
    rows = {Path(rec["file"]).name: rec for rec in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"p0.jpg", "p1.jpg", "p2.jpg", "broken.jpg"}
    assert rows["broken.jpg"]["error"] and "llm" not in rows["broken.jpg"]
    for name in ("p0.jpg", "p1.jpg", "p2.jpg"):
        llm = rows[name]["llm"]
        assert not llm["fallback"] and llm["usage"]["requests"] == 4
        assert any(c["model_place"] == "Darwin" for c in llm["candidates"])
    assert len(server.seen) == 12
    assert server.max_active == 2  # --llm-concurrency bounds the requests in flight
    assert "LLM usage: 12 requests" in r.stderr


def test_sidecars_hold_the_refined_answer_and_the_fallback_stays_geoclips(
    cli_home, tmp_path, server, photo
) -> None:
    """A sidecar holds the language model's answer when it gave one (scan --xmp and,
    from the CSV afterwards, geoguess xmp)."""
    from exiftool_reader import exiftool

    from geoguess.xmp import sidecar_path

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):  # without EXIF GPS, so that they get sidecars
        Image.open(photo).save(folder / f"p{i}.jpg")
    # One request per photo, one at a time, in order: p0 gets an answer, p1 none that
    # parses (GeoCLIP's answer stands).
    server.respond = lambda seen: Reply(
        contents=[_json(-12.5, 130.8, "Darwin") if len(server.seen) == 1 else "no idea"]
    )
    out = tmp_path / "out.csv"
    r = _cli(
        "scan", str(folder), "-o", str(out), "--quiet", "--xmp",
        "--llm", "openai/test-model", "--llm-base-url", server.url, "--llm-concurrency", "1",
        "--llm-refs", "0", "--llm-samples", "1", "--llm-retries", "0",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = {Path(row["path"]).name: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    for name, row in rows.items():
        tags = exiftool(sidecar_path(folder / name))
        moved = (row["llm_lat"], row["llm_lon"]) != (row["lat"], row["lon"])
        # The refinement's answer where it moved the photo (the verification may rank a
        # GeoCLIP candidate first), else GeoCLIP's best guess with its probability.
        want = (row["llm_lat"], row["llm_lon"]) if moved else (row["lat"], row["lon"])
        assert abs(tags["XMP-exif:GPSLatitude"] - float(want[0])) < 1e-5, name
        assert abs(tags["XMP-exif:GPSLongitude"] - float(want[1])) < 1e-5, name
        assert ("XMP-geoguess:RefinedBy" in tags) == moved
        assert ("XMP-geoguess:Probability" in tags) == (not moved)
        if moved:
            assert tags["XMP-geoguess:RefinedBy"] == "openai/test-model"
            assert "vision language model" in tags["XMP-exif:GPSProcessingMethod"]
    assert rows["p1.jpg"]["llm_source"].startswith("retrieval")  # the fallback
    # From the CSV afterwards: the same sidecars, byte for byte.
    made = {p.name: p.read_bytes() for p in folder.glob("*.xmp")}
    for side in folder.glob("*.xmp"):
        side.unlink()
    r = _cli("xmp", str(out))
    assert r.exit_code == 0, r.output
    assert {p.name: p.read_bytes() for p in folder.glob("*.xmp")} == made


def test_scan_goes_on_when_the_llm_fails(cli_home, tmp_path, server, photo) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        (folder / f"p{i}.jpg").write_bytes(photo.read_bytes())
    server.respond = lambda seen: Reply(status=500, body={"error": {"message": "down"}})
    out = tmp_path / "out.csv"
    r = _cli(
        "scan", str(folder), "-o", str(out), "--quiet",
        "--llm", "openai/test-model", "--llm-base-url", server.url,
        "--llm-refs", "0", "--llm-samples", "1", "--llm-retries", "1",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 2
    for row in rows:
        # The fallback is GeoCLIP's own answer.
        assert row["llm_source"] == "retrieval #1" and row["llm_model"] == "openai/test-model"
        assert (row["llm_lat"], row["llm_lon"]) == (row["lat"], row["lon"])
    assert len(server.seen) == 2 * 2  # each photo: one try + one retry
