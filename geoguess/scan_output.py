"""Scan results as CSV or JSON Lines files that survive interruption and resume.

Every row is one complete line handed to a single ``write()`` and flushed, so a file
is valid whenever the writer is not in the middle of a call. A run killed mid-write
(SIGKILL, power loss) can leave a torn last line: reopening the file detects it,
truncates it away and reports it, then appends after the last complete row. The
paths already in the file are available as :attr:`ScanWriter.done`, so a scan can
skip them. Files are written as UTF-8; file names that are not valid UTF-8 are kept
byte for byte (``surrogateescape``) so that they match again on resume.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError, os_reason

if TYPE_CHECKING:
    from .locate import LocateResult

__all__ = [
    "CSV_COLUMNS",
    "CsvWriter",
    "GeojsonWriter",
    "JsonlWriter",
    "ScanWriter",
    "csv_row",
    "format_top_k",
    "open_writer",
    "output_format",
]

FORMATS = ("csv", "jsonl", "geojson")
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_GEOJSON_SUFFIXES = {".geojson"}
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"

#: CSV columns, in order. Columns are only ever added, never renamed; a resumed file
#: keeps the columns it was started with.
CSV_COLUMNS = (
    "path",
    "lat",
    "lon",
    "probability",
    "place",
    "admin1",
    "country",
    "country_code",
    "top_k",
    "spread_p50_km",
    "spread_p90_km",
    "exif_lat",
    "exif_lon",
    "exif_gps_status",
    "error_km",
    "taken_at",
    "camera",
    "model",
    "error",
    # --llm refinement (geoguess.llm); empty without it.
    "llm_lat",
    "llm_lon",
    "llm_place",
    "llm_source",
    "llm_model",
    # What else shaped the row (gallery, top-k, search, LLM): see :func:`settings_label`.
    "settings",
    # The accuracy level of the 50% spread (LocateResult.confidence).
    "confidence",
    # The probability by country and by region ("France 41%; Spain 12%"), and a custom
    # gallery's own name for the best point.
    "countries",
    "regions",
    "label",
)

#: Keys of the writer's ``model`` record that are not settings (see settings_label).
_MODEL_KEYS = ("name", "precision", "random_weights")


def output_format(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str:
    """``fmt`` when given, else from the suffix (.jsonl/.ndjson/.json: ``jsonl``,
    .geojson: ``geojson``), else ``csv``."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r} (choose csv, jsonl or geojson)")
        return fmt
    suffix = Path(path).suffix.lower() if path is not None else ""
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in _GEOJSON_SUFFIXES:
        return "geojson"
    return "csv"


def format_top_k(result: LocateResult) -> str:
    """The candidates as ``lat,lon,prob;lat,lon,prob;...``, best first."""
    return ";".join(
        f"{c.prediction.lat:.5f},{c.prediction.lon:.5f},{c.prediction.probability:.4g}"
        for c in result.candidates
    )


def model_label(model: Mapping[str, Any] | None) -> str:
    """``name/precision`` of a writer's ``model`` record, flagged when weights are random."""
    if not model:
        return ""
    label = f"{model.get('name', '')}/{model.get('precision', '')}"
    if model.get("random_weights"):
        # A CSV outlives the warning printed when it was made.
        label += " (random weights: not a geolocation)"
    return label


def scan_record(
    geo: Any,
    *,
    top_k: int,
    search: str | None = None,
    beam: int | None = None,
    llm: str | None = None,
    raw_candidates: bool = False,
) -> dict[str, Any]:
    """The ``model`` record of a scan's output: the model (:func:`geoguess.model.model_record`)
    and every setting that makes rows differ, so that a resumed output refuses rows made
    another way (:func:`check_made_alike`)."""
    from .model import model_record

    return {
        **model_record(geo),
        "top_k": top_k,
        "search": search,
        "beam": beam,
        "llm": llm,
        "candidates": "raw" if raw_candidates else "merged",
    }


