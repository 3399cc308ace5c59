"""The environment variables geoguess reads, named once, and one rule for their values.

Every ``GEOGUESS_*`` name is a constant here, so that a reader elsewhere cannot misspell
one and docs/cli.md can list them all. Yes/no values follow :func:`flag` everywhere.
Values are read when asked for, never at import: tests and Ray workers set them late.
Standard library only, so that importing this costs nothing (``geoguess --help``).
"""

from __future__ import annotations

import os

__all__ = [
    "CACHE_DIR",
    "DERIVED_CACHE",
    "FALSE_WORDS",
    "HOME",
    "LLM_CONSENT",
    "MODEL",
    "THREADS",
    "TRUE_WORDS",
    "YES",
    "flag",
    "parse_flag",
    "text",
]

#: Where model sets live, and caches under its ``cache/`` (else the user data folder).
HOME = "GEOGUESS_HOME"
#: Where rebuildable caches live (else ``$GEOGUESS_HOME/cache`` or the user cache folder).
CACHE_DIR = "GEOGUESS_CACHE_DIR"
#: The model set used when ``--model`` is not given.
MODEL = "GEOGUESS_MODEL"
#: Yes agrees in advance to fetching and building the model set on first use.
YES = "GEOGUESS_YES"
#: ONNX Runtime threads per session (a whole number of at least 1).
THREADS = "GEOGUESS_THREADS"
#: No turns the derived cache (optimised graphs, float32 galleries) off.
DERIVED_CACHE = "GEOGUESS_DERIVED_CACHE"
#: Yes hides the notice that photos go to a third-party language model.
LLM_CONSENT = "GEOGUESS_LLM_CONSENT"

#: Values that :func:`flag` reads as yes and as no, compared without case or spaces.
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "off"})


def parse_flag(value: str | None, default: bool) -> bool:
    """``value`` as yes/no: a word of :data:`TRUE_WORDS` or :data:`FALSE_WORDS` (any
    case, spaces around ignored); ``default`` when it is None, empty or anything else."""
    word = (value or "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return default


def flag(name: str, default: bool) -> bool:
    """The environment variable ``name`` as yes/no (see :func:`parse_flag`)."""
    return parse_flag(os.environ.get(name), default)


def text(name: str) -> str | None:
    """The environment variable ``name`` without spaces around it; None when unset or empty."""
    return os.environ.get(name, "").strip() or None
