"""Retrieval of similar and dissimilar gallery points, prompts, privacy and settings."""

from __future__ import annotations

import base64
import io
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoguess.errors import UsageError
from geoguess.llm import LLMSettings, is_local_endpoint, privacy_notice, redact
from geoguess.llm.prompts import PromptSpec, encode_image, user_text
from geoguess.llm.retrieval import Reference, Retrieval, retrieve, similar_and_dissimilar


def test_similar_and_dissimilar_are_the_extremes() -> None:
    rng = np.random.default_rng(7)
    scores = rng.normal(size=5000)
    top, bottom = similar_and_dissimilar(scores, 15)
    order = np.argsort(scores)
    assert list(top) == list(order[::-1][:15])  # highest first
    assert list(bottom) == list(order[:15])  # lowest first
    assert not set(top) & set(bottom)
    assert scores[bottom].max() < scores[top].min()


def test_similar_and_dissimilar_small_and_ties() -> None:
    scores = np.array([0.5, 0.1, 0.5, 0.9, 0.1])
    top, bottom = similar_and_dissimilar(scores, 2)
    assert list(top) == [3, 0]  # ties break on the row number
    assert list(bottom) == [1, 4]
    top, bottom = similar_and_dissimilar(scores, 0)
    assert len(top) == len(bottom) == 0
    top, bottom = similar_and_dissimilar(scores, 99)
    assert list(top) == [3, 0, 2, 1, 4]
    assert list(bottom) == [1, 4, 0, 2, 3]


@pytest.fixture(scope="module")
def geo(tiny_geo):
    return tiny_geo


def test_retrieve_dissimilar_is_least_similar(geo) -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=512).astype(np.float32)
    emb /= np.linalg.norm(emb)
    found = retrieve(geo, emb, 15)
    gallery = np.asarray(geo.gallery.embeddings, dtype=np.float32)
    scores = gallery @ emb
    ranked = np.sort(scores)
    sims = [r.similarity for r in found.similar]
    dis = [r.similarity for r in found.dissimilar]
    assert sims == sorted(sims, reverse=True)
    assert dis == sorted(dis)
    np.testing.assert_allclose(sims, ranked[::-1][:15], atol=1e-3)
    np.testing.assert_allclose(dis, ranked[:15], atol=1e-3)
    # G3's bug returned the similar list twice: the two lists must be far apart.
    assert max(dis) < min(sims)
    assert not {r.index for r in found.similar} & {r.index for r in found.dissimilar}
    # The similar list is GeoCLIP's own top-k.
    top = geo.flat.search(emb[None, :], 15)[0].indices  # raw rows, as GeoCLIP
    assert [r.index for r in found.similar][:5] == list(top)[:5]
    for r in found.similar + found.dissimilar:
        lat, lon = geo.gallery.coords[r.index]
        assert (r.lat, r.lon) == pytest.approx((float(lat), float(lon)))
        assert r.place is not None and r.place_text


def test_large_galleries_are_scored_in_chunks(geo, tiny_model_home, monkeypatch) -> None:
    from geoguess.geolocator import Geolocator
    from geoguess.llm import retrieval

    monkeypatch.setenv("GEOGUESS_HOME", str(tiny_model_home))
    fresh = Geolocator.load("tiny")
    monkeypatch.setattr(retrieval, "FLAT_MAX_ROWS", 1000)
    monkeypatch.setattr(retrieval, "_CHUNK_ROWS", 30_000)  # 100K rows: a partial last chunk
    emb = np.random.default_rng(4).normal(size=512).astype(np.float32)
    emb /= np.linalg.norm(emb)
    chunked = retrieve(fresh, emb, 10)
    assert "flat" not in vars(fresh)  # no fp32 copy of the gallery was made
    reference = retrieve(geo, emb, 10)
    assert [r.index for r in chunked.similar] == [r.index for r in reference.similar]
    assert [r.index for r in chunked.dissimilar] == [r.index for r in reference.dissimilar]


def test_verification_scores_repeated_answers_tie(geo) -> None:
    from geoguess.llm.verify import rank_by_score, verification_scores

    rng = np.random.default_rng(0)
    emb = rng.normal(size=512).astype(np.float32)
    emb /= np.linalg.norm(emb)
    points = [(43.58014, 0.60339)] * 5 + [(49.85, 2.35)] * 2 + [(48.85, 2.35)] * 2
    scores = verification_scores(geo, emb, points)
    assert len(set(scores[:5])) == 1 and scores[5] == scores[6] and scores[7] == scores[8]
    direct = geo.embed_locations(np.array(points[:1], dtype=np.float32)) @ emb
    assert scores[0] == pytest.approx(float(direct[0]), abs=1e-4)
    order = list(rank_by_score(scores))
    for group in ([0, 1, 2, 3, 4], [5, 6], [7, 8]):  # ties keep their input order
        assert [i for i in order if i in group] == group