def settings_label(model: Mapping[str, Any] | None) -> str:
    """The settings that shaped a row besides model and precision, as ``key=value``
    pairs in key order (``gallery=mp16 search=auto top_k=5``); how a resumed output
    tells rows made another way."""
    if not model:
        return ""
    pairs = [(k, v) for k, v in sorted(model.items()) if k not in _MODEL_KEYS]
    return " ".join(f"{k}={'' if v is None else v}" for k, v in pairs)


def _made_with(model: Mapping[str, Any] | None) -> str:
    """Model, precision and settings in one line, for comparing and for messages."""
    if not model:
        return ""
    return " ".join(
        x
        for x in (f"{model.get('name', '')}/{model.get('precision', '')}", settings_label(model))
        if x
    )


def check_made_alike(
    path: str | os.PathLike[str], made: Collection[str], model: Mapping[str, Any] | None
) -> None:
    """UsageError when an output's rows were ``made`` (:func:`_made_with` labels) other
    than this run's ``model`` would make them: a resumed output (a file, or a folder of
    shards in :mod:`geoguess.scan_shards`) never mixes rows made differently."""
    if model is None or not made:
        return
    wanted = _made_with(model)
    other = sorted(m for m in made if m != wanted)
    if other:
        raise UsageError(
            f"{path}: its rows were made with {other[0]!r}, this run would make "
            f"them with {wanted!r}; run with the same options to resume, or choose "
            "another --output, or --overwrite to start afresh"
        )


def _one_line(text: str) -> str:
    # Keeps one row per physical line, which is what torn-row detection relies on.
    return text.replace("\r", " ").replace("\n", " ")


