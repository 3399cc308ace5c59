"""The ``--llm`` options shared by ``geoguess locate`` and ``geoguess scan``.

Not a command module: commands take :class:`LLMOptions` as one bundle.
Nothing heavy is imported here; litellm loads only when ``--llm`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from .common import _note

if TYPE_CHECKING:
    from ..llm import Refiner

_PANEL = "LLM refinement"

LLMOpt = Annotated[
    str | None,
    typer.Option(
        "--llm",
        metavar="MODEL",
        help="Refine the answer with a vision language model through litellm: gpt-4o, "
        "anthropic/..., gemini/..., ollama_chat/llava, or openai/NAME with --llm-base-url. "
        "API keys come from the provider's usual environment variable.",
        rich_help_panel=_PANEL,
    ),
]
LLMBaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--llm-base-url",
        metavar="URL",
        help="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, LM Studio, ...).",
        rich_help_panel=_PANEL,
    ),
]
LLMSamplesOpt = Annotated[
    int,
    typer.Option(
        "--llm-samples", min=1, max=20, help="Answers per prompt.", rich_help_panel=_PANEL
    ),
]
LLMTemperatureOpt = Annotated[
    float,
    typer.Option(
        "--llm-temperature", min=0.0, max=2.0, help="Sampling temperature.", rich_help_panel=_PANEL
    ),
]
LLMRefsOpt = Annotated[
    str,
    typer.Option(
        "--llm-refs",
        metavar="K,K,...",
        help="One prompt per K, showing K similar and K dissimilar gallery places.",
        rich_help_panel=_PANEL,
    ),
]
LLMConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--llm-concurrency",
        min=1,
        max=256,
        help="LLM requests in flight at once.",
        rich_help_panel=_PANEL,
    ),
]
LLMTimeoutOpt = Annotated[
    float,
    typer.Option("--llm-timeout", min=0.1, help="Seconds per LLM request.", rich_help_panel=_PANEL),
]
LLMRetriesOpt = Annotated[
    int,
    typer.Option(
        "--llm-retries",
        min=0,
        max=20,
        help="Retries after a timeout, rate limit (429) or server error (5xx).",
        rich_help_panel=_PANEL,
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Neither reuse nor store LLM answers (cached under GEOGUESS_HOME/cache/llm).",
        rich_help_panel=_PANEL,
    ),
]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Agree without asking: fetch and build the model set on first use (or set "
        "GEOGUESS_YES=1), and skip the notice that --llm sends photos to a third party "
        "(or set GEOGUESS_LLM_CONSENT=1).",
    ),
]

DEFAULT_REFS = "0,5,10,15"


def parse_refs(text: str) -> tuple[tuple[int, int], ...]:
    from ..number_lists import parse_number_list

    return tuple((k, k) for k in parse_number_list(text, int, "--llm-refs"))


@dataclass(frozen=True)
class LLMOptions:
    """The ``--llm*`` options: take them with ``@bundled("llm_options", LLMOptions)``."""

    llm: LLMOpt = None
    llm_base_url: LLMBaseUrlOpt = None
    llm_samples: LLMSamplesOpt = 2
    llm_temperature: LLMTemperatureOpt = 1.0
    llm_refs: LLMRefsOpt = DEFAULT_REFS
    llm_concurrency: LLMConcurrencyOpt = 4
    llm_timeout: LLMTimeoutOpt = 60.0
    llm_retries: LLMRetriesOpt = 3
    no_cache: NoCacheOpt = False

    def open(self, *, yes: bool = False) -> Refiner | None:
        """The Refiner when ``--llm`` was given, else None: settings validated, litellm
        loaded, and a notice once if photos leave the machine."""
        if not self.llm:
            return None
        from ..llm import LLMSettings, Refiner, privacy_notice

        settings = LLMSettings(
            model=self.llm,
            base_url=self.llm_base_url,
            references=parse_refs(self.llm_refs),
            samples=self.llm_samples,
            temperature=self.llm_temperature,
            concurrency=self.llm_concurrency,
            timeout=self.llm_timeout,
            retries=self.llm_retries,
            cache=not self.no_cache,
        )
        refiner = Refiner(settings)
        notice = None if yes else privacy_notice(self.llm, self.llm_base_url)
        if notice:
            _note(notice)
        return refiner
