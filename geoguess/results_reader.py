"""Reading a scan's output back: CSV, JSON Lines or GeoJSON, into ``--json`` records.

``geoguess map RESULTS`` draws what a scan wrote, possibly long ago and elsewhere. The
records this returns have the shape of :meth:`LocateResult.to_dict` as far as the file
holds it: a CSV keeps the best guess's place, the candidates' coordinates and
probabilities, the spread and the EXIF GPS, but not every candidate's place.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError, one_line, os_reason

__all__ = ["ReadResults", "read_results"]

#: A results file larger than this is refused: a map of it would not open anyway.
MAX_RESULTS_BYTES = 2 << 30


@dataclass
class ReadResults:
    """Records read from a results file, and one line per row that could not be used."""

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    random_weights: bool = False


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def _candidates(top_k: str) -> list[dict[str, Any]]:
    out = []
    for part in (top_k or "").split(";"):
        fields = [_float(x) for x in part.split(",")]
        if len(fields) == 3 and None not in fields:
            lat, lon, prob = fields
            out.append({"lat": lat, "lon": lon, "probability": prob, "place": None})
    return out


#: A CSV's top_k keeps 5 decimals and its lat/lon columns 6: closer than this (about a
#: metre) is the same point, not a person's edit.
_SAME_DEGREES = 1e-5


def _moved(lat: Any, lon: Any, predictions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The position a person gave, when it is not the best candidate's: an edited
    ``lat``/``lon`` cell, or a point moved in a GeoJSON editor. Text that is not a
    number is passed on as it is, so that the sidecar writer names the bad cell
    rather than quietly using the model's guess."""
    if lat in (None, "") and lon in (None, ""):
        return None
    if not predictions:
        return (
            None
            if (_float(lat) is not None and _float(lon) is not None)
            else {"lat": lat, "lon": lon}
        )
    best = predictions[0]
    a, b = _float(lat), _float(lon)
    if (
        a is not None
        and b is not None
        and abs(a - best["lat"]) <= _SAME_DEGREES
        and abs(b - best["lon"]) <= _SAME_DEGREES
    ):
        return None
    return {"lat": a if a is not None else lat, "lon": b if b is not None else lon}


def _from_csv_row(row: dict[str, str]) -> dict[str, Any]:
    predictions = _candidates(row.get("top_k", ""))
    lat, lon = _float(row.get("lat")), _float(row.get("lon"))
    if not predictions and lat is not None and lon is not None:
        prob = _float(row.get("probability"))
        predictions = [{"lat": lat, "lon": lon, "probability": prob or 0.0, "place": None}]
    if predictions and row.get("place"):
        predictions[0]["place"] = {
            "name": row["place"],
            "admin1": row.get("admin1") or None,
            "country": row.get("country") or None,
            "country_code": row.get("country_code") or None,
        }
    exif_lat, exif_lon = _float(row.get("exif_lat")), _float(row.get("exif_lon"))
    reviewed = _moved(row.get("lat"), row.get("lon"), predictions)
    if predictions and not reviewed and lat is not None and lon is not None:
        # The columns are the best guess written more precisely than top_k holds it.
        prob = _float(row.get("probability"))
        predictions[0].update(lat=lat, lon=lon)
        if prob is not None:
            predictions[0]["probability"] = prob
    spread = {}
    for key in ("p50", "p90"):
        value = _float(row.get(f"spread_{key}_km"))
        if value is not None:
            spread[key] = value
    return {
        "file": row.get("path", ""),
        "predictions": predictions,
        "spread_km": spread,
        "exif_gps": None
        if exif_lat is None or exif_lon is None
        else {"lat": exif_lat, "lon": exif_lon},
        "exif_error_km": _float(row.get("error_km")),
        "confidence": row.get("confidence") or None,
        "error": row.get("error") or None,
        "model": row.get("model") or None,
        **({"reviewed": reviewed} if reviewed else {}),
        **({"llm": llm} if (llm := _llm_from_csv(row)) else {}),
    }


def _llm_from_csv(row: dict[str, str]) -> dict[str, Any] | None:
    """The ``llm`` record as far as a CSV keeps it: the refined answer and its source."""
    lat, lon = _float(row.get("llm_lat")), _float(row.get("llm_lon"))
    if lat is None or lon is None:
        return None
    # "retrieval #N": a GeoCLIP candidate; "<prompt>, sample K": the model's own answer.
    # A CSV keeps no fallback flag; a fallback is GeoCLIP's best guess, where lat/lon are.
    source = "retrieval" if (row.get("llm_source") or "").startswith("retrieval") else "llm"
    best = {
        "lat": lat,
        "lon": lon,
        "source": source,
        "place": {"name": row["llm_place"]} if row.get("llm_place") else None,
    }
    return {"model": row.get("llm_model") or None, "best": best, "fallback": False}