def _refs(n: int, lat0: float) -> list[Reference]:
    return [Reference(lat0 + i, 10.0 + i, 0.5, i, None) for i in range(n)]


def test_prompt_text_has_the_requested_references() -> None:
    retrieval = Retrieval(_refs(15, 40.0), _refs(15, -40.0))
    text = user_text(PromptSpec(2, 5, 3), retrieval)
    assert "40.00000, 10.00000" in text and "44.00000, 14.00000" in text
    assert "45.00000, 15.00000" not in text  # only the first 5 similar
    assert "-38.00000, 12.00000" in text and "-37.00000, 13.00000" not in text
    assert '"latitude"' in text and '"reason"' in text
    bare = user_text(PromptSpec(1, 0, 0), retrieval)
    assert "40.00000" not in bare and "least similar" not in bare


def test_encode_image_downscales_and_drops_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    path = tmp_path / "p.jpg"
    img.save(path, exif=exif)
    enc = encode_image(path, max_side=512)
    assert enc.data_url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(enc.data_url.split(",", 1)[1])))
    assert sent.format == "JPEG" and max(sent.size) == 512 and sent.size == (512, 288)
    assert len(sent.getexif()) == 0
    assert b"SecretCam" not in base64.b64decode(enc.data_url.split(",", 1)[1])
    assert enc.sha256 == encode_image(path.read_bytes(), max_side=512).sha256


@pytest.mark.parametrize(
    ("model", "base_url", "local"),
    [
        ("openai/x", "http://127.0.0.1:8000/v1", True),
        ("openai/x", "http://localhost:1234/v1", True),
        ("openai/x", "localhost:1234", True),
        ("openai/x", "http://[::1]:8080/v1", True),
        ("ollama_chat/llava", None, True),
        ("ollama/llava", "http://127.0.0.1:11434", True),
        ("ollama_chat/llava", "http://gpu-box.example.com:11434", False),
        ("openai/x", "https://api.example.com/v1", False),
        ("openai/x", "http://10.0.0.2:8000/v1", False),
        ("gpt-4o", None, False),
        ("anthropic/claude-3-5-sonnet-latest", None, False),
    ],
)
def test_local_endpoints(
    model: str, base_url: str | None, local: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OLLAMA_API_BASE", "OPENAI_BASE_URL", "OPENAI_API_BASE", "GEOGUESS_LLM_CONSENT"):
        monkeypatch.delenv(var, raising=False)
    assert is_local_endpoint(model, base_url) is local
    assert (privacy_notice(model, base_url) is None) is local


def test_privacy_notice_consent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("GEOGUESS_LLM_CONSENT", raising=False)
    notice = privacy_notice("gpt-4o")
    assert notice is not None and "gpt-4o" in notice and "\n" not in notice
    monkeypatch.setenv("GEOGUESS_LLM_CONSENT", "1")
    assert privacy_notice("gpt-4o") is None


def test_redact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "zz-very-secret-value-123")
    text = redact(
        "bad key zz-very-secret-value-123; Incorrect API key provided: sk-proj-abcdef123456; "
        "Authorization: Bearer abc.def-ghi; https://user:pw@host/v1?key=AIzaSyA1234567890123456789 "
    )
    for secret in ("zz-very-secret", "sk-proj-abcdef", "abc.def-ghi", "user:pw", "AIzaSy"):
        assert secret not in text
    assert "https://***@host/v1?key=***" in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": ""},
        {"model": "gpt-4o", "samples": 0},
        {"model": "gpt-4o", "temperature": -1},
        {"model": "gpt-4o", "temperature": float("nan")},
        {"model": "gpt-4o", "references": ()},
        {"model": "gpt-4o", "references": ((-1, 0),)},
        {"model": "gpt-4o", "timeout": 0},
        {"model": "gpt-4o", "concurrency": 0},
    ],
)
def test_settings_are_validated(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        LLMSettings(**kwargs)


def test_stdout_router_only_diverts_the_calling_thread(capsys: pytest.CaptureFixture) -> None:
    from geoguess.llm.client import stdout_to_stderr

    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait()
        print("data line")
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with stdout_to_stderr():
        print("library chatter")
        ready.set()
        done.wait()
    t.join()
    print("after")
    out, err = capsys.readouterr()
    assert out == "data line\nafter\n"
    assert err == "library chatter\n"
    assert sys.stdout is not None and type(sys.stdout).__name__ != "_StdoutRouter"
