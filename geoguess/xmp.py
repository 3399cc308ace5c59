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
from dataclasses import dataclass, field, replace
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
    "record_position",
    "record_properties",
    "sidecar_extra",
    "sidecar_path",
    "sidecar_summary",
    "write_record_sidecar",
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
#: The same for a position a person moved or confirmed after the scan.
REVIEWED_METHOD = "geoguess estimate from image content, reviewed by a person; not a GPS fix"
#: The same for the answer of a vision language model (``--llm``), checked with GeoCLIP.
REFINED_METHOD = (
    "geoguess estimate from image content, refined with a vision language model and "
    "GeoCLIP; not a GPS fix"
)
#: Positions closer than this (about a metre) are one: a CSV keeps 6 decimals.
_SAME_DEGREES = 1e-5
_METHODS = {"estimate": PROCESSING_METHOD, "reviewed": REVIEWED_METHOD, "refined": REFINED_METHOD}
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
    ``skipped`` (no sidecar wanted: the photo failed, or has EXIF GPS). ``kind``: the
    position it holds when written from a record (see :func:`record_position`).
    """

    path: Path
    action: str
    why: str = ""
    kind: str = ""


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


def _replaces_our_estimate(root: ET.Element, wanted: Mapping[str, str]) -> bool:
    """A reviewed position replaces geoguess's own unreviewed estimate: that is what the
    review is for. Any other GPS in a sidecar (set by a person or another tool, or an
    earlier review) stays unless overwrite is asked for."""
    reviewed = _q(NS_GEOGUESS, "Reviewed")
    if reviewed not in wanted:
        return False
    found = {k for desc in _descriptions(root) for k in (*desc.attrib, *(c.tag for c in desc))}
    return _q(NS_GEOGUESS, "Estimated") in found and reviewed not in found


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


def _properties(
    lat: float, lon: float, properties: Mapping[str, Any], method: str
) -> dict[str, str]:
    values = {
        _q(NS_EXIF, "GPSVersionID"): "2.3.0.0",
        _q(NS_EXIF, "GPSLatitude"): xmp_coordinate(lat, "lat"),
        _q(NS_EXIF, "GPSLongitude"): xmp_coordinate(lon, "lon"),
        _q(NS_EXIF, "GPSMapDatum"): "WGS-84",
        _q(NS_EXIF, "GPSProcessingMethod"): method,
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
    method: str = PROCESSING_METHOD,
    dry_run: bool = False,
) -> XmpResult:
    """Write (or merge into) the sidecar of ``photo`` an estimated position.

    ``properties`` go into the geoguess namespace (e.g. ``Probability``,
    ``SpreadP50Km``, ``Model``). GPS already in an existing sidecar is kept unless
    ``overwrite``; ``method`` is the ``GPSProcessingMethod`` text. ``dry_run``: read
    the sidecar and return what would be done, writing nothing. Raises
    :class:`XmpError` naming the sidecar when it cannot be read or written; the photo is
    never opened.
    """
    from .atomic import write_file

    path = sidecar_path(photo, style)
    found = _parse(path)
    wanted = _properties(lat, lon, properties or {}, method)
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
        if _has_gps(root) and not overwrite and not _replaces_our_estimate(root, wanted):
            return XmpResult(path, "kept", "the sidecar has GPS already")
        action = "merged"
    if dry_run:
        return XmpResult(path, action)
    try:
        write_file(path, data)
    except OSError as exc:
        raise XmpError(path, f"cannot write sidecar ({os_reason(exc)})") from None
    return XmpResult(path, action)


def _reviewed_position(record: Mapping[str, Any]) -> tuple[float, float]:
    from .review import reviewed_position

    try:
        position = reviewed_position(record)
    except ValueError as exc:
        raise XmpError(record.get("file", ""), str(exc)) from None
    assert position is not None
    return position


def _refined(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``--llm`` answer when it moved the photo: the refinement's best (the language
    model's answer, or a GeoCLIP candidate it ranked first) unless it fell back, and
    only where it differs from GeoCLIP's best guess. Deciding by position lets a CSV,
    which keeps the answer's coordinates but no fallback flag, give the same sidecar."""
    llm = record.get("llm")
    best = llm.get("best") if isinstance(llm, Mapping) else None
    if not isinstance(best, Mapping) or llm.get("fallback"):
        return None
    predictions = record.get("predictions") or []
    if predictions and (
        abs(float(best["lat"]) - float(predictions[0]["lat"])) <= _SAME_DEGREES
        and abs(float(best["lon"]) - float(predictions[0]["lon"])) <= _SAME_DEGREES
    ):
        return None
    return best


def record_position(record: Mapping[str, Any]) -> tuple[float, float, str] | None:
    """Where a ``--json`` record's sidecar puts the photo: ``(lat, lon, kind)``.

    ``kind`` is ``reviewed``: a person moved the guess (an edited ``lat``/``lon`` in a
    scan's CSV, a moved point in its GeoJSON, or a ``"reviewed": {"lat", "lon"}`` member
    in JSON Lines); else ``refined``: the ``--llm`` answer, where it differs from
    GeoCLIP's; else ``estimate``: the best candidate. None: the record has no position.
    """
    if record.get("reviewed"):
        return (*_reviewed_position(record), "reviewed")
    refined = _refined(record)
    if refined is not None:
        return float(refined["lat"]), float(refined["lon"]), "refined"
    predictions = record.get("predictions") or []
    if not predictions:
        return None
    return float(predictions[0]["lat"]), float(predictions[0]["lon"]), "estimate"


