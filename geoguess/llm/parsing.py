"""Reading coordinates out of a language model's answer.

The prompt asks for a JSON object, and most models comply, but some wrap it in a code
fence, add a sentence before it, or ignore the format and write prose. So: JSON first
(anywhere in the text), then a tolerant reading of prose ("48.85° N, 2.35° E",
"lat: -33.9, lon: 151.2", "(40.7128, -74.0060)").

An answer that cannot be read, or whose coordinates are out of range, is rejected
with a reason. It never becomes (0, 0): G3's code turned parse failures into (0, 0)
and left them in the candidate pool, where the verifier could pick them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["AnswerError", "ParsedAnswer", "parse_answer"]

#: Longest reason (characters) kept from one answer; the rest is cut.
MAX_REASON_CHARS = 500
#: Longest answer (characters) searched for coordinates.
MAX_ANSWER_CHARS = 20_000

_LAT_KEYS = ("latitude", "lat")
_LON_KEYS = ("longitude", "lon", "lng", "long")
_PLACE_KEYS = ("place", "location", "city", "address", "name")
_REASON_KEYS = ("reason", "reasoning", "explanation", "rationale", "justification")

# 48°51'24.1"N, 48° 51.4' N, 48.85° N, 48.85N: degrees, optional minutes and seconds,
# then a hemisphere letter. Curly quotes and primes appear in model output too.
_DMS = re.compile(
    r"(?<![\d.])(?P<deg>\d{1,3}(?:\.\d+)?)\s*(?:°|º|deg(?:rees)?\b)?\s*"
    r"(?:(?P<min>\d{1,2}(?:\.\d+)?)\s*['′’]\s*)?"
    r"(?:(?P<sec>\d{1,2}(?:\.\d+)?)\s*(?:\"|″|”|'')\s*)?"
    r"(?P<hem>[NSEW])\b",
    re.IGNORECASE,
)
_LABELLED = re.compile(
    r"\b(?P<key>latitude|longitude|lat|lon|lng|long)\b\s*[\"']?\s*(?:[:=]|is|of)?\s*"
    r"(?P<num>[-+\u2212]?\d{1,3}(?:\.\d+)?)\s*°?\s*(?P<hem>[NSEW]\b)?",
    re.IGNORECASE,
)
# Two decimal numbers side by side ("40.7128, -74.0060"). Both must have a decimal
# point so that counts in prose ("3 people, 2 cars") are not read as coordinates.
_PAIR = re.compile(
    r"(?<![\w.])(?P<lat>[-+\u2212]?\d{1,2}\.\d+)\s*°?\s*[,;/\s]\s*"
    r"(?P<lon>[-+\u2212]?\d{1,3}\.\d+)(?![\w.])"
)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


class AnswerError(ValueError):
    """An answer with no usable coordinates; the message says why."""


@dataclass(frozen=True)
class ParsedAnswer:
    lat: float
    lon: float
    place: str | None  # the model's own name for the place, if it gave one
    reason: str | None  # the model's explanation, if it gave one
    method: str  # "json" or "text": how the coordinates were read


def parse_answer(text: str | None) -> ParsedAnswer:
    """The coordinates (and place, reason) in one answer; raises AnswerError if none."""
    if text is None or not text.strip():
        raise AnswerError("empty answer")
    # Answers are short; the cap bounds the JSON scan on runaway output.
    text = text.strip()[:MAX_ANSWER_CHARS]
    obj = _find_json(text)
    if obj is not None:
        lat = _first(obj, _LAT_KEYS)
        lon = _first(obj, _LON_KEYS)
        if lat is not None or lon is not None:
            if lat is None or lon is None:
                raise AnswerError("JSON answer has only one of latitude and longitude")
            lat_v = _coordinate(lat, "latitude")
            lon_v = _coordinate(lon, "longitude")
            _check_range(lat_v, lon_v)
            return ParsedAnswer(
                lat_v,
                lon_v,
                _text_field(obj, _PLACE_KEYS),
                _text_field(obj, _REASON_KEYS),
                "json",
            )
    lat_v, lon_v = _from_prose(text)
    _check_range(lat_v, lon_v)
    return ParsedAnswer(lat_v, lon_v, None, _clip(text), "text")


# --- JSON ------------------------------------------------------------------------------


def _find_json(text: str) -> dict[str, Any] | None:
    """The first JSON object with coordinate keys in the text (fenced or bare)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for chunk in candidates:
        for obj in _json_objects(chunk):
            found = _with_coordinates(obj)
            if found is not None:
                return found
    return None


