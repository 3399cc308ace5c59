"""XMP sidecars: the best guess written where photo libraries read it, beside the photo.

The photo itself is never opened for writing. A sidecar holds the guess in XMP's EXIF
namespace (``exif:GPSLatitude`` / ``GPSLongitude`` in XMP's degrees-and-decimal-minutes
form, ``GPSMapDatum``, ``GPSVersionID``), marked as an estimate twice: in
``exif:GPSProcessingMethod`` (which EXIF readers show) and in a geoguess namespace
(probability, spread, model).

Sidecar names (:data:`SIDECAR_STYLES`): ``photo.jpg.xmp`` ("append": darktable,
digiKam) or ``photo.xmp`` ("replace": Lightroom, Capture One, ExifTool's ``%f.xmp``).

An existing sidecar is merged: every other property, comment and processing
instruction it holds (keywords, ratings, faces) is kept, and GPS already in it is left
alone unless ``overwrite``. The new sidecar is written to a temporary file and renamed
into place, so a reader sees the old sidecar or the new one. Writing the same guess
again changes nothing.
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from .errors import InputError, UsageError, one_line, os_reason

if TYPE_CHECKING:
    from .locate import LocateResult

__all__ = [
    "NS_GEOGUESS",
    "SIDECAR_STYLES",
    "SidecarOptions",
    "XmpError",
    "XmpResult",
    "sidecar_extra",
    "sidecar_path",
    "sidecar_summary",
    "write_result_sidecar",
    "write_sidecar",
    "xmp_coordinate",
]

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_EXIF = "http://ns.adobe.com/exif/1.0/"
NS_GEOGUESS = "https://github.com/geoguess/geoguess/ns/xmp/1.0/"
_PREFIXES = {"x": NS_X, "rdf": NS_RDF, "exif": NS_EXIF, "geoguess": NS_GEOGUESS}

SIDECAR_STYLES = ("append", "replace")
#: What a sidecar's GPSProcessingMethod says, so that no one takes the point for a fix.
PROCESSING_METHOD = "geoguess estimate from image content, not a GPS fix"
#: Existing sidecars larger than this are not parsed (real ones are kilobytes).
MAX_SIDECAR_BYTES = 16 << 20

_GPS_TAGS = ("GPSLatitude", "GPSLongitude")
_WRITTEN_EXIF = ("GPSLatitude", "GPSLongitude", "GPSMapDatum", "GPSVersionID")
_OURS_TOO = ("GPSProcessingMethod",)


class XmpError(InputError):
    """A sidecar could not be read or written; the message names it."""


@dataclass(frozen=True)
class XmpResult:
    """What was done with one photo's sidecar.

    ``action``: ``written`` (a new file), ``merged`` (into an existing sidecar),
    ``unchanged`` (it already said this), ``kept`` (it holds GPS of its own),
    ``skipped`` (no sidecar wanted: the photo failed, or has EXIF GPS).
    """

    path: Path
    action: str
    why: str = ""


@dataclass(frozen=True)
class SidecarOptions:
    """How ``scan --xmp`` writes sidecars: naming ``style``, ``all`` photos (also those
    with EXIF GPS), ``overwrite`` GPS already in a sidecar."""

    style: str = "append"
    all: bool = False
    overwrite: bool = False
    #: Extra geoguess-namespace properties for every sidecar (e.g. the model).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.style not in SIDECAR_STYLES:
            raise UsageError(
                f"sidecar style must be one of {', '.join(SIDECAR_STYLES)}, got {self.style!r}"
            )


def sidecar_path(photo: str | os.PathLike[str], style: str = "append") -> Path:
    """Where the sidecar of ``photo`` goes for a naming ``style`` (see module docs)."""
    if style not in SIDECAR_STYLES:
        raise UsageError(f"sidecar style must be one of {', '.join(SIDECAR_STYLES)}, got {style!r}")
    path = Path(photo)
    return path.with_name(path.name + ".xmp") if style == "append" else path.with_suffix(".xmp")


def xmp_coordinate(value: float, axis: str) -> str:
    """XMP's GPSCoordinate text: ``DDD,MM.mmmmmmK`` (degrees, decimal minutes, N/S/E/W).

    Six decimals of a minute are 1.7e-8 degrees, far below what a guess can claim.
    """
    hemisphere = ("NS" if axis == "lat" else "EW")[value < 0]
    magnitude = abs(value)
    degrees = int(magnitude)
    minutes = round((magnitude - degrees) * 60, 6)
    if minutes >= 60:  # rounding carried into the next degree
        degrees, minutes = degrees + 1, 0.0
    return f"{degrees},{minutes:.6f}{hemisphere}"


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _parse(path: Path) -> tuple[ET.Element, dict[str, str]] | None:
    """The existing sidecar's root and its namespace prefixes, or None when absent."""
    from defusedxml.ElementTree import DefusedXMLParser

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise XmpError(path, f"cannot read sidecar ({os_reason(exc)})") from None
    if not path.is_file():
        raise XmpError(path, "sidecar name is taken by something that is not a file")
    if size > MAX_SIDECAR_BYTES:
        raise XmpError(path, f"existing sidecar is {size >> 20} MiB, too large for XMP")
    try:
        data = path.read_bytes()
        prefixes: dict[str, str] = {}
        # defusedxml refuses entity expansion and external references (billion laughs,
        # XXE): a sidecar is a file anyone could have put in the folder.
        for event, item in _iterparse(data):
            if event == "start-ns":
                prefix, uri = item
                prefixes.setdefault(prefix, uri)
        parser = DefusedXMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
        parser.feed(data)
        root = parser.close()
    except OSError as exc:
        raise XmpError(path, f"cannot read sidecar ({os_reason(exc)})") from None
    except Exception as exc:  # ParseError, and defusedxml's refusals (entities, DTDs)
        raise XmpError(
            path, f"existing sidecar is not readable XMP ({one_line(exc, 120)}); left as it is"
        ) from None
    if root.tag not in (_q(NS_X, "xmpmeta"), _q(NS_RDF, "RDF")):
        raise XmpError(path, "existing sidecar is not XMP (no x:xmpmeta or rdf:RDF); left as it is")
    return root, prefixes