def record_properties(record: Mapping[str, Any]) -> dict[str, Any]:
    """The geoguess-namespace properties of a record's sidecar.

    A reviewed or refined position carries no probability, spread or confidence: those
    describe GeoCLIP's distribution, not where the person or the language model put the
    photo. A refined one names the language model (``RefinedBy``) and its place.
    """
    from .places import describe

    props: dict[str, Any] = {}
    if record.get("reviewed"):
        props["Reviewed"] = "True"
        return {**props, **_model_properties(record.get("model"))}
    refined = _refined(record)
    if refined is not None:
        props["RefinedBy"] = record["llm"].get("model")
        if refined.get("place"):
            props["Place"] = describe(refined["place"])
        return {**props, **_model_properties(record.get("model"))}
    predictions = record.get("predictions") or []
    if predictions:
        best = predictions[0]
        if best.get("probability") is not None:
            props["Probability"] = f"{float(best['probability']):.6g}"
        if best.get("place"):
            props["Place"] = describe(best["place"])
    for key, radius in sorted((record.get("spread_km") or {}).items()):
        if key.startswith("p") and key[1:].isdigit() and radius is not None:
            props[f"SpreadP{key[1:]}Km"] = f"{float(radius):.1f}"
    if record.get("confidence"):
        props["Confidence"] = record["confidence"]
    return {**props, **_model_properties(record.get("model"))}


def _model_properties(model: Any) -> dict[str, str]:
    if isinstance(model, Mapping):
        return sidecar_extra(model)
    if isinstance(model, str) and model:
        # A CSV holds the model as its label, "name/precision (random weights: ...)".
        props = {"Model": model}
        if "random weights" in model:
            props["RandomWeights"] = "True"
        return props
    return {}


def write_record_sidecar(
    record: Mapping[str, Any],
    options: SidecarOptions,
    *,
    dry_run: bool = False,
    need_photo: bool = False,
) -> XmpResult:
    """Write the sidecar ``options`` want for one ``--json`` record (a scan's result,
    or a row read back from its output; see :func:`record_position`).

    A record that failed or has no candidates, or whose photo has valid EXIF GPS
    (unless ``options.all``), gets no sidecar: ``action`` is then ``skipped``.
    ``need_photo``: refuse when the photo is not there (sidecars from a results file
    made elsewhere would land beside nothing). ``dry_run``: say what would be done.
    """
    photo = record.get("file") or ""
    path = sidecar_path(photo, options.style)
    if record.get("error"):
        return XmpResult(path, "skipped", "the photo was not located")
    if record.get("exif_gps") and not options.all and not record.get("reviewed"):
        return XmpResult(path, "skipped", "the photo has EXIF GPS")
    position = record_position(record)
    if position is None:
        return XmpResult(path, "skipped", "the photo was not located")
    if need_photo and not os.path.isfile(photo):
        raise XmpError(photo, "no such photo here; a sidecar goes beside its photo")
    lat, lon, kind = position
    done = write_sidecar(
        photo,
        lat,
        lon,
        style=options.style,
        overwrite=options.overwrite,
        properties={**record_properties(record), **options.extra},
        method=_METHODS[kind],
        dry_run=dry_run,
    )
    return replace(done, kind=kind)


def write_result_sidecar(result: LocateResult, options: SidecarOptions) -> XmpResult:
    """Write the sidecar a scan wants for ``result`` (see :func:`write_record_sidecar`)."""
    return write_record_sidecar(result.to_dict(), options)


def sidecar_extra(model: Mapping[str, Any]) -> dict[str, str]:
    """Properties naming the model that made the guesses (a scan writer's ``model``)."""
    from .scan_output import model_label

    extra = {"Model": model_label(model)}
    if model.get("random_weights"):
        extra["RandomWeights"] = "True"
    return extra


_SUMMARY_WORDS = (
    ("written", "written", "to write"),
    ("merged", "merged into existing ones", "to merge into existing ones"),
    ("unchanged", "unchanged", "unchanged"),
    (
        "kept",
        "kept (they hold GPS already; overwriting was not asked for)",
        "to keep (GPS already in them)",
    ),
    ("skipped", "not wanted (EXIF GPS, or not located)", "not wanted (EXIF GPS, or not located)"),
    ("failed", "failed", "failed"),
)


def sidecar_summary(counts: Mapping[str, int], *, dry_run: bool = False) -> str:
    """One line saying what happened to the sidecars of a scan (or would, ``dry_run``)."""
    parts = [
        f"{counts[key]} {planned if dry_run else done}"
        for key, done, planned in _SUMMARY_WORDS
        if counts.get(key)
    ]
    head = "XMP sidecars (dry run, nothing written): " if dry_run else "XMP sidecars: "
    text = head + (", ".join(parts) if parts else "none (no photo was located)")
    n = counts.get("reviewed", 0)
    if n:
        # Among the written and merged ones, not beside them.
        will = "will hold" if dry_run else ("holds" if n == 1 else "hold")
        text += f"; {n} {will} {'a position' if n == 1 else 'positions'} a person set"
    return text
