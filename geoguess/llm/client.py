"""Talking to the model through litellm: retries, JSON mode, usage and cost, caching.

litellm is imported only here and only when a refinement runs: importing it takes
seconds. Before the import, ``LITELLM_LOCAL_MODEL_COST_MAP`` is set so it reads its
bundled price list instead of fetching one. litellm and the provider SDKs may print
to stdout, which would corrupt ``--json`` output, so the import and every call run
with that thread's stdout sent to stderr (other threads, such as the one printing
results, keep the real stdout).

Retries are ours, not litellm's or the OpenAI SDK's (both are set to 0), so their
number, the backoff and the ``Retry-After`` header are under one control: timeouts,
429, 5xx and connection errors are retried with exponential backoff; anything else
(bad key, unknown model, bad request) fails at once.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import SetupError, UsageError, one_line
from .cache import AnswerCache, request_key
from .privacy import effective_base_url, redact

if TYPE_CHECKING:
    from .settings import LLMSettings

__all__ = ["Completion", "LLMClient", "LLMError", "Usage", "load_litellm", "stdout_to_stderr"]

_litellm: Any = None
_import_lock = threading.Lock()


# --- stdout protection -----------------------------------------------------------------

_routing = threading.local()
_router_lock = threading.Lock()
_router_users = 0


class _StdoutRouter:
    """Stands in for sys.stdout: threads inside :func:`stdout_to_stderr` write to stderr."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def _target(self) -> Any:
        return sys.stderr if getattr(_routing, "depth", 0) else self._real

    def write(self, s: str) -> int:
        return self._target().write(s)

    def writelines(self, lines: Any) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While inside, this thread's prints go to stderr; other threads are unaffected."""
    global _router_users
    with _router_lock:
        if _router_users == 0 and not isinstance(sys.stdout, _StdoutRouter):
            sys.stdout = _StdoutRouter(sys.stdout)
        _router_users += 1
    _routing.depth = getattr(_routing, "depth", 0) + 1
    try:
        yield
    finally:
        _routing.depth -= 1
        with _router_lock:
            _router_users -= 1
            if _router_users == 0 and isinstance(sys.stdout, _StdoutRouter):
                sys.stdout = sys.stdout._real


