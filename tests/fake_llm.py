"""A fake OpenAI chat-completions server on 127.0.0.1 for the LLM tests.

http.server in a thread on an ephemeral port, answering from a script
(``FakeLLM.respond``), so that tests see exactly what litellm sends and how geoguess
copes with every answer and failure. The ``server`` fixture (in conftest.py) starts one
per test with a fake API key set.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

FAKE_KEY = "sk-test-DoNotLeakThis-0123456789"


@dataclass
class Reply:
    status: int = 200
    contents: list[str] | None = None  # answers; cycled to fill n
    body: dict[str, Any] | None = None  # error body
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    model: str | None = None
    choices: int | None = None  # how many answers to return (default: the request's n)


@dataclass
class Seen:
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def text(self) -> str:
        user = self.body["messages"][-1]["content"]
        return next(p["text"] for p in user if p["type"] == "text")

    @property
    def image_url(self) -> str:
        user = self.body["messages"][-1]["content"]
        return next(p["image_url"]["url"] for p in user if p["type"] == "image_url")

    def references(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The (lat, lon) lists shown as similar and as dissimilar in the prompt."""
        similar: list[tuple[float, float]] = []
        dissimilar: list[tuple[float, float]] = []
        current = None
        for line in self.text.splitlines():
            if "most similar to these places" in line:
                current = similar
            elif "least similar to these places" in line:
                current = dissimilar
            m = re.match(r"\d+\. (-?\d+\.\d+), (-?\d+\.\d+)", line)
            if m and current is not None:
                current.append((float(m.group(1)), float(m.group(2))))
        return similar, dissimilar


class FakeLLM:
    """An OpenAI chat-completions endpoint; ``respond(seen) -> Reply`` decides answers."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.active = self.max_active = 0  # requests being answered now / at most
        self.respond: Callable[[Seen], Reply] = lambda seen: Reply(contents=[_json(10, 20)])
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen = Seen({k.lower(): v for k, v in self.headers.items()}, body)
                with fake.lock:
                    fake.seen.append(seen)
                    fake.active += 1
                    fake.max_active = max(fake.max_active, fake.active)
                try:
                    reply = fake.respond(seen)
                    if reply.delay:
                        time.sleep(reply.delay)
                finally:
                    with fake.lock:
                        fake.active -= 1
                if reply.status == 200:
                    count = reply.choices or body.get("n", 1)
                    contents = reply.contents or [""]
                    choices = [
                        {
                            "index": i,
                            "message": {
                                "role": "assistant",
                                "content": contents[i % len(contents)],
                            },
                            "finish_reason": "stop",
                        }
                        for i in range(count)
                    ]
                    payload = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": reply.model or body["model"],
                        "choices": choices,
                        "usage": {
                            "prompt_tokens": 100,
                            "completion_tokens": 20,
                            "total_tokens": 120,
                        },
                    }
                else:
                    payload = reply.body or {"error": {"message": "error", "type": "server_error"}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(lat: float, lon: float, place: str = "Somewhere", reason: str = "clues") -> str:
    return json.dumps({"latitude": lat, "longitude": lon, "place": place, "reason": reason})


def _prompt_number(seen: Seen) -> int:
    """1..4 for the default (0,0), (5,5), (10,10), (15,15) prompts."""
    return {0: 1, 5: 2, 10: 3, 15: 4}[len(seen.references()[0])]


def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "GEOGUESS_LLM_CONSENT"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeLLM()
    yield fake
    fake.close()