def _json_objects(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    out = []
    i = 0
    while True:
        start = min((p for p in (text.find("{", i), text.find("[", i)) if p >= 0), default=-1)
        if start < 0:
            return out
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        out.append(obj)
        i = end


def _with_coordinates(obj: Any, depth: int = 0) -> dict[str, Any] | None:
    """The object itself, or the first nested one, that has a latitude or longitude."""
    if depth > 3:
        return None
    if isinstance(obj, dict):
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        if any(k in lowered for k in (*_LAT_KEYS, *_LON_KEYS)):
            return lowered
        children = list(obj.values())
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for child in children:
        found = _with_coordinates(child, depth + 1)
        if found is not None:
            return found
    return None


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if obj.get(k) is not None:
            return obj[k]
    return None


def _coordinate(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise AnswerError(f"{what} is not a number: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        m = _DMS.fullmatch(s)
        if m:
            return _dms_value(m)
        try:
            return float(s.replace("\u2212", "-").rstrip("°").strip())
        except ValueError:
            pass
    raise AnswerError(f"{what} is not a number: {_clip(repr(value), 60)}")


def _text_field(obj: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    value = _first(obj, keys)
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return _clip(value.strip()) or None


# --- prose -----------------------------------------------------------------------------


def _from_prose(text: str) -> tuple[float, float]:
    found = _labelled(text) or _hemispheres(text) or _pair(text)
    if found is None:
        raise AnswerError(f"no coordinates found in the answer: {_clip(text, 80)!r}")
    return found


def _number(s: str) -> float:
    return float(s.replace("\u2212", "-"))


def _labelled(text: str) -> tuple[float, float] | None:
    lat = lon = None
    for m in _LABELLED.finditer(text):
        value = abs(_number(m.group("num"))) if m.group("hem") else _number(m.group("num"))
        if m.group("hem") and m.group("hem").upper() in "SW":
            value = -value
        if m.group("key").lower().startswith("lat"):
            lat = value if lat is None else lat
        else:
            lon = value if lon is None else lon
        if lat is not None and lon is not None:
            return lat, lon
    return None


def _dms_value(m: re.Match[str]) -> float:
    value = float(m.group("deg"))
    if m.group("min"):
        value += float(m.group("min")) / 60
    if m.group("sec"):
        value += float(m.group("sec")) / 3600
    return -value if m.group("hem").upper() in "SW" else value


def _hemispheres(text: str) -> tuple[float, float] | None:
    lat = lon = None
    for m in _DMS.finditer(text):
        hem = m.group("hem").upper()
        if hem in "NS" and lat is None:
            lat = _dms_value(m)
        elif hem in "EW" and lon is None and lat is not None:
            lon = _dms_value(m)
        if lat is not None and lon is not None:
            return lat, lon
    return None


def _pair(text: str) -> tuple[float, float] | None:
    for m in _PAIR.finditer(text):
        lat, lon = _number(m.group("lat")), _number(m.group("lon"))
        if abs(lat) <= 90 and abs(lon) <= 180:
            return lat, lon
    return None


# --- checks ----------------------------------------------------------------------------


def _check_range(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise AnswerError("coordinates are not finite numbers")
    if abs(lat) > 90:
        raise AnswerError(f"latitude {lat:g} is out of range [-90, 90]")
    if abs(lon) > 180:
        raise AnswerError(f"longitude {lon:g} is out of range [-180, 180]")
    # Models write (0, 0) as a placeholder when they refuse; it is open sea off Africa.
    if lat == 0 and lon == 0:
        raise AnswerError("placeholder coordinates (0, 0)")


def _clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