def _iterparse(data: bytes) -> Any:
    from defusedxml.ElementTree import iterparse

    return iterparse(io.BytesIO(data), events=("start-ns",))


def _description(root: ET.Element) -> ET.Element:
    """The rdf:Description to write into, created when the packet has none."""
    rdf = root if root.tag == _q(NS_RDF, "RDF") else root.find(_q(NS_RDF, "RDF"))
    if rdf is None:
        rdf = ET.SubElement(root, _q(NS_RDF, "RDF"))
    desc = rdf.find(_q(NS_RDF, "Description"))
    if desc is None:
        desc = ET.SubElement(rdf, _q(NS_RDF, "Description"), {_q(NS_RDF, "about"): ""})
    return desc


def _descriptions(root: ET.Element) -> list[ET.Element]:
    return list(root.iter(_q(NS_RDF, "Description")))


def _has_gps(root: ET.Element) -> bool:
    for desc in _descriptions(root):
        for tag in _GPS_TAGS:
            if desc.get(_q(NS_EXIF, tag)) or desc.find(_q(NS_EXIF, tag)) is not None:
                return True
    return False


def _is_ours(key: str) -> bool:
    return key.startswith(f"{{{NS_GEOGUESS}}}") or key in {
        _q(NS_EXIF, t) for t in _WRITTEN_EXIF + _OURS_TOO
    }


def _drop_ours(root: ET.Element) -> None:
    """Remove the GPS and geoguess properties this module writes, wherever they are."""
    for desc in _descriptions(root):
        for key in [k for k in desc.attrib if _is_ours(k)]:
            del desc.attrib[key]
        for child in [c for c in desc if isinstance(c.tag, str) and _is_ours(c.tag)]:
            desc.remove(child)


def _properties(lat: float, lon: float, properties: Mapping[str, Any]) -> dict[str, str]:
    values = {
        _q(NS_EXIF, "GPSVersionID"): "2.3.0.0",
        _q(NS_EXIF, "GPSLatitude"): xmp_coordinate(lat, "lat"),
        _q(NS_EXIF, "GPSLongitude"): xmp_coordinate(lon, "lon"),
        _q(NS_EXIF, "GPSMapDatum"): "WGS-84",
        _q(NS_EXIF, "GPSProcessingMethod"): PROCESSING_METHOD,
        _q(NS_GEOGUESS, "Estimated"): "True",
    }
    for key, value in properties.items():
        if value is not None and value != "":
            values[_q(NS_GEOGUESS, key)] = str(value)
    return values


