"""Capture metadata from a photo's EXIF: GPS position, capture time, camera, orientation.

Metadata is a by-product of geolocating a photo, so reading it never raises: whatever
is wrong with the EXIF ends up as a status and a human-readable reason.

GPS goes through :func:`validate_gps` whichever reader found it, and is only reported
as a location when it is fully trustworthy:

* ``ok``: a valid position.
* ``missing``: no EXIF, no GPS block, an empty GPS block, or one without coordinates.
* ``invalid``: coordinates are present but unusable (0/0 rationals, NaN, out of range,
  wrong number of values, missing or unknown hemisphere reference).
* ``placeholder``: exactly (0, 0), which devices write when they had no fix.

A missing N/S or E/W reference makes the position invalid rather than being read as
N/E: guessing the hemisphere can move a photo to another continent, and a confidently
wrong "ok" position is worse than an honest "invalid" one.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import exifread
from PIL import Image

from geoguess.errors import ImageError, one_line, os_reason
from geoguess.images import default_name, open_regular_file, opened_image, quiet_pillow

__all__ = [
    "GPS",
    "GpsReading",
    "GpsStatus",
    "MetadataSource",
    "PhotoMetadata",
    "read_metadata",
    "validate_gps",
]

# exifread logs "File format not recognized." at WARNING for every photo without EXIF;
# with no handler configured, logging's last-resort handler would print that to
# stderr. A NullHandler stops that while still letting an application that configures
# logging see the records.
logging.getLogger("exifread").addHandler(logging.NullHandler())

GpsStatus = Literal["ok", "missing", "invalid", "placeholder"]

#: A path, or the raw bytes of an image file (input read from stdin).
MetadataSource = str | os.PathLike | bytes | bytearray | memoryview

# Writers that round 59.9999" end up with exactly 60; anything beyond that is not a
# rounding artefact.
_SEXAGESIMAL_LIMIT = 60.0

_EXIF_DATETIME = re.compile(r"\s*(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_UTC_OFFSET = re.compile(r"\s*([+-])(\d{2}):(\d{2})\s*$")

# Pillow tag ids.
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _OFFSET_TIME, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9010, 0x9011
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON, _GPS_ALT_REF, _GPS_ALT = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class GPS:
    """A position in decimal degrees (WGS 84 as written by the camera)."""

    lat: float
    lon: float
    altitude_m: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"lat": self.lat, "lon": self.lon, "altitude_m": self.altitude_m}


@dataclass(frozen=True)
class PhotoMetadata:
    """What a photo says about where, when and with what it was taken."""

    gps: GPS | None = None
    gps_status: GpsStatus = "missing"
    gps_problem: str | None = None
    taken_at: str | None = None
    camera: str | None = None
    orientation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gps": None if self.gps is None else self.gps.to_dict(),
            "gps_status": self.gps_status,
            "gps_problem": self.gps_problem,
            "taken_at": self.taken_at,
            "camera": self.camera,
            "orientation": self.orientation,
        }


class GpsReading(NamedTuple):
    """Outcome of :func:`validate_gps`: a position only when ``status`` is ``ok``."""

    gps: GPS | None
    status: GpsStatus
    problem: str | None


class _Invalid(Exception):
    """One reason a GPS value cannot be used; its message is the user-facing problem."""


def validate_gps(
    latitude: Any,
    latitude_ref: Any,
    longitude: Any,
    longitude_ref: Any,
    altitude: Any = None,
    altitude_ref: Any = None,
) -> GpsReading:
    """Turn EXIF GPS values into decimal degrees, or say why they cannot be trusted.

    Takes the raw values of GPSLatitude/GPSLongitude (three degree, minute, second
    rationals each, as exifread ``Ratio`` or Pillow ``IFDRational`` or plain numbers),
    their references (N/S, E/W, as str or bytes) and optionally GPSAltitude and
    GPSAltitudeRef. A bad altitude is dropped; it never invalidates the position.
    """
    if latitude is None and longitude is None:
        return GpsReading(None, "missing", "GPS block has no coordinates")
    try:
        lat = _coordinate(latitude, latitude_ref, "latitude", "NS")
        lon = _coordinate(longitude, longitude_ref, "longitude", "EW")
        if abs(lat) > 90:
            raise _Invalid(f"latitude {lat:.6g} out of range")
        if abs(lon) > 180:
            raise _Invalid(f"longitude {lon:.6g} out of range")
    except _Invalid as exc:
        return GpsReading(None, "invalid", str(exc))
    if lat == 0 and lon == 0:
        return GpsReading(None, "placeholder", "(0, 0) placeholder")
    return GpsReading(GPS(lat, lon, _altitude(altitude, altitude_ref)), "ok", None)


def _coordinate(values: Any, ref: Any, axis: str, hemispheres: str) -> float:
    if values is None:
        raise _Invalid(f"GPS {axis} is missing")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise _Invalid(f"GPS {axis} is not a list of degrees, minutes and seconds")
    if len(values) != 3:
        raise _Invalid(f"GPS {axis} has {len(values)} values, expected 3")
    degrees, minutes, seconds = (
        _number(value, f"{axis} {part}")
        for value, part in zip(values, ("degrees", "minutes", "seconds"), strict=True)
    )
    for value, part in ((minutes, "minutes"), (seconds, "seconds")):
        if value > _SEXAGESIMAL_LIMIT:
            raise _Invalid(f"GPS {axis} {part} are {value:.6g}, over 60")
    positive, negative = hemispheres
    direction = _text(ref)
    if direction is None:
        raise _Invalid(f"GPS {axis} reference ({positive}/{negative}) is missing")
    direction = direction.upper()
    if direction not in (positive, negative):
        raise _Invalid(f"GPS {axis} reference is {direction!r}, expected {positive} or {negative}")
    decimal = degrees + minutes / 60 + seconds / 3600
    return -decimal if direction == negative else decimal


def _number(value: Any, what: str) -> float:
    """One rational or number, checked: never lets 0/0 become 0."""
    if isinstance(value, bool):
        raise _Invalid(f"GPS {what} are not a number")
    numerator = getattr(value, "numerator", None)
    denominator = getattr(value, "denominator", None)
    if isinstance(numerator, int) and isinstance(denominator, int):
        if denominator == 0:
            # 0/0 is how many cameras write "unknown"; reading it as 0 would place the
            # photo up to a minute of arc (1.8 km) or a whole degree away.
            raise _Invalid(f"GPS {what} are {numerator}/0")
        result = numerator / denominator
    elif isinstance(value, (int, float)):
        result = float(value)
    else:
        raise _Invalid(f"GPS {what} are not a number ({value!r})")
    if not math.isfinite(result):
        raise _Invalid(f"GPS {what} are not a finite number")
    if result < 0:
        raise _Invalid(f"GPS {what} are negative")
    return result


def _altitude(value: Any, ref: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            return None
        value = value[0]
    try:
        metres = _number(value, "altitude")
    except _Invalid:
        return None
    if isinstance(ref, (list, tuple)):
        ref = ref[0] if ref else None
    if isinstance(ref, (bytes, bytearray)):
        ref = ref[0] if ref else None
    # GPSAltitudeRef 1 means "below sea level"; anything else is read as above.
    return -metres if ref == 1 else metres


def read_metadata(source: MetadataSource, *, name: str | None = None) -> PhotoMetadata:
    """Read a photo's capture metadata. Never raises for a bad or unreadable photo.

    ``source`` is a path or the raw bytes of the file. ``name`` is only used in the
    problems reported (default: the path, or ``<stdin>``).
    """
    label = name if name is not None else default_name(source)
    try:
        return _read(source, label)
    except Exception as exc:  # metadata must never make a photo fail
        return PhotoMetadata(gps_problem=f"metadata could not be read ({one_line(exc)})")


class _RawGps(NamedTuple):
    latitude: Any
    latitude_ref: Any
    longitude: Any
    longitude_ref: Any
    altitude: Any
    altitude_ref: Any
    tag_count: int

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None or self.longitude is not None


@dataclass
class _Found:
    """What one reader saw; gps is None when there is no GPS block at all."""

    any_tags: bool = False
    make: str | None = None
    model: str | None = None
    orientation: int | None = None
    taken_at: str | None = None
    gps: _RawGps | None = None
    gps_error: str | None = None


_T = TypeVar("_T")


def _attempt(reader: Callable[..., _T], *args: Any) -> tuple[_T | None, str | None]:
    try:
        return reader(*args), None
    except ImageError as exc:
        return None, exc.problem
    except OSError as exc:
        return None, os_reason(exc)
    except Exception as exc:  # EXIF parsers choke on corrupt data
        return None, one_line(exc)


def _read(source: MetadataSource, label: str) -> PhotoMetadata:
    # exifread first: it reads only the metadata segments and is well tested on
    # camera quirks. Pillow is the fallback for containers exifread may not parse.
    primary, primary_error = _attempt(_from_exifread, source)
    found = [primary] if primary is not None else []
    if primary is None or primary.gps is None or not primary.gps.has_coordinates:
        secondary, _ = _attempt(_from_pillow, source, label)
        if secondary is not None:
            found.append(secondary)

    def first(attribute: str) -> Any:
        return next((v for f in found if (v := getattr(f, attribute)) is not None), None)

    reading = _gps_reading(found, primary_error)
    return PhotoMetadata(
        gps=reading.gps,
        gps_status=reading.status,
        gps_problem=reading.problem,
        taken_at=first("taken_at"),
        camera=_camera(first("make"), first("model")),
        orientation=first("orientation"),
    )


def _gps_reading(found: list[_Found], read_error: str | None) -> GpsReading:
    blocks = [f.gps for f in found if f.gps is not None]
    for block in blocks:
        if block.has_coordinates:
            return validate_gps(*block[:6])
    if any(block.tag_count for block in blocks):
        return GpsReading(None, "missing", "GPS block has no coordinates")
    unreadable = next((f.gps_error for f in found if f.gps_error), None)
    if unreadable:
        return GpsReading(None, "invalid", f"GPS block is unreadable ({unreadable})")
    if blocks:
        return GpsReading(None, "missing", "GPS block is empty")
    if any(f.any_tags for f in found):
        return GpsReading(None, "missing", "no GPS block")
    if read_error and not found:
        return GpsReading(None, "missing", f"EXIF could not be read ({read_error})")
    return GpsReading(None, "missing", "no EXIF metadata")


def _from_exifread(source: MetadataSource) -> _Found:
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: io.BufferedIOBase | io.BytesIO = io.BytesIO(bytes(source))
    else:
        stream = open_regular_file(Path(source), os.fsdecode(source))  # type: ignore[assignment]
    with stream:
        tags = exifread.process_file(stream, details=False, extract_thumbnail=False)

    def value(key: str) -> Any:
        tag = tags.get(key)
        return getattr(tag, "values", tag)

    gps_keys = [key for key in tags if key.startswith("GPS ")]
    gps = None
    if gps_keys or "Image GPSInfo" in tags:
        gps = _RawGps(
            value("GPS GPSLatitude"),
            value("GPS GPSLatitudeRef"),
            value("GPS GPSLongitude"),
            value("GPS GPSLongitudeRef"),
            value("GPS GPSAltitude"),
            value("GPS GPSAltitudeRef"),
            len(gps_keys),
        )
    return _Found(
        any_tags=bool(tags),
        make=_text(value("Image Make")),
        model=_text(value("Image Model")),
        orientation=_orientation(value("Image Orientation")),
        taken_at=_iso_datetime(value("EXIF DateTimeOriginal"), value("EXIF OffsetTimeOriginal"))
        or _iso_datetime(value("Image DateTime"), value("EXIF OffsetTime")),
        gps=gps,
    )


def _from_pillow(source: MetadataSource, label: str) -> _Found:
    with opened_image(source, name=label) as im, quiet_pillow():
        exif = _pillow_exif(im)
        if exif is None:
            return _Found()
        orientation = exif.get(_ORIENTATION)
        if im.format == "HEIF":
            # pillow-heif applies the rotation itself and resets the tag to 1.
            orientation = im.info.get("original_orientation", orientation)
        try:
            sub = exif.get_ifd(_EXIF_IFD)
        except Exception:  # a broken sub-IFD only loses the capture time
            sub = {}
        found = _Found(
            any_tags=bool(exif),
            make=_text(exif.get(_MAKE)),
            model=_text(exif.get(_MODEL)),
            orientation=_orientation(orientation),
            taken_at=_iso_datetime(sub.get(_DATETIME_ORIGINAL), sub.get(_OFFSET_TIME_ORIGINAL))
            or _iso_datetime(exif.get(_DATETIME), sub.get(_OFFSET_TIME)),
        )
        if _GPS_IFD in exif:
            try:
                block: Mapping[int, Any] = exif.get_ifd(_GPS_IFD)
            except Exception as exc:  # corrupt offsets, bad types, ...
                found.gps_error = one_line(exc)
            else:
                found.gps = _RawGps(
                    block.get(_GPS_LAT),
                    block.get(_GPS_LAT_REF),
                    block.get(_GPS_LON),
                    block.get(_GPS_LON_REF),
                    block.get(_GPS_ALT),
                    block.get(_GPS_ALT_REF),
                    len(block),
                )
        return found


def _pillow_exif(im: Image.Image) -> Image.Exif | None:
    """The image's real EXIF block, without what Pillow's getexif() adds from XMP.

    getexif() invents an Orientation tag from XMP when EXIF has none, which would make
    a photo without EXIF look as if it had some.
    """
    raw = im.info.get("exif")
    if not raw and im.format == "PNG":
        raw = _png_exif_chunk(im.fp)
    if not raw and "Raw profile type exif" in im.info:
        lines = str(im.info["Raw profile type exif"]).split("\n")
        raw = bytes.fromhex("".join(lines[3:]))
    if raw:
        exif = Image.Exif()
        exif.load(bytes(raw))
        return exif
    tiff_tags = getattr(im, "tag_v2", None)
    if tiff_tags is not None:
        exif = im.getexif()
        if _ORIENTATION in exif and _ORIENTATION not in tiff_tags:
            del exif[_ORIENTATION]
        return exif
    return None


def _png_exif_chunk(fp: Any) -> bytes | None:
    """The eXIf chunk of a PNG, found by skipping over the chunks before it.

    Pillow only sees an eXIf chunk that follows the pixel data once the whole image is
    decoded; hopping from chunk header to chunk header reads a few bytes instead.
    """
    if fp is None:
        return None
    fp.seek(8)
    while True:
        head = fp.read(8)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I4s", head)
        if kind == b"eXIf":
            data = fp.read(length)
            return data if len(data) == length else None
        if kind == b"IEND":
            return None
        fp.seek(length + 4, os.SEEK_CUR)  # data and CRC


def _text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = " ".join(value.replace("\x00", " ").split())
    return cleaned or None


def _orientation(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return None


def _iso_datetime(value: Any, offset: Any = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ OffsetTime) as ISO 8601; None if blank or bogus."""
    text = _text(value)
    match = _EXIF_DATETIME.match(text) if text else None
    if match is None:
        return None
    try:
        # Rejects the "0000:00:00 00:00:00" that cameras without a clock write.
        stamp = datetime(*(int(part) for part in match.groups()))
    except ValueError:
        return None
    iso = stamp.isoformat()
    offset_text = _text(offset)
    offset_match = _UTC_OFFSET.match(offset_text) if offset_text else None
    if offset_match:
        sign, hours, minutes = offset_match.groups()
        if int(hours) <= 14 and int(minutes) < 60:
            iso += f"{sign}{hours}:{minutes}"
    return iso


def _camera(make: str | None, model: str | None) -> str | None:
    """ "Make Model", without repeating the make when the model already starts with it."""
    if make and model:
        # Compare on the make's first word: "NIKON CORPORATION" + "NIKON D5000".
        brand = make.split()[0].lower()
        lowered = model.lower()
        if lowered.startswith(brand) and (
            len(lowered) == len(brand) or not lowered[len(brand)].isalnum()
        ):
            return model
        return f"{make} {model}"
    return model or make
