"""On-disk cache of model answers, so that rerunning a photo costs nothing.

One JSON file per request under ``GEOGUESS_HOME/cache/llm/<2 hex>/<sha256>.json``. The
key is a hash of everything that shapes the answer: the image bytes' hash, the model
and base URL, the exact messages (prompt wording and references), the number of
samples, temperature, token limit and JSON mode. Files are written to a temporary name
and renamed into place, so a crash or a concurrent run never leaves half a record.
Only complete, successful answers are stored; failures are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..atomic import write_file

__all__ = ["AnswerCache", "default_cache_dir", "request_key"]

#: Bumped when the record layout changes.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    from ..store import home

    return home() / "cache" / "llm"


def request_key(payload: dict[str, Any]) -> str:
    """A stable hash of a JSON-able description of one request."""
    blob = json.dumps(
        {"format": CACHE_FORMAT, **payload}, sort_keys=True, ensure_ascii=True, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """Get and put answer records by key; disabled, it stores and finds nothing."""

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        try:
            record = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent, unreadable or damaged: ask the model again
        if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT:
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a record atomically. Raises OSError when the folder is not writable."""
        if not self.enabled:
            return
        data = json.dumps({"format": CACHE_FORMAT, **record}, ensure_ascii=False, indent=1)
        write_file(self.path(key), data)
