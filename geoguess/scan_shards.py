"""Scan output as a folder of shards, for runs too large for one file.

``geoguess scan DIR -o OUTDIR/`` writes ``OUTDIR/part-00000.csv``, ``part-00001.csv``,
... (or ``.jsonl``, ``.parquet``), each holding up to ``shard_size`` rows: the rows and
columns of the single-file output (:func:`~geoguess.scan_output.csv_row`, the JSON
Lines record; Parquet: the CSV columns as string columns). Rows are buffered in the
driver and each shard is written whole under a temporary name and renamed into place
(:func:`geoguess.atomic.write_file`), so a shard on disk is always complete and a
reader never sees half of one.

Resume is by shard, since Ray Data has none of its own: a rerun reads the paths of the
shards present and skips them, and numbers its new shards after the last. A temporary
file left by a killed run is not a shard (its name starts with ``.tmp-``): it is
ignored, and swept once stale (:func:`geoguess.atomic.sweep`). What a SIGKILL or power
loss can lose is the rows buffered since the last shard, at most ``shard_size`` rows,
which the rerun then locates again; nothing is ever written twice. ``_geoguess.json``
(the settings record and format, written first) makes a rerun with other settings a
UsageError, through the same check as a resumed single file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import atomic
from .errors import SetupError, UsageError, os_reason
from .scan_output import (
    CSV_COLUMNS,
    CsvWriter,
    _lock,
    _made_with,
    check_made_alike,
    csv_row,
    open_writer,
)

if TYPE_CHECKING:
    from .locate import LocateResult

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "SHARD_FORMATS",
    "ShardWriter",
    "is_shard_folder",
    "open_output",
]

#: Rows per shard. A CSV row is about 700 bytes, so a shard is about 7 MB and a million
#: photos make 100 files, few enough for any file system or object-store listing; at
#: the ~40 photos/s measured on two cores (docs/ray.md) a shard is written every four
#: minutes, sooner on a cluster, which bounds what a SIGKILL of the driver loses.
DEFAULT_SHARD_SIZE = 10_000

SHARD_FORMATS = ("csv", "jsonl", "parquet")
SETTINGS_FILE = "_geoguess.json"
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # as the single-file writers: odd file names kept byte for byte
_SHARD = re.compile(r"part-(\d{5,})\.(csv|jsonl|parquet)")


def is_shard_folder(output: str | os.PathLike[str] | None) -> bool:
    """Whether ``-o`` names a folder of shards: it ends with a slash or is a folder."""
    if output is None:
        return False
    text = os.fspath(output)
    if text == "-":
        return False
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def shard_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The shards in a scan's output folder, in the order they were written."""
    found = [p for p in Path(folder).iterdir() if _SHARD.fullmatch(p.name)]
    return sorted(found, key=_number)


def read_parquet_rows(path: Path) -> list[dict[str, str]]:
    """A Parquet shard's rows as CSV-like dicts (its columns are the CSV's)."""
    return _pyarrow().parquet.read_table(path).to_pylist()


@dataclass
class _Shard:
    path: Path
    # (path, error) of each row, and the format's own rows, to rewrite it without some.
    rows: list[tuple[str, bool]] = field(default_factory=list)
    raw: Any = None
    header: list[str] | None = None


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise SetupError(
            "Parquet shards need pyarrow: pip install pyarrow (it comes with 'geoguess[ray]')"
        ) from None
    return pyarrow