def csv_row(result: LocateResult, *, model: Mapping[str, Any] | None = None) -> dict[str, str]:
    """One CSV row (column -> text) for a result."""
    row = dict.fromkeys(CSV_COLUMNS, "")
    row["path"] = result.file
    best = result.best
    if best is not None:
        p = best.prediction
        row["lat"] = f"{p.lat:.6f}"
        row["lon"] = f"{p.lon:.6f}"
        row["probability"] = f"{p.probability:.6g}"
        if best.place is not None:
            row["place"] = best.place.name
            row["admin1"] = best.place.admin1 or ""
            row["country"] = best.place.country
            row["country_code"] = best.place.country_code
        row["top_k"] = format_top_k(result)
    for level, radius in result.spread_km.items():
        key = f"spread_p{round(level * 100)}_km"
        if key in row:
            row[key] = f"{radius:.1f}"
    gps = result.exif_gps
    if gps is not None:
        row["exif_lat"] = f"{gps[0]:.6f}"
        row["exif_lon"] = f"{gps[1]:.6f}"
    md = result.metadata
    if md is not None:
        row["exif_gps_status"] = md.gps_status
        row["taken_at"] = md.taken_at or ""
        row["camera"] = md.camera or ""
    err = result.exif_error_km
    if err is not None:
        row["error_km"] = f"{err:.1f}"
    row["model"] = model_label(model)
    row["settings"] = settings_label(model)
    row["confidence"] = result.confidence or ""
    from .areas import format_shares

    row["countries"] = format_shares(result.countries, sep="; ")
    row["regions"] = format_shares(result.regions, sep="; ")
    if best is not None:
        row["label"] = best.label or ""
    row["error"] = result.error or ""
    refined = result.llm.best if result.llm is not None else None
    if refined is not None:
        from .places import describe

        row["llm_lat"] = f"{refined.lat:.6f}"
        row["llm_lon"] = f"{refined.lon:.6f}"
        row["llm_place"] = describe(refined.place) if refined.place else ""
        row["llm_source"] = refined.source_label
        row["llm_model"] = result.llm.model
    return {k: v if k == "path" else _one_line(v) for k, v in row.items()}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _lock(fd: int, path: Path) -> None:
    """Refuse a second scan appending to the same file at the same time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows has no fcntl; no lock there
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise UsageError(f"{path}: another geoguess scan is writing this file") from None


class ScanWriter:
    """Base of the row writers: the file (or stdout), resume state, one write per row.

    ``path`` None writes to stdout (no resume). Otherwise the file is created, or
    reopened for resume: ``done`` then holds the paths it already has and
    ``dropped_partial`` the number of bytes of a torn last row that were cut away.
    ``overwrite`` starts the file afresh instead.

    ``failed`` holds the paths whose row is an error. With ``retry_failed`` those rows
    are taken out of the file (rewritten in one step) and the paths left out of
    ``done``, so that the scan does them again. A file whose rows were made with
    another model, precision or settings (``model``) is refused rather than appended
    to with rows made differently. Raises UsageError naming the path when the file
    cannot be opened, is not an output of this kind, or was made differently.
    """

    format = ""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.model = dict(model) if model else None
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.retried = 0
        self.dropped_partial = 0
        # Spans (start, end, path, failed) of the complete rows found, and what made them.
        self._rows: list[tuple[int, int, str, bool]] = []
        self._made: set[str] = set()
        self.rows_written = 0
        self._fd: int | None = None
        if self.path is None:
            self._start(b"")
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write: {os_reason(exc)}") from None
        try:
            _lock(fd, self.path)
            if overwrite:
                os.ftruncate(fd, 0)
                existing = b""
            else:
                existing = _read_all(fd)
            keep = self._resume(existing)
            self._check_made_alike()
            if keep < len(existing):
                os.ftruncate(fd, keep)
                self.dropped_partial = len(existing) - keep
            if retry_failed and self.failed:
                fd, existing, keep = self._drop_failed(fd, existing[:keep])
            os.lseek(fd, 0, os.SEEK_END)
            self._fd = fd
            self._start(existing[:keep])
        except OSError as exc:
            os.close(fd)
            raise UsageError(f"{self.path}: cannot write: {os_reason(exc)}") from None
        except BaseException:
            os.close(fd)
            raise

    # subclasses: parse what is there (call _found per row, return bytes to keep), start,
    # and format a row
    def _resume(self, data: bytes) -> int:
        raise NotImplementedError

    def _found(self, start: int, end: int, path: str, error: str, made: str | None) -> None:
        self._rows.append((start, end, path, bool(error)))
        self.done.add(path)
        if error:
            self.failed.add(path)
        else:
            self.failed.discard(path)  # a retried photo: its later row counts
        if made is not None:
            self._made.add(made)

    def _check_made_alike(self) -> None:
        if self.path is not None:
            check_made_alike(self.path, self._made, self.model)

    def _drop_failed(self, fd: int, data: bytes) -> tuple[int, bytes, int]:
        """Rewrite the file without its error rows, in one step; the new fd and data."""
        from .atomic import write_file

        assert self.path is not None
        first = self._rows[0][0] if self._rows else len(data)
        kept = self._rejoin(data[:first], [data[a:b] for a, b, _, bad in self._rows if not bad])
        write_file(self.path, kept)
        new_fd = os.open(self.path, os.O_RDWR)
        try:
            _lock(new_fd, self.path)
        except BaseException:
            os.close(new_fd)
            raise
        os.close(fd)
        self.retried = len(self.failed)
        self.done -= self.failed
        self.failed = set()
        self._rows = [r for r in self._rows if not r[3]]
        return new_fd, kept, len(kept)

    def _start(self, kept: bytes) -> None:
        pass

    def _rejoin(self, head: bytes, rows: list[bytes]) -> bytes:
        """The file made of ``head`` (what precedes the rows) and these rows."""
        return head + b"".join(rows)

    def _line(self, result: LocateResult) -> str:
        raise NotImplementedError

    def _emit(self, text: str) -> None:
        data = text.encode(_ENCODING, _ERRORS)
        if self._fd is not None:
            _write_all(self._fd, data)
        else:
            out = sys.stdout.buffer
            out.write(data)
            out.flush()

    def write(self, result: LocateResult) -> None:
        """Append one result as one complete line."""
        self._emit(self._line(result))
        self.done.add(result.file)
        self.rows_written += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None

    def __enter__(self) -> ScanWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _not_ours(self, why: str) -> UsageError:
        return UsageError(
            f"{self.path}: {why}; not a geoguess scan {self.format.upper()} "
            "(choose another --output, or --overwrite to replace it)"
        )


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _complete_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(end offset, line) for each newline-terminated line; a torn tail is left out."""
    start = 0
    while (nl := data.find(b"\n", start)) >= 0:
        yield nl + 1, data[start : nl + 1]
        start = nl + 1