def _serialise(root: ET.Element, prefixes: Mapping[str, str]) -> bytes:
    # ElementTree writes the prefixes registered globally; register the sidecar's own
    # (except the reserved ns0-style ones) so its properties keep their names.
    for prefix, uri in {**prefixes, **_PREFIXES}.items():
        if prefix and not (prefix.startswith("ns") and prefix[2:].isdigit()):
            ET.register_namespace(prefix, uri)
    body = ET.tostring(root, encoding="unicode")
    # The packet wrapper lets tools that scan for XMP find and update it in place.
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        + body
        + '\n<?xpacket end="w"?>\n'
    ).encode("utf-8")


def write_sidecar(
    photo: str | os.PathLike[str],
    lat: float,
    lon: float,
    *,
    style: str = "append",
    overwrite: bool = False,
    properties: Mapping[str, Any] | None = None,
) -> XmpResult:
    """Write (or merge into) the sidecar of ``photo`` an estimated position.

    ``properties`` go into the geoguess namespace (e.g. ``Probability``,
    ``SpreadP50Km``, ``Model``). GPS already in an existing sidecar is kept unless
    ``overwrite``. Raises :class:`XmpError` naming the sidecar when it cannot be read
    or written; the photo is never opened.
    """
    from .atomic import write_file

    path = sidecar_path(photo, style)
    found = _parse(path)
    wanted = _properties(lat, lon, properties or {})
    if found is None:
        root = ET.Element(_q(NS_X, "xmpmeta"), {_q(NS_X, "xmptk"): "geoguess"})
        _description(root).attrib.update(wanted)
        ET.indent(root)  # only a new file: an existing sidecar keeps its own layout
        data = _serialise(root, {})
        action = "written"
    else:
        root, prefixes = found
        before = _serialise(root, prefixes)
        merged = copy.deepcopy(root)
        _drop_ours(merged)
        _description(merged).attrib.update(wanted)
        data = _serialise(merged, prefixes)
        if data == before:
            return XmpResult(path, "unchanged")
        if _has_gps(root) and not overwrite:
            return XmpResult(path, "kept", "the sidecar has GPS already")
        action = "merged"
    try:
        write_file(path, data)
    except OSError as exc:
        raise XmpError(path, f"cannot write sidecar ({os_reason(exc)})") from None
    return XmpResult(path, action)


def result_properties(result: LocateResult) -> dict[str, Any]:
    """The geoguess-namespace properties of a result's sidecar."""
    best = result.best
    props: dict[str, Any] = {}
    if best is not None:
        props["Probability"] = f"{best.prediction.probability:.6g}"
        if best.place is not None:
            from .places import describe

            props["Place"] = describe(best.place)
    for level, radius in sorted(result.spread_km.items()):
        props[f"SpreadP{round(level * 100)}Km"] = f"{radius:.1f}"
    if result.confidence:
        props["Confidence"] = result.confidence
    return props


def write_result_sidecar(result: LocateResult, options: SidecarOptions) -> XmpResult:
    """Write the sidecar a scan wants for ``result`` (see :class:`SidecarOptions`).

    A photo that failed, or that has valid EXIF GPS (unless ``options.all``), gets no
    sidecar: ``action`` is then ``skipped``.
    """
    path = sidecar_path(result.file, options.style)
    best = result.best
    if result.error or best is None:
        return XmpResult(path, "skipped", "the photo was not located")
    if result.exif_gps is not None and not options.all:
        return XmpResult(path, "skipped", "the photo has EXIF GPS")
    props = {**result_properties(result), **options.extra}
    return write_sidecar(
        result.file,
        best.prediction.lat,
        best.prediction.lon,
        style=options.style,
        overwrite=options.overwrite,
        properties=props,
    )


def sidecar_extra(model: Mapping[str, Any]) -> dict[str, str]:
    """Properties naming the model that made the guesses (a scan writer's ``model``)."""
    from .scan_output import model_label

    extra = {"Model": model_label(model)}
    if model.get("random_weights"):
        extra["RandomWeights"] = "True"
    return extra


_SUMMARY_WORDS = (
    ("written", "written"),
    ("merged", "merged into existing ones"),
    ("unchanged", "unchanged"),
    ("kept", "kept (GPS already in them; --xmp-overwrite replaces it)"),
    ("skipped", "not wanted (EXIF GPS, or not located)"),
    ("failed", "failed"),
)


def sidecar_summary(counts: Mapping[str, int]) -> str:
    """One line saying what happened to the sidecars of a scan."""
    parts = [f"{counts[key]} {words}" for key, words in _SUMMARY_WORDS if counts.get(key)]
    return "XMP sidecars: " + (", ".join(parts) if parts else "none (no photo was located)")
