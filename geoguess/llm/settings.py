"""Settings of an LLM refinement run, validated once, shared by every photo."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import UsageError
from .prompts import DEFAULT_REFERENCE_COUNTS

__all__ = ["LLMSettings"]


@dataclass(frozen=True)
class LLMSettings:
    """How to ask the model. Only ``model`` is required.

    ``model`` is any litellm model string (``gpt-4o``, ``anthropic/...``,
    ``gemini/...``, ``ollama_chat/llava``, or ``openai/NAME`` with ``base_url`` for an
    OpenAI-compatible server). API keys come from the providers' usual environment
    variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY``, ...).
    """

    model: str
    base_url: str | None = None
    #: (similar, dissimilar) reference counts, one prompt each (G3's diversification).
    references: tuple[tuple[int, int], ...] = DEFAULT_REFERENCE_COUNTS
    samples: int = 2  # answers per prompt
    # 1.0 is accepted by every provider (reasoning models accept nothing else) and
    # samples differ, which is the point of asking several times.
    temperature: float = 1.0
    max_tokens: int | None = None  # None: the provider's default
    json_mode: bool | None = None  # None: use JSON mode where litellm says it is supported
    batch_samples: bool = True  # ask for all samples of a prompt in one request (n > 1)
    timeout: float = 60.0  # seconds per request
    retries: int = 3  # extra attempts after a timeout, 429, 5xx or connection error
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_backoff: float = 30.0
    concurrency: int = 4  # requests in flight at once
    verify_top: int = 5  # retrieval candidates that compete with the LLM's in verification
    image_max_side: int = 1024  # pixels; the photo is downscaled before it is sent
    image_quality: int = 90  # JPEG quality of the photo sent
    cache: bool = True

    def __post_init__(self) -> None:
        if not self.model or not self.model.strip():
            raise UsageError("--llm needs a model name, e.g. gpt-4o or ollama_chat/llava")
        refs = tuple((int(s), int(d)) for s, d in self.references)
        object.__setattr__(self, "references", refs)
        if not refs:
            raise UsageError("at least one prompt is needed (reference counts)")
        if any(s < 0 or d < 0 or s > 100 or d > 100 for s, d in refs):
            raise UsageError("reference counts must be between 0 and 100")
        checks = [
            (1 <= self.samples <= 20, f"--llm-samples must be 1 to 20, got {self.samples}"),
            (
                math.isfinite(self.temperature) and 0 <= self.temperature <= 2,
                f"--llm-temperature must be 0 to 2, got {self.temperature}",
            ),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens must be positive"),
            (self.timeout > 0, f"--llm-timeout must be positive, got {self.timeout}"),
            (0 <= self.retries <= 20, f"--llm-retries must be 0 to 20, got {self.retries}"),
            (self.backoff >= 0 and self.max_backoff >= 0, "backoff must not be negative"),
            (
                1 <= self.concurrency <= 256,
                f"--llm-concurrency must be 1 to 256, got {self.concurrency}",
            ),
            (self.verify_top >= 0, "verify_top must not be negative"),
            (64 <= self.image_max_side <= 8192, "image_max_side must be 64 to 8192"),
            (1 <= self.image_quality <= 100, "image_quality must be 1 to 100"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def max_references(self) -> int:
        return max(max(s, d) for s, d in self.references)

    def to_dict(self) -> dict[str, Any]:
        """The settings that shape the answers (no base URL: it may hold credentials)."""
        d = asdict(self)
        for k in ("base_url", "cache", "concurrency"):
            d.pop(k)
        d["references"] = [list(r) for r in self.references]
        return d