class CsvWriter(ScanWriter):
    """CSV with a header row; see :data:`CSV_COLUMNS` and :func:`csv_row`.

    A resumed file keeps its own header (e.g. from an older version): rows are
    written with those columns, new ones left out.
    """

    format = "csv"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self.columns: list[str] = list(CSV_COLUMNS)
        super().__init__(path, model=model, overwrite=overwrite, retry_failed=retry_failed)

    def _resume(self, data: bytes) -> int:
        lines = list(_complete_lines(data))
        if not lines:
            return 0
        ends = [end for end, _ in lines]

        def texts() -> Iterator[str]:
            for _, line in lines:
                yield line.decode(_ENCODING, _ERRORS)

        reader = csv.reader(texts(), strict=True)
        keep = 0
        header: list[str] | None = None
        try:
            for record in reader:
                end = ends[reader.line_num - 1]
                if header is None:
                    header = record
                    if "path" not in header:
                        raise self._not_ours("no 'path' column in its first line")
                elif len(record) != len(header):
                    # Only a torn last row may be malformed; anything earlier is not ours.
                    if end != ends[-1]:
                        raise self._not_ours(f"line {reader.line_num} has the wrong columns")
                    break
                else:
                    self._found(keep, end, *self._fields(header, record))
                keep = end
        except csv.Error:
            # Only a quoted field cut off by the end of the data (a torn last row) is
            # expected; bad quoting anywhere else means someone else's file.
            if header is None or reader.line_num < len(lines):
                raise self._not_ours(f"line {reader.line_num} is not valid CSV") from None
        if header is not None:
            self.columns = header
        return keep

    @staticmethod
    def _fields(header: list[str], record: list[str]) -> tuple[str, str, str | None]:
        value = dict(zip(header, record))
        made = None
        if value.get("model"):
            # "name/precision (random weights: ...)": the label without its note.
            made = " ".join(
                x for x in (value["model"].split(" (")[0], value.get("settings", "")) if x
            )
            if "settings" not in header:
                made = None  # written before settings were recorded: nothing to compare
        return value["path"], value.get("error", ""), made

    def _start(self, kept: bytes) -> None:
        if not kept:
            self._emit(self._format(self.columns))

    @staticmethod
    def _format(values: list[str]) -> str:
        buf = io.StringIO()
        # The csv module quotes a field holding a character of the line terminator: with
        # "\n" alone, a carriage return in a file name went out unquoted and readers
        # split the row there. Written with "\r\n" so that both are quoted, and the row
        # then ends with "\n" as every row of these files does.
        csv.writer(buf, lineterminator="\r\n").writerow(values)
        return buf.getvalue()[:-2] + "\n"

    def _line(self, result: LocateResult) -> str:
        row = csv_row(result, model=self.model)
        return self._format([row.get(c, "") for c in self.columns])


