"""Where the probability lies: the mass of an answer summed by country and by region.

Each gallery point's country and first-level region (state, province) is decided once,
when the gallery is built, from the GeoNames place nearest to it (the same gazetteer
that names places, :mod:`geoguess.places`), and stored in the model set as
``galleries/<name>/areas.npz`` (checked by sha256 like every model file). At run time
an answer's mass by area is then one weighted count over the points its search scored,
so "France 41%, Spain 12%" costs microseconds, not a reverse geocode of 100,000 points.

The nearest place, not the population-weighted one that names a candidate: near a
border the nearest town is the better guess of which side a point lies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The file of a gallery's areas, beside its ``coords.npy``.
AREAS_FILE = "areas.npz"

#: Areas shown per answer (JSON, table, CSV): the largest shares first.
TOP_AREAS = 5


@dataclass(frozen=True)
class AreaShare:
    """One country's or region's share of an answer's probability."""

    name: str  # the region's or the country's name
    country: str  # the country's name (equal to ``name`` for a country)
    country_code: str  # ISO 3166-1 alpha-2
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "country": self.country,
            "country_code": self.country_code,
            "probability": round(self.probability, 6),
        }

    def label(self) -> str:
        """``France`` for a country, ``Île-de-France, France`` for a region."""
        if self.name == self.country:
            return self.name
        return f"{self.name}, {self.country}"


@dataclass(frozen=True)
class Areas:
    """The country and region of every point of a gallery.

    ``region[i]`` indexes the region table; ``region_country[r]`` the country table.
    A point whose nearest place has no first-level region gets a region named as its
    country, so every point has both.
    """

    region: np.ndarray  # (N,) int32: each point's region
    region_names: np.ndarray  # (R,) str
    region_country: np.ndarray  # (R,) int32: each region's country
    country_codes: np.ndarray  # (C,) str
    country_names: np.ndarray  # (C,) str

    def __len__(self) -> int:
        return len(self.region)

    def shares(
        self,
        probs: np.ndarray,
        rows: np.ndarray | None = None,
        *,
        top: int = TOP_AREAS,
    ) -> tuple[list[AreaShare], list[AreaShare]]:
        """The ``top`` largest country and region shares of ``probs``, the probability
        of gallery ``rows`` (all rows in order when None), largest first."""
        region = self.region if rows is None else self.region[np.asarray(rows)]
        by_region = np.bincount(region, weights=probs, minlength=len(self.region_names))
        by_country = np.bincount(
            self.region_country, weights=by_region, minlength=len(self.country_codes)
        )
        countries = []
        for c in _largest(by_country, top):
            name = str(self.country_names[c])
            countries.append(
                AreaShare(name, name, str(self.country_codes[c]), float(by_country[c]))
            )
        regions = []
        for r in _largest(by_region, top):
            c = int(self.region_country[r])
            regions.append(
                AreaShare(
                    str(self.region_names[r]),
                    str(self.country_names[c]),
                    str(self.country_codes[c]),
                    float(by_region[r]),
                )
            )
        return countries, regions


def percent(p: float) -> str:
    """A share as people write it: ``41%``, ``3.2%``, ``<0.1%``."""
    pct = 100.0 * p
    if pct >= 9.95:
        return f"{pct:.0f}%"
    if pct >= 0.05:
        return f"{pct:.1f}%"
    return "<0.1%"


def format_shares(shares: list[AreaShare], sep: str = ", ") -> str:
    """``France 41%, Spain 12%``: the shares in words, largest first."""
    return sep.join(f"{a.label()} {percent(a.probability)}" for a in shares)


def _largest(mass: np.ndarray, top: int) -> list[int]:
    nonzero = int(np.count_nonzero(mass))
    k = min(top, nonzero)
    if k == 0:
        return []
    part = np.argpartition(-mass, k - 1)[:k]
    return [int(i) for i in part[np.argsort(-mass[part], kind="stable")]]


def assign_areas(coords: np.ndarray) -> Areas:
    """The country and region of each ``(N, 2)`` lat/lon point: those of its nearest
    GeoNames place (great-circle nearest, through a k-d tree over unit vectors)."""
    from scipy.spatial import cKDTree

    from .geo import to_unit_vectors
    from .places import place_table

    table = place_table()
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    # Chord length orders points as great-circle distance does, so the k-d tree's
    # Euclidean nearest neighbour on the unit sphere is the great-circle nearest.
    tree = cKDTree(table.vectors)
    _, nearest = tree.query(to_unit_vectors(coords[:, 0], coords[:, 1]))
    nearest = np.asarray(nearest, dtype=np.int64)
    codes: dict[str, int] = {}
    regions: dict[tuple[int, str], int] = {}
    point_region = np.empty(len(coords), dtype=np.int32)
    # Distinct places only: 100K gallery points have ~30K nearest places between them.
    used, inverse = np.unique(nearest, return_inverse=True)
    used_region = np.empty(len(used), dtype=np.int32)
    for j, i in enumerate(used.tolist()):
        code, admin1 = table.area(i)
        c = codes.setdefault(code, len(codes))
        used_region[j] = regions.setdefault((c, admin1 or ""), len(regions))
    point_region[:] = used_region[inverse.ravel()]
    country_codes = list(codes)
    country_names = [table.country_name(code) for code in country_codes]
    region_names = [name or country_names[c] for (c, name) in regions]
    return Areas(
        region=point_region,
        region_names=np.asarray(region_names, dtype=str),
        region_country=np.asarray([c for (c, _) in regions], dtype=np.int32),
        country_codes=np.asarray(country_codes, dtype=str),
        country_names=np.asarray(country_names, dtype=str),
    )


def save_areas(path: Path, areas: Areas) -> None:
    """Write ``areas`` as one ``.npz`` (plain arrays: it loads without pickle)."""
    with open(path, "wb") as f:
        np.savez(
            f,
            region=areas.region,
            region_names=areas.region_names,
            region_country=areas.region_country,
            country_codes=areas.country_codes,
            country_names=areas.country_names,
        )


def load_areas(path: Path, size: int) -> Areas:
    """Read what :func:`save_areas` wrote, for a gallery of ``size`` points.

    Raises ValueError when the file does not describe such a gallery (its checksum
    is checked by the caller; this catches a file written for another gallery).
    """
    with np.load(path, allow_pickle=False) as data:
        areas = Areas(
            region=np.asarray(data["region"], dtype=np.int64),
            region_names=data["region_names"],
            region_country=np.asarray(data["region_country"], dtype=np.int64),
            country_codes=data["country_codes"],
            country_names=data["country_names"],
        )
    if len(areas.region) != size:
        raise ValueError(f"it describes {len(areas.region)} points, the gallery has {size}")
    if len(areas.region) and (
        areas.region.min() < 0
        or areas.region.max() >= len(areas.region_names)
        or len(areas.region_country) != len(areas.region_names)
        or areas.region_country.min() < 0
        or areas.region_country.max() >= len(areas.country_codes)
        or len(areas.country_names) != len(areas.country_codes)
    ):
        raise ValueError("its tables do not match")
    return areas