def _from_feature(feature: dict[str, Any]) -> dict[str, Any]:
    p = feature.get("properties") or {}
    predictions = [
        {
            "lat": c["lat"],
            "lon": c["lon"],
            "probability": c["probability"],
            # GeoJSON holds the place as one described line ("Paris, Île-de-France,
            # France"): kept whole as the name, so that describing it again adds nothing.
            "place": {"name": c["place"]} if c.get("place") else None,
        }
        for c in p.get("candidates") or []
    ]
    has_gps = p.get("exif_lat") is not None and p.get("exif_lon") is not None
    coords = (feature.get("geometry") or {}).get("coordinates") or [None, None]
    reviewed = _moved(coords[1], coords[0], predictions) if len(coords) >= 2 else None
    return {
        "file": p.get("file", ""),
        "predictions": predictions,
        "spread_km": p.get("spread_km") or {},
        "exif_gps": {"lat": p["exif_lat"], "lon": p["exif_lon"]} if has_gps else None,
        "exif_error_km": p.get("error_km"),
        "confidence": p.get("confidence"),
        "error": p.get("error"),
        "model": p.get("model"),
        **({"reviewed": reviewed} if reviewed else {}),
    }


def _is_random(model: Any) -> bool:
    if isinstance(model, dict):
        return bool(model.get("random_weights"))
    return isinstance(model, str) and "random weights" in model


def _read_bytes(source: str | os.PathLike[str]) -> tuple[bytes, str]:
    if os.fspath(source) == "-":
        return sys.stdin.buffer.read(MAX_RESULTS_BYTES + 1), "<stdin>"
    path = Path(source)
    try:
        if path.stat().st_size > MAX_RESULTS_BYTES:
            raise UsageError(f"{path}: larger than {MAX_RESULTS_BYTES >> 30} GiB")
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({os_reason(exc)})") from None


def _read_text(text: str, label: str, out: ReadResults) -> None:
    """Records of one CSV, JSON Lines or GeoJSON text, told apart by its content."""
    head = text.lstrip()[:1]
    if head == "{":
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
        if isinstance(whole, dict) and whole.get("type") == "FeatureCollection":
            for n, feature in enumerate(whole.get("features") or [], 1):
                try:
                    out.records.append(_from_feature(feature))
                except (KeyError, TypeError, AttributeError):
                    out.problems.append(f"{label}: feature {n} is not a geoguess scan feature")
            return
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                out.problems.append(f"{label}: line {n} is not JSON ({one_line(exc, 80)})")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("file"), str):
                out.problems.append(f"{label}: line {n} is not a geoguess record")
                continue
            out.records.append(record)
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "path" not in reader.fieldnames:
        raise UsageError(
            f"{label}: not a geoguess scan output (CSV with a 'path' column, JSON Lines, "
            "GeoJSON, or a folder of shards)"
        )
    for row in reader:
        out.records.append(_from_csv_row(row))


def _read_shards(folder: Path, out: ReadResults) -> None:
    from .scan_shards import SETTINGS_FILE, read_parquet_rows, shard_files

    try:
        shards = shard_files(folder)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot read ({os_reason(exc)})") from None
    if not shards and not (folder / SETTINGS_FILE).exists():
        raise UsageError(
            f"{folder}: is a folder but not a scan's folder of shards; give a scan's CSV, "
            "JSON Lines or GeoJSON file"
        )
    for shard in shards:
        try:
            if shard.suffix == ".parquet":
                out.records.extend(_from_csv_row(row) for row in read_parquet_rows(shard))
            else:
                text = shard.read_bytes().decode("utf-8", "replace")
                _read_text(text, str(shard), out)
        except OSError as exc:
            out.problems.append(f"{shard}: cannot read ({os_reason(exc)})")
        except UsageError as exc:
            out.problems.append(str(exc))


def read_results(source: str | os.PathLike[str]) -> ReadResults:
    """The records of a scan's CSV, JSON Lines or GeoJSON file (``-``: stdin), or of a
    folder of shards (``scan -o OUTDIR/``: CSV, JSON Lines or Parquet), in order.

    The format is found from the content. Rows that cannot be used are listed in
    ``problems``; a file that is none of these raises UsageError.
    """
    out = ReadResults()
    if os.fspath(source) != "-" and Path(source).is_dir():
        _read_shards(Path(source), out)
    else:
        data, label = _read_bytes(source)
        _read_text(data.decode("utf-8", "replace").lstrip("\ufeff"), label, out)
    out.random_weights = any(_is_random(r.get("model")) for r in out.records)
    return out