def load_litellm() -> Any:
    """Import litellm once, offline and quiet; SetupError when it is not installed."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            with stdout_to_stderr():
                try:
                    import litellm
                except ImportError as exc:
                    raise SetupError(
                        f"--llm needs the litellm package: pip install 'geoguess[llm]' ({exc})"
                    ) from None
            litellm.suppress_debug_info = True
            litellm.telemetry = False
            _litellm = litellm
    return _litellm


# --- results ---------------------------------------------------------------------------


@dataclass
class Usage:
    """Requests, tokens and cost. Cached answers cost nothing and count as ``cached``."""

    requests: int = 0  # requests that reached the provider and succeeded
    failed_requests: int = 0  # attempts that ended in an error (each retry counts)
    cached: int = 0  # prompts answered from the on-disk cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None once any request's cost is unknown to litellm

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.failed_requests += other.failed_requests
        self.cached += other.cached
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if self.cost_usd is None or other.cost_usd is None:
            self.cost_usd = None
        else:
            self.cost_usd += other.cost_usd

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }


@dataclass
class Completion:
    """The answers to one prompt (possibly fewer than asked for, with ``error`` set)."""

    texts: list[str]
    usage: Usage
    cached: bool = False
    error: str | None = None  # why some or all answers are missing
    warnings: list[str] = field(default_factory=list)


class LLMError(Exception):
    """A request that failed for good (after retries, or at once when not retryable)."""


# --- the client ------------------------------------------------------------------------

_RETRY_STATUS = frozenset({408, 409, 425, 429})


class LLMClient:
    """Sends chat requests for one model with the settings' retry and cache policy.

    Thread-safe: a refinement calls it from several threads at once.
    """

    def __init__(self, settings: LLMSettings, cache: AnswerCache | None = None) -> None:
        self.settings = settings
        self.cache = cache if cache is not None else AnswerCache(enabled=settings.cache)
        self.litellm = load_litellm()
        self.provider = self._provider()
        params = self._supported_params()
        if settings.json_mode is None:
            self.json_mode = "response_format" in params or self._supports_schema()
        else:
            self.json_mode = settings.json_mode
        self.batch = settings.batch_samples and "n" in params
        self._json_refused = False
        self._lock = threading.Lock()
        self._cache_warned = False

    def _provider(self) -> str:
        try:
            with stdout_to_stderr():
                _, provider, _, _ = self.litellm.get_llm_provider(
                    model=self.settings.model, api_base=self.settings.base_url
                )
        except Exception as exc:
            raise UsageError(
                f"litellm does not know model {self.settings.model!r}: name it as "
                f"provider/model, e.g. openai/gpt-4o, anthropic/..., gemini/..., "
                f"ollama_chat/llava ({redact(one_line(exc, 300))})"
            ) from None
        return str(provider)

    def _supported_params(self) -> list[str]:
        try:
            with stdout_to_stderr():
                params = self.litellm.get_supported_openai_params(
                    model=self.settings.model, custom_llm_provider=self.provider
                )
        except Exception:
            return []
        return list(params or [])

    def _supports_schema(self) -> bool:
        try:
            with stdout_to_stderr():
                return bool(
                    self.litellm.supports_response_schema(
                        model=self.settings.model, custom_llm_provider=self.provider
                    )
                )
        except Exception:
            return False

    # --- one prompt -------------------------------------------------------------------

    def complete(
        self, messages: list[dict[str, Any]], n: int, cache_id: dict[str, Any]
    ) -> Completion:
        """Up to ``n`` answers to one prompt; from the cache when it has them.

        ``cache_id`` stands for ``messages`` in the cache key: the caller puts the
        image's hash there in place of the image itself.
        """
        s = self.settings
        key = request_key(
            {
                **cache_id,
                "model": s.model,
                "base_url": effective_base_url(s.model, s.base_url),
                "n": n,
                "temperature": s.temperature,
                "max_tokens": s.max_tokens,
                "json_mode": self.json_mode,
            }
        )
        hit = self.cache.get(key)
        if hit is not None and isinstance(hit.get("texts"), list) and len(hit["texts"]) >= n:
            return Completion([str(t) for t in hit["texts"][:n]], Usage(cached=1), cached=True)
        usage = Usage()
        texts: list[str] = []
        warnings: list[str] = []
        error = None
        try:
            if self.batch and n > 1:
                texts += self._request(messages, n, usage, warnings)
            # Servers that ignore n (or providers without it) get one request per answer.
            while len(texts) < n:
                texts += self._request(messages, 1, usage, warnings)[:1]
        except LLMError as exc:
            error = str(exc)
        if error is None:
            try:
                self.cache.put(key, {"model": s.model, "texts": texts, "created": time.time()})
            except OSError as exc:
                with self._lock:
                    first, self._cache_warned = not self._cache_warned, True
                if first:
                    warnings.append(f"cannot write the LLM answer cache ({exc.strerror or exc})")
        return Completion(texts, usage, error=error, warnings=warnings)

    def _request(
        self, messages: list[dict[str, Any]], n: int, usage: Usage, warnings: list[str]
    ) -> list[str]:
        s = self.settings
        attempt = 0
        without_json = False
        first_error: BaseException | None = None
        while True:
            kwargs = self._kwargs(messages, n, json_mode=not without_json)
            try:
                with stdout_to_stderr():
                    response = self.litellm.completion(**kwargs)
            except Exception as exc:
                usage.failed_requests += 1
                if "response_format" in kwargs and _status(exc) in {400, 422}:
                    # Some OpenAI-compatible servers reject JSON mode: ask once more
                    # without it (the prompt asks for JSON anyway, and the parser copes
                    # with prose). If that fails too, JSON mode was not the problem.
                    without_json, first_error = True, exc
                    continue
                if not _retryable(exc) or attempt >= s.retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    shown = first_error if first_error is not None else exc
                    raise LLMError(f"{_describe(shown, s.timeout)}{tries}") from None
                time.sleep(self._delay(attempt, exc))
                attempt += 1
                continue
            if without_json and first_error is not None:
                with self._lock:
                    self._json_refused = True
                warnings.append("the server refused JSON mode; asking without it")
            usage.requests += 1
            self._count(response, usage)
            return [_content(c) for c in getattr(response, "choices", None) or []]

    def _kwargs(
        self, messages: list[dict[str, Any]], n: int, *, json_mode: bool = True
    ) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "timeout": s.timeout,
            # Our loop retries; litellm's and the OpenAI SDK's would multiply it.
            "num_retries": 0,
            "max_retries": 0,
            "drop_params": True,
        }
        if s.base_url:
            kwargs["api_base"] = s.base_url
            if self.provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
                # Local OpenAI-compatible servers need no key, but the SDK insists on one.
                kwargs["api_key"] = "no-key"
        if n > 1:
            kwargs["n"] = n
        if s.max_tokens is not None:
            kwargs["max_tokens"] = s.max_tokens
        if json_mode and self.json_mode and not self._json_refused:
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    def _delay(self, attempt: int, exc: BaseException) -> float:
        s = self.settings
        after = _retry_after(exc)
        if after is not None:
            return min(after, s.max_backoff)
        # Full jitter keeps parallel workers that failed together from retrying together.
        base = min(s.backoff * (2**attempt), s.max_backoff)
        return base * (0.5 + random.random() / 2)

    def _count(self, response: Any, usage: Usage) -> None:
        u = getattr(response, "usage", None)
        usage.prompt_tokens += int(getattr(u, "prompt_tokens", 0) or 0)
        usage.completion_tokens += int(getattr(u, "completion_tokens", 0) or 0)
        cost = None
        try:
            with stdout_to_stderr():
                cost = float(self.litellm.completion_cost(completion_response=response))
        except Exception:
            cost = None  # a model missing from litellm's price list
        if usage.cost_usd is not None:
            usage.cost_usd = None if cost is None else usage.cost_usd + cost


def _content(choice: Any) -> str:
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return content or ""


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _retryable(exc: BaseException) -> bool:
    lit = _litellm
    kinds = tuple(
        k
        for k in (
            getattr(lit, "Timeout", None),
            getattr(lit, "RateLimitError", None),
            getattr(lit, "APIConnectionError", None),
            getattr(lit, "InternalServerError", None),
            getattr(lit, "ServiceUnavailableError", None),
        )
        if isinstance(k, type)
    )
    if kinds and isinstance(exc, kinds):
        return True
    status = _status(exc)
    return status is not None and (status in _RETRY_STATUS or status >= 500)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None  # an HTTP date, or no header: use our own backoff


def _describe(exc: BaseException, timeout: float) -> str:
    lit = _litellm
    timeout_type = getattr(lit, "Timeout", None)
    if isinstance(timeout_type, type) and isinstance(exc, timeout_type):
        return f"request timed out ({timeout:g} s)"
    text = one_line(exc, 300)
    # litellm prefixes repeat the class name: "litellm.RateLimitError: RateLimitError: ..."
    for prefix in ("litellm.",):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    status = _status(exc)
    head = f"HTTP {status}: " if status else ""
    return redact(head + text)