class JsonlWriter(ScanWriter):
    """One JSON object a line: ``LocateResult.to_dict()`` (as ``geoguess --json``)."""

    format = "jsonl"

    def _resume(self, data: bytes) -> int:
        lines = list(_complete_lines(data))
        keep = 0
        for n, (end, line) in enumerate(lines, 1):
            if not line.strip():
                keep = end
                continue
            try:
                record = json.loads(line.decode(_ENCODING, _ERRORS))
            except ValueError:
                if n == len(lines):
                    break  # a torn last row that happens to end in a newline
                raise self._not_ours(f"line {n} is not JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("file"), str):
                raise self._not_ours(f"line {n} has no 'file'")
            model = record.get("model")
            made = _made_with(model) if isinstance(model, dict) else None
            self._found(keep, end, record["file"], record.get("error") or "", made)
            keep = end
        return keep

    def _line(self, result: LocateResult) -> str:
        from .output import json_line

        record = result.to_dict()
        if self.model is not None:
            record["model"] = self.model
        return json_line(record) + "\n"


_GEOJSON_HEADER = b'{"type": "FeatureCollection", "features": [\n'
_GEOJSON_FOOTER = b"]}\n"


class GeojsonWriter(ScanWriter):
    """A GeoJSON FeatureCollection, one Feature per photo (:func:`geoguess.geojson.scan_feature`).

    One Feature a line, so that it can be resumed like the other formats: each row is
    written over the closing ``]}`` together with a new one, in one write, so the file
    is a valid FeatureCollection whenever no write is under way. A file is only written
    whole to stdout at the end of the run.
    """

    format = "geojson"
    _footer_due = False

    def _resume(self, data: bytes) -> int:
        if not data:
            return 0
        if not data.startswith(_GEOJSON_HEADER):
            raise self._not_ours("it does not start as a geoguess FeatureCollection")
        base = len(_GEOJSON_HEADER)
        keep = base
        lines = list(_complete_lines(data[base:]))
        for n, (end, line) in enumerate(lines, 1):
            text = line.decode(_ENCODING, _ERRORS)
            if text.rstrip("\n") == _GEOJSON_FOOTER.decode().rstrip("\n"):
                break
            try:
                feature = json.loads(text[1:] if text.startswith(",") else text)
                props = feature["properties"]
                file = props["file"]
            except (ValueError, KeyError, TypeError):
                if n == len(lines):
                    break  # a torn last row
                raise self._not_ours(f"line {n + 1} is not a Feature of a photo") from None
            model = props.get("model")
            made = _made_with(model) if isinstance(model, dict) else None
            self._found(keep, base + end, file, props.get("error") or "", made)
            keep = base + end
        return keep

    def _start(self, kept: bytes) -> None:
        self._count = len(self._rows)
        self._footer_due = self._fd is None  # stdout: the closing bracket comes at close()
        if self._fd is None:
            self._raw(_GEOJSON_HEADER)
        else:
            self._raw(_GEOJSON_FOOTER if kept else _GEOJSON_HEADER + _GEOJSON_FOOTER)

    def _rejoin(self, head: bytes, rows: list[bytes]) -> bytes:
        bare = [r[1:] if r.startswith(b",") else r for r in rows]
        return head + b",".join(bare)

    def _raw(self, data: bytes) -> None:
        if self._fd is not None:
            _write_all(self._fd, data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def _emit(self, text: str) -> None:
        data = text.encode(_ENCODING, _ERRORS)
        if self._fd is not None:
            # Over the closing bracket, and the bracket again: one write.
            os.lseek(self._fd, -len(_GEOJSON_FOOTER), os.SEEK_END)
            _write_all(self._fd, data + _GEOJSON_FOOTER)
        else:
            self._raw(data)

    def _line(self, result: LocateResult) -> str:
        from .geojson import scan_feature
        from .output import json_line

        record = result.to_dict()
        if self.model is not None:
            record["model"] = self.model
        sep = "," if self._count else ""
        self._count += 1
        return sep + json_line(scan_feature(record)) + "\n"

    def close(self) -> None:
        if self._footer_due:
            self._footer_due = False
            self._raw(_GEOJSON_FOOTER)
        super().close()


def open_writer(
    path: str | os.PathLike[str] | None,
    fmt: str | None = None,
    *,
    model: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
) -> ScanWriter:
    """A CSV or JSONL writer for ``path`` (None or '-' for stdout), resuming by default."""
    if path is not None and os.fspath(path) == "-":
        path = None
    cls = {"jsonl": JsonlWriter, "geojson": GeojsonWriter}.get(output_format(path, fmt), CsvWriter)
    return cls(path, model=model, overwrite=overwrite, retry_failed=retry_failed)
