"""Accuracy on a benchmark with known coordinates (IM2GPS3K, YFCC4K and alike).

The protocol is the published one: the top-1 prediction per image, its WGS-84
geodesic distance to the true position, and the share of images within 1, 25, 200,
750 and 2500 km (street, city, region, country, continent). An image counts at a
threshold when its error is **<=** the threshold, GeoCLIP's convention; G3 counts
``<``, available as ``strict_less``. Images that are missing or cannot be decoded
are excluded from the metrics and counted separately, never scored as failures.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import UsageError
from .images import SUPPORTED_SUFFIXES
from .reporting import Reporter

if TYPE_CHECKING:
    from .model import GeoModel

__all__ = [
    "SCALES",
    "THRESHOLDS_KM",
    "EvalMetrics",
    "EvalPrediction",
    "EvalReport",
    "EvalSample",
    "EvalSet",
    "PredictionsWriter",
    "accuracy_at",
    "check_latlon",
    "evaluate",
    "predict_samples",
    "read_eval_csv",
    "score",
]

THRESHOLDS_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)
SCALES = {1.0: "street", 25.0: "city", 200.0: "region", 750.0: "country", 2500.0: "continent"}

# Swap check: real photo positions lie near towns, while the same numbers read the
# wrong way round mostly land in oceans or deserts. Given positions this far (median)
# from the nearest town, and twice as far as with LAT/LON swapped, look swapped.
_SWAP_MIN_MEDIAN_KM = 50.0
_SWAP_RATIO = 2.0
_SWAP_SAMPLE = 500  # rows checked; enough for a stable median, fast on any file

Status = Literal["ok", "missing", "failed"]


@dataclass(frozen=True)
class EvalSample:
    """One benchmark row: image id, true position, and the file (None when missing)."""

    id: str
    lat: float
    lon: float
    path: Path | None


@dataclass
class EvalSet:
    samples: list[EvalSample]
    bad_rows: list[str] = field(default_factory=list)  # "line N: problem"
    swap_warning: str | None = None

    @property
    def missing(self) -> list[EvalSample]:
        return [s for s in self.samples if s.path is None]


@dataclass(frozen=True)
class EvalPrediction:
    sample: EvalSample
    status: Status
    lat: float | None = None
    lon: float | None = None
    probability: float | None = None
    error_km: float | None = None  # geodesic distance prediction -> truth
    error: str | None = None  # why there is no prediction


@dataclass
class EvalMetrics:
    thresholds_km: tuple[float, ...]
    correct: dict[float, int]
    n_evaluated: int
    median_km: float | None
    mean_km: float | None
    strict_less: bool = False
    n_missing: int = 0
    n_failed: int = 0
    n_bad_rows: int = 0

    @property
    def accuracy(self) -> dict[float, float | None]:
        """Share (0..1) of evaluated images within each threshold; None when none."""
        n = self.n_evaluated
        return {t: (c / n if n else None) for t, c in self.correct.items()}

    @property
    def comparison(self) -> str:
        return "<" if self.strict_less else "<="

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_evaluated": self.n_evaluated,
            "n_missing": self.n_missing,
            "n_failed": self.n_failed,
            "n_bad_rows": self.n_bad_rows,
            "distance": "WGS-84 geodesic",
            "comparison": self.comparison,
            "thresholds_km": list(self.thresholds_km),
            "accuracy": {_km_key(t): a for t, a in self.accuracy.items()},
            "correct": {_km_key(t): c for t, c in self.correct.items()},
            "median_km": self.median_km,
            "mean_km": self.mean_km,
        }


@dataclass
class EvalReport:
    metrics: EvalMetrics
    predictions: list[EvalPrediction]


def _km_key(t: float) -> str:
    return f"{t:g}"


# --- reading the benchmark ------------------------------------------------------------


def _find_image(images_dir: Path, image_id: str) -> Path | None:
    path = images_dir / image_id
    if path.is_file():
        return path
    if not Path(image_id).suffix:
        # Some benchmark CSVs list ids without the file extension.
        for suffix in sorted(SUPPORTED_SUFFIXES):
            for candidate in (
                path.with_name(path.name + suffix),
                path.with_name(path.name + suffix.upper()),
            ):
                if candidate.is_file():
                    return candidate
    return None


def _coordinate(text: str | None, what: str) -> float:
    try:
        value = float((text or "").strip())
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not finite")
    return value


def read_eval_csv(
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    id_column: str = "IMG_ID",
    lat_column: str = "LAT",
    lon_column: str = "LON",
    limit: int | None = None,
    swap_latlon: bool = False,
    check_swap: bool = True,
) -> EvalSet:
    """Read a benchmark CSV and find its images under ``images_dir``.

    The first ``limit`` data rows are used. Rows with an empty id or coordinates that
    are not numbers, or a latitude outside [-90, 90], go to ``bad_rows``. An image
    that is not found gets ``path`` None (counted as missing). ``swap_latlon`` reads
    the LAT column as longitude and the LON column as latitude. ``swap_warning`` says
    when the coordinates as read look swapped (see :func:`check_latlon`). Raises
    UsageError naming the file or folder when it cannot be read, or when a column is
    not in the header.
    """
    csv_path = Path(csv_path)
    images = Path(images_dir)
    if not images.is_dir():
        raise UsageError(f"{images}: {'not a folder' if images.exists() else 'does not exist'}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    try:
        f = open(csv_path, newline="", encoding="utf-8-sig")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"{csv_path}: cannot read: {(exc.strerror or str(exc)).lower()}") from None
    samples: list[EvalSample] = []
    bad: list[str] = []
    rows: list[tuple[int, str, float, float]] = []
    with f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for col in (id_column, lat_column, lon_column):
            if col not in header:
                have = ", ".join(header) if header else "no header"
                raise UsageError(f"{csv_path}: no column {col!r} (columns: {have})")
        try:
            for n, row in enumerate(reader):
                if limit is not None and n >= limit:
                    break
                line = reader.line_num
                image_id = (row.get(id_column) or "").strip()
                try:
                    if not image_id:
                        raise ValueError(f"empty {id_column}")
                    a = _coordinate(row.get(lat_column), lat_column)
                    b = _coordinate(row.get(lon_column), lon_column)
                except ValueError as exc:
                    bad.append(f"line {line}: {exc}")
                    continue
                rows.append((line, image_id, *((b, a) if swap_latlon else (a, b))))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{csv_path}: line {reader.line_num}: {exc}") from None
    if not rows and not bad:
        raise UsageError(f"{csv_path}: no data rows")
    warning = None
    if check_swap and rows:
        warning = check_latlon([r[2] for r in rows], [r[3] for r in rows], swapped=swap_latlon)
    for line, image_id, lat, lon in rows:
        if abs(lat) > 90.0:
            bad.append(f"line {line}: latitude {lat:g} is outside [-90, 90]")
            continue
        samples.append(EvalSample(image_id, lat, lon, _find_image(images, image_id)))
    return EvalSet(samples, bad, warning)


def check_latlon(
    lats: Sequence[float], lons: Sequence[float], *, swapped: bool = False
) -> str | None:
    """A warning when latitude and longitude look swapped, else None.

    Two tests, on any CSV: some |latitude| > 90 while every |longitude| <= 90 (only
    swapped columns explain that); or the positions as given lie a median of more
    than 50 km from the nearest populated place, and at least twice as far as they
    would with the two swapped. Photo positions cluster near towns, so the reading
    that lands far from any town is the wrong one (e.g. IM2GPS3K's first row, in
    Bermuda, read swapped lands in the Southern Ocean). ``swapped`` only changes the
    advice in the message (the values were already swapped on request).
    """
    import numpy as np

    from .places import nearest_places

    fix = "drop --swap-latlon" if swapped else "pass --swap-latlon if so"
    lat = np.asarray(lats, dtype=np.float64)
    lon = np.asarray(lons, dtype=np.float64)
    if lat.size == 0 or np.any(np.abs(lon) > 90.0):
        return None  # a longitude beyond +-90 cannot be a latitude: not swapped
    over = int(np.count_nonzero(np.abs(lat) > 90.0))
    if over:
        return (
            f"latitude and longitude look swapped: {over} of {lat.size} latitudes are "
            f"beyond +-90 while every longitude is within +-90 ({fix})"
        )
    if lat.size > _SWAP_SAMPLE:
        pick = np.linspace(0, lat.size - 1, _SWAP_SAMPLE).round().astype(int)
        lat, lon = lat[pick], lon[pick]
    as_given = np.median([p.distance_km for p in nearest_places(lat, lon, by_population=False)])
    reversed_ = np.median([p.distance_km for p in nearest_places(lon, lat, by_population=False)])
    if as_given > _SWAP_MIN_MEDIAN_KM and as_given >= _SWAP_RATIO * reversed_:
        return (
            "latitude and longitude look swapped: the positions lie a median "
            f"{as_given:,.0f} km from the nearest town as read, {reversed_:,.0f} km with "
            f"the two exchanged ({fix})"
        )
    return None


# --- predicting and scoring ---------------------------------------------------------------


def predict_samples(
    geo: GeoModel,
    samples: Sequence[EvalSample],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Iterator[EvalPrediction]:
    """The top-1 prediction and its geodesic error for each sample, in input order.

    Missing images yield status ``missing``, undecodable ones ``failed``, without
    running the model on them.
    """
    import numpy as np

    from .geo import geodesic_km_many
    from .scan import embedded_batches

    present = [s for s in samples if s.path is not None]
    queue = iter(samples)

    def missing_until(target: EvalSample | None) -> Iterator[EvalPrediction]:
        for s in queue:
            if s is target:
                return
            yield EvalPrediction(s, "missing", error="image not found")

    coords = None
    done = 0
    for batch in embedded_batches(
        geo, [s.path for s in present], batch_size=batch_size, workers=workers
    ):
        chunk = present[done : done + len(batch)]
        done += len(batch)
        ok = [j for j, (_, emb) in enumerate(batch) if emb is not None]
        preds: dict[int, tuple[float, float, float, float]] = {}
        if ok:
            coords = geo.gallery.coords if coords is None else coords
            found = geo.search(np.stack([batch[j][1] for j in ok]), top_k=1)
            best = np.array([coords[r.indices[0]] for r in found], dtype=np.float64)
            truth = np.array([(chunk[j].lat, chunk[j].lon) for j in ok], dtype=np.float64)
            err = geodesic_km_many(truth[:, 0], truth[:, 1], best[:, 0], best[:, 1])
            for k, j in enumerate(ok):
                prob = float(found[k].probabilities[0])
                preds[j] = (float(best[k, 0]), float(best[k, 1]), prob, float(err[k]))
        for j, ((prepared, _), sample) in enumerate(zip(batch, chunk, strict=True)):
            yield from missing_until(sample)
            if j in preds:
                lat, lon, prob, err_km = preds[j]
                yield EvalPrediction(sample, "ok", lat, lon, prob, err_km)
            else:
                yield EvalPrediction(sample, "failed", error=prepared.error or "not decoded")
    yield from missing_until(None)


def accuracy_at(
    errors_km: Iterable[float],
    thresholds_km: Sequence[float] = THRESHOLDS_KM,
    *,
    strict_less: bool = False,
) -> dict[float, int]:
    """How many errors are within each threshold: ``<=`` (GeoCLIP) or ``<`` (G3)."""
    import numpy as np

    err = np.asarray(list(errors_km), dtype=np.float64)
    out = {}
    for t in thresholds_km:
        hit = err < t if strict_less else err <= t
        out[float(t)] = int(np.count_nonzero(hit))
    return out


def score(
    predictions: Iterable[EvalPrediction],
    *,
    thresholds_km: Sequence[float] = THRESHOLDS_KM,
    strict_less: bool = False,
    n_bad_rows: int = 0,
) -> EvalMetrics:
    """Accuracy, median and mean error over the ``ok`` predictions; others counted."""
    import numpy as np

    preds = list(predictions)
    errors = np.array(
        [p.error_km for p in preds if p.status == "ok" and p.error_km is not None],
        dtype=np.float64,
    )
    return EvalMetrics(
        thresholds_km=tuple(float(t) for t in thresholds_km),
        correct=accuracy_at(errors, thresholds_km, strict_less=strict_less),
        n_evaluated=int(errors.size),
        median_km=float(np.median(errors)) if errors.size else None,
        mean_km=float(np.mean(errors)) if errors.size else None,
        strict_less=strict_less,
        n_missing=sum(p.status == "missing" for p in preds),
        n_failed=sum(p.status == "failed" for p in preds),
        n_bad_rows=n_bad_rows,
    )


def evaluate(
    geo: GeoModel,
    eval_set: EvalSet,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    strict_less: bool = False,
    thresholds_km: Sequence[float] = THRESHOLDS_KM,
    reporter: Reporter | None = None,
    on_prediction: Callable[[EvalPrediction], None] | None = None,
) -> EvalReport:
    """Predict every sample of ``eval_set`` and score the predictions."""
    reporter = reporter or Reporter()
    predictions = []
    with reporter.task("Evaluating", total=len(eval_set.samples)) as advance:
        for pred in predict_samples(geo, eval_set.samples, batch_size=batch_size, workers=workers):
            predictions.append(pred)
            if on_prediction is not None:
                on_prediction(pred)
            advance(1)
    metrics = score(
        predictions,
        thresholds_km=thresholds_km,
        strict_less=strict_less,
        n_bad_rows=len(eval_set.bad_rows),
    )
    return EvalReport(metrics, predictions)


class PredictionsWriter:
    """Per-image predictions as CSV, one flushed row per image as it is scored."""

    COLUMNS = (
        "id",
        "path",
        "true_lat",
        "true_lon",
        "pred_lat",
        "pred_lon",
        "probability",
        "error_km",
        "status",
        "error",
    )

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(
                f"{self.path}: cannot write: {(exc.strerror or str(exc)).lower()}"
            ) from None
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(self.COLUMNS)

    def write(self, p: EvalPrediction) -> None:
        def num(x: float | None, digits: int) -> str:
            return "" if x is None else f"{x:.{digits}f}"

        s = p.sample
        self._csv.writerow(
            [
                s.id,
                "" if s.path is None else str(s.path),
                repr(s.lat),
                repr(s.lon),
                num(p.lat, 6),
                num(p.lon, 6),
                "" if p.probability is None else f"{p.probability:.6g}",
                num(p.error_km, 3),
                p.status,
                (p.error or "").replace("\n", " "),
            ]
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
