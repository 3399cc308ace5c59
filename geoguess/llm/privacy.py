"""Privacy: when sending a photo leaves the machine, and keeping API keys out of output.

Sending someone's photo to a third-party model is the user's decision, so the CLI says
it is happening (once per run) unless the endpoint is local: a base URL on localhost,
127.0.0.0/8 or ::1, or an Ollama model without a remote base URL.

API keys come only from the providers' usual environment variables (litellm reads
them). Error messages from providers and HTTP libraries sometimes quote a key, a
bearer token or a URL with ``?key=`` (Gemini); :func:`redact` removes those before any
message is shown, logged or written to JSON.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse

from .. import environment

__all__ = [
    "CONSENT_ENV",
    "consent_given",
    "effective_base_url",
    "is_local_endpoint",
    "privacy_notice",
    "redact",
]

#: Setting this to yes (see geoguess.environment.flag) silences the privacy notice, like ``--yes``.
CONSENT_ENV = environment.LLM_CONSENT

_LOCAL_PROVIDERS = ("ollama", "ollama_chat")
# Where litellm looks for a provider's base URL when none is passed.
_BASE_URL_ENV = {
    "ollama": ("OLLAMA_API_BASE",),
    "ollama_chat": ("OLLAMA_API_BASE",),
    "openai": ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
}
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
# Each pattern's "pre" and "post" groups are kept around the "***".
_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),  # OpenAI / Anthropic style keys
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"(?i)(?P<pre>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(r"(?i)(?P<pre>[?&](?:api[_-]?key|key|token|access_token)=)[^&\s\"']+"),
    re.compile(r"(?i)(?P<pre>\b[a-z][a-z0-9+.\-]*://)[^/@\s:]+:[^/@\s]+(?P<post>@)"),
)
_MIN_SECRET_LEN = 8


def provider_of(model: str) -> str:
    """The litellm provider prefix of a model string ("openai" for bare OpenAI names)."""
    return model.split("/", 1)[0].lower() if "/" in model else "openai"


def effective_base_url(model: str, base_url: str | None) -> str | None:
    """The base URL litellm will use: the given one, else the provider's env variable."""
    if base_url:
        return base_url
    for name in _BASE_URL_ENV.get(provider_of(model), ()):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _is_local_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_endpoint(model: str, base_url: str | None = None) -> bool:
    """True when requests stay on this machine (no privacy notice needed)."""
    url = effective_base_url(model, base_url)
    if url:
        if "://" not in url:
            url = "http://" + url
        try:
            host = urllib.parse.urlsplit(url).hostname
        except ValueError:
            return False
        return _is_local_host(host)
    return provider_of(model) in _LOCAL_PROVIDERS


def consent_given() -> bool:
    return environment.flag(CONSENT_ENV, False)


def privacy_notice(model: str, base_url: str | None = None) -> str | None:
    """The one-line notice to show before photos are sent, or None when not needed."""
    if is_local_endpoint(model, base_url) or consent_given():
        return None
    url = effective_base_url(model, base_url)
    if url:
        where = f"the server at {redact(url)}"
    else:
        where = f"the {provider_of(model)} API" if "/" in model else "the model's provider"
    return (
        f"note: --llm sends each photo (re-encoded, without its metadata) to {where} "
        f"(model {model}); --yes or {CONSENT_ENV}=1 hides this notice"
    )


def _secret_values() -> list[str]:
    values = {
        v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN
    }
    return sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


def _mask(m: re.Match[str]) -> str:
    groups = m.groupdict()
    return (groups.get("pre") or "") + "***" + (groups.get("post") or "")


def redact(text: str) -> str:
    """``text`` with API keys, tokens and URL credentials replaced by ``***``."""
    for value in _secret_values():
        text = text.replace(value, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_mask, text)
    return text
