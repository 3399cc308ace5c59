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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .locate import LocateResult

__all__ = [
    "CSV_COLUMNS",
    "CsvWriter",
    "JsonlWriter",
    "ScanWriter",
    "csv_row",
    "format_top_k",
    "open_writer",
    "output_format",
]

FORMATS = ("csv", "jsonl")
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
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
)


def output_format(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str:
    """``fmt`` when given, else ``jsonl`` for .jsonl/.ndjson/.json files, else ``csv``."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r} (choose csv or jsonl)")
        return fmt
    if path is not None and Path(path).suffix.lower() in _JSONL_SUFFIXES:
        return "jsonl"
    return "csv"


def format_top_k(result: LocateResult) -> str:
    """The candidates as ``lat,lon,prob;lat,lon,prob;...``, best first."""
    return ";".join(
        f"{c.prediction.lat:.5f},{c.prediction.lon:.5f},{c.prediction.probability:.4g}"
        for c in result.candidates
    )


def _model_label(model: Mapping[str, Any] | None) -> str:
    if not model:
        return ""
    label = f"{model.get('name', '')}/{model.get('precision', '')}"
    if model.get("random_weights"):
        # A CSV outlives the warning printed when it was made.
        label += " (random weights: not a geolocation)"
    return label


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
    row["model"] = _model_label(model)
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


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


class ScanWriter:
    """Base of the row writers: the file (or stdout), resume state, one write per row.

    ``path`` None writes to stdout (no resume). Otherwise the file is created, or
    reopened for resume: ``done`` then holds the paths it already has and
    ``dropped_partial`` the number of bytes of a torn last row that were cut away.
    ``overwrite`` starts the file afresh instead. Raises UsageError naming the path
    when the file cannot be opened or is not an output of this kind.
    """

    format = ""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.model = dict(model) if model else None
        self.done: set[str] = set()
        self.dropped_partial = 0
        self.rows_written = 0
        self._fd: int | None = None
        if self.path is None:
            self._start(b"")
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write: {_os_reason(exc)}") from None
        try:
            _lock(fd, self.path)
            if overwrite:
                os.ftruncate(fd, 0)
                existing = b""
            else:
                existing = _read_all(fd)
            keep = self._resume(existing)
            if keep < len(existing):
                os.ftruncate(fd, keep)
                self.dropped_partial = len(existing) - keep
            os.lseek(fd, 0, os.SEEK_END)
            self._fd = fd
            self._start(existing[:keep])
        except OSError as exc:
            os.close(fd)
            raise UsageError(f"{self.path}: cannot write: {_os_reason(exc)}") from None
        except BaseException:
            os.close(fd)
            raise

    # subclasses: parse what is there (fill ``done``, return bytes to keep), start, row
    def _resume(self, data: bytes) -> int:
        raise NotImplementedError

    def _start(self, kept: bytes) -> None:
        pass

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
    ) -> None:
        self.columns: list[str] = list(CSV_COLUMNS)
        super().__init__(path, model=model, overwrite=overwrite)

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
                    self.done.add(record[header.index("path")])
                keep = end
        except csv.Error:
            # Only a quoted field cut off by the end of the data (a torn last row) is
            # expected; bad quoting anywhere else means someone else's file.
            if header is None or reader.line_num < len(lines):
                raise self._not_ours(f"line {reader.line_num} is not valid CSV") from None
        if header is not None:
            self.columns = header
        return keep

    def _start(self, kept: bytes) -> None:
        if not kept:
            self._emit(self._format(self.columns))

    @staticmethod
    def _format(values: list[str]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue()

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
            self.done.add(record["file"])
            keep = end
        return keep

    def _line(self, result: LocateResult) -> str:
        from .output import json_line

        record = result.to_dict()
        if self.model is not None:
            record["model"] = self.model
        return json_line(record) + "\n"


def open_writer(
    path: str | os.PathLike[str] | None,
    fmt: str | None = None,
    *,
    model: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> ScanWriter:
    """A CSV or JSONL writer for ``path`` (None or '-' for stdout), resuming by default."""
    if path is not None and os.fspath(path) == "-":
        path = None
    cls = JsonlWriter if output_format(path, fmt) == "jsonl" else CsvWriter
    return cls(path, model=model, overwrite=overwrite)