class ShardWriter:
    """The :class:`~geoguess.scan_output.ScanWriter` interface (``write``, ``done``,
    ``failed``, ``retried``, ``close``) over a folder of shards; see the module.

    ``overwrite`` deletes this folder's shards and settings first (nothing else in it).
    ``retry_failed`` rewrites each shard holding error rows without them (atomically;
    a shard left empty is deleted) and leaves those paths out of ``done``, so that the
    scan does them again and no path has two rows. Raises UsageError when the folder
    cannot be written, another scan is writing it, or its shards were made with other
    settings or in another format.
    """

    dropped_partial = 0  # shards are never torn: nothing to drop

    def __init__(
        self,
        folder: str | os.PathLike[str],
        fmt: str | None = None,
        *,
        model: Mapping[str, Any] | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        overwrite: bool = False,
        retry_failed: bool = False,
    ) -> None:
        fmt = (fmt or "csv").lower()
        if fmt not in SHARD_FORMATS:
            raise UsageError(f"a folder of shards is csv, jsonl or parquet, not {fmt!r} (--format)")
        if shard_size < 1:
            raise UsageError(f"--shard-size must be at least 1, got {shard_size}")
        if fmt == "parquet":
            _pyarrow()  # before the scan starts, not at its first shard
        self.folder = Path(folder)
        self.format = fmt
        self.model = dict(model) if model else None
        self.shard_size = shard_size
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.retried = 0
        self.rows_written = 0
        self.shards_written = 0
        self._buffer: list[LocateResult] = []
        self._fd: int | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"{self.folder}: cannot write: {os_reason(exc)}") from None
        try:
            # The same lock as a single file's, on the folder: two scans appending shards
            # to one folder would number them alike.
            _lock(fd, self.folder)
            atomic.sweep(self.folder)
            if overwrite:
                self._clear()
            self._check_settings()
            shards = self._read_shards()
            if retry_failed and self.failed:
                self._drop_failed(shards)
            self._next = max((_number(s.path) for s in shards), default=-1) + 1
            atomic.write_file(self.folder / SETTINGS_FILE, self._settings_text())
        except OSError as exc:
            os.close(fd)
            raise UsageError(f"{self.folder}: cannot write: {os_reason(exc)}") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    # --- resume ---------------------------------------------------------------------

    def _shard_paths(self) -> list[Path]:
        return shard_files(self.folder)

    def _clear(self) -> None:
        for path in [*self._shard_paths(), self.folder / SETTINGS_FILE]:
            if path.exists():
                atomic.discard(path)

    def _settings_text(self) -> str:
        record = {"format": self.format, "model": self.model}
        return json.dumps(record, indent=2, sort_keys=True) + "\n"

    def _check_settings(self) -> None:
        path = self.folder / SETTINGS_FILE
        try:
            record = json.loads(path.read_text(encoding=_ENCODING))
        except FileNotFoundError:
            if self._shard_paths():
                raise UsageError(
                    f"{self.folder}: has shards but no {SETTINGS_FILE}; not a geoguess "
                    "scan folder (choose another --output, or --overwrite)"
                ) from None
            return
        except ValueError:
            raise UsageError(
                f"{path}: not valid JSON; choose another --output, or --overwrite"
            ) from None
        if record.get("format") != self.format:
            raise UsageError(
                f"{self.folder}: its shards are {record.get('format')!r}, this run would "
                f"write {self.format!r}; use the same --format, or --overwrite"
            )
        model = record.get("model")
        made = {_made_with(model)} if isinstance(model, dict) else set()
        check_made_alike(self.folder, made, self.model)

    def _read_shards(self) -> list[_Shard]:
        shards = []
        for path in self._shard_paths():
            if path.suffix[1:] != self.format:
                raise UsageError(
                    f"{path}: a {path.suffix[1:]} shard in a folder of {self.format} "
                    "shards; remove it, or --overwrite"
                )
            shard = self._read(path)
            for file, bad in shard.rows:
                self.done.add(file)
                if bad:
                    self.failed.add(file)
                else:
                    self.failed.discard(file)
            shards.append(shard)
        return shards

    def _read(self, path: Path) -> _Shard:
        shard = _Shard(path)
        try:
            if self.format == "parquet":
                pq = _pyarrow().parquet
                table = pq.read_table(path)
                shard.raw = table
                paths = table.column("path").to_pylist()
                errors = table.column("error").to_pylist()
                shard.rows = [(p, bool(e)) for p, e in zip(paths, errors)]
            elif self.format == "csv":
                text = path.read_text(encoding=_ENCODING, errors=_ERRORS)
                records = list(csv.reader(io.StringIO(text, newline="")))
                shard.header, shard.raw = records[0], records[1:]
                at = {c: i for i, c in enumerate(shard.header)}
                shard.rows = [(r[at["path"]], bool(r[at["error"]])) for r in shard.raw]
            else:
                lines = path.read_bytes().splitlines(keepends=True)
                shard.raw = lines
                for line in lines:
                    record = json.loads(line.decode(_ENCODING, _ERRORS))
                    shard.rows.append((record["file"], bool(record.get("error"))))
        except OSError:
            raise
        except Exception as exc:  # csv, json, pyarrow: each raises its own kind
            raise UsageError(
                f"{path}: not a geoguess {self.format} shard ({type(exc).__name__}: {exc}); "
                "remove it, or --overwrite"
            ) from None
        return shard

    def _drop_failed(self, shards: list[_Shard]) -> None:
        """Each shard with error rows rewritten without them, in one step each. A kill
        between two shards leaves some rewritten and some not: the rerun retries what
        is still an error row, so no path ends with two rows."""
        for shard in shards:
            keep = [i for i, (_, bad) in enumerate(shard.rows) if not bad]
            if len(keep) == len(shard.rows):
                continue
            if not keep:
                atomic.discard(shard.path)
                continue
            if self.format == "parquet":
                data = self._parquet_bytes(shard.raw.take(keep))
            elif self.format == "csv":
                assert shard.header is not None
                data = "".join(
                    CsvWriter._format(r) for r in [shard.header] + [shard.raw[i] for i in keep]
                )
                data = data.encode(_ENCODING, _ERRORS)
            else:
                data = b"".join(shard.raw[i] for i in keep)
            atomic.write_file(shard.path, data)
        self.retried = len(self.failed)
        self.done -= self.failed
        self.failed = set()

    # --- writing --------------------------------------------------------------------

    def write(self, result: LocateResult) -> None:
        """Buffer one result; a shard is written every ``shard_size`` of them."""
        self._buffer.append(result)
        self.done.add(result.file)
        self.rows_written += 1
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as the next shard (nothing when nothing is)."""
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        path = self.folder / f"part-{self._next:05d}.{self.format}"
        try:
            atomic.write_file(path, self._encode(rows))
        except OSError as exc:
            self._buffer = rows + self._buffer  # kept, for a retry at close
            raise UsageError(f"{path}: cannot write: {os_reason(exc)}") from None
        self._next += 1
        self.shards_written += 1

    def _encode(self, results: list[LocateResult]) -> bytes:
        if self.format == "parquet":
            columns = {c: [] for c in CSV_COLUMNS}
            for result in results:
                for key, value in csv_row(result, model=self.model).items():
                    columns[key].append(value)
            pa = _pyarrow()
            schema = pa.schema([(c, pa.string()) for c in CSV_COLUMNS])
            return self._parquet_bytes(pa.table(columns, schema=schema))
        if self.format == "csv":
            lines = [CsvWriter._format(list(CSV_COLUMNS))]
            for result in results:
                row = csv_row(result, model=self.model)
                lines.append(CsvWriter._format([row[c] for c in CSV_COLUMNS]))
            return "".join(lines).encode(_ENCODING, _ERRORS)
        from .output import json_line

        out = []
        for result in results:
            # As JsonlWriter's rows: the result's dict with the settings record.
            record = result.to_dict()
            if self.model is not None:
                record["model"] = self.model
            out.append(json_line(record) + "\n")
        return "".join(out).encode(_ENCODING, _ERRORS)

    @staticmethod
    def _parquet_bytes(table: Any) -> bytes:
        pa = _pyarrow()
        sink = pa.BufferOutputStream()
        pa.parquet.write_table(table, sink)
        return sink.getvalue().to_pybytes()

    def close(self) -> None:
        """Write the rows still buffered (also after Ctrl-C), then release the lock."""
        try:
            self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _number(path: Path) -> int:
    found = _SHARD.fullmatch(path.name)
    assert found is not None
    return int(found.group(1))


def open_output(
    output: str | os.PathLike[str] | None,
    fmt: str | None = None,
    *,
    model: Mapping[str, Any] | None = None,
    shard_size: int | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
) -> Any:
    """The writer of a scan's output: a folder of shards when ``output`` ends in ``/``
    (:class:`ShardWriter`), else one CSV, JSON Lines or GeoJSON file, or stdout for None
    or ``-`` (:func:`geoguess.scan_output.open_writer`). Both resume by default."""
    if is_shard_folder(output):
        return ShardWriter(
            output,  # type: ignore[arg-type]
            fmt,
            model=model,
            shard_size=shard_size or DEFAULT_SHARD_SIZE,
            overwrite=overwrite,
            retry_failed=retry_failed,
        )
    if shard_size is not None:
        raise UsageError("--shard-size goes with a folder -o (one ending in '/')")
    return open_writer(output, fmt, model=model, overwrite=overwrite, retry_failed=retry_failed)
