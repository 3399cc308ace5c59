"""A map as a PNG picture, drawn with Pillow on the same basemap as the HTML page.

Plate carrée around what the view shows, with longitude stretched by the cosine of the
middle latitude so that shapes look right near the centre; drawn at twice the size and
downscaled, which smooths the edges.
"""

from __future__ import annotations

import io
import math
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .basemap import ATTRIBUTION, rings
from .view import ERROR_CLASSES, NO_GPS_COLOUR, MapView, error_colour

__all__ = ["render_png"]

WIDTH, HEIGHT = 1200, 800
_SS = 2  # supersampling factor
_OCEAN = (201, 220, 237)
_LAND = (243, 240, 230)
_BORDER = (154, 154, 140)
#: Smallest height of the view in degrees of latitude: a city-level guess still shows
#: its surroundings.
_MIN_SPAN_DEG = 3.0


class _Frame:
    """Maps (lat, lon) to pixels for the box around the view's points."""

    def __init__(self, points: list[tuple[float, float]], width: int, height: int) -> None:
        if points:
            lats = [p[0] for p in points]
            lons = [p[1] for p in points]
            south, north = min(lats), max(lats)
            west, east = min(lons), max(lons)
        else:
            south, north, west, east = -60.0, 80.0, -180.0, 180.0
        mid = (south + north) / 2
        self.kx = max(math.cos(math.radians(max(-80.0, min(80.0, mid)))), 0.2)
        lat_span = max(north - south, _MIN_SPAN_DEG) * 1.3
        lon_span = max(east - west, _MIN_SPAN_DEG) * 1.3
        # Fit both spans into the picture keeping the (stretched) aspect ratio.
        scale = min(width / (lon_span * self.kx), height / lat_span)
        scale = min(scale, width / (360 * self.kx) * 8 if lon_span > 360 else scale)
        self.scale = scale
        self.cx, self.cy = (west + east) / 2, mid
        self.width, self.height = width, height

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (
            self.width / 2 + (lon - self.cx) * self.kx * self.scale,
            self.height / 2 - (lat - self.cy) * self.scale,
        )

    def lon_window(self) -> tuple[float, float]:
        half = self.width / 2 / (self.kx * self.scale)
        return self.cx - half, self.cx + half


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _hex(colour: str, alpha: int = 255) -> tuple[int, int, int, int]:
    colour = colour.lstrip("#")
    return (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16), alpha)


def _basemap(draw: ImageDraw.ImageDraw, frame: _Frame) -> None:
    west, east = frame.lon_window()
    for ring in rings():
        lons = [p[0] for p in ring]
        for shift in (-360.0, 0.0, 360.0):
            if max(lons) + shift < west or min(lons) + shift > east:
                continue
            pts = [frame.xy(lat, lon + shift) for lon, lat in ring]
            if len(pts) >= 3:
                draw.polygon(pts, fill=_LAND, outline=_BORDER, width=_SS)


def _heat(overlay: ImageDraw.ImageDraw, frame: _Frame, cells: list[list[float]]) -> None:
    if not cells:
        return
    top = cells[0][3]
    for south, west, size, mass in cells:
        share = math.sqrt(mass / top)
        x0, y1 = frame.xy(south, west)
        x1, y0 = frame.xy(south + size, west + size)
        overlay.rectangle([x0, y0, x1, y1], fill=(215, 48, 31, int(255 * (0.08 + 0.6 * share))))


def _dot(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], r: float, fill: Any, outline: Any
) -> None:
    x, y = xy
    draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=outline, width=_SS)


def _legend(draw: ImageDraw.ImageDraw, view: MapView, lines: list[tuple[str, Any]]) -> None:
    """A box at the bottom left: title, warning, then one dot and text per line."""
    font = _font(13 * _SS)
    pad, step = 8 * _SS, 18 * _SS
    black = (0, 0, 0, 255)
    rows: list[tuple[str, Any, Any, Any]] = [(view.title, None, black, _font(15 * _SS))]
    if view.random_weights:
        rows.append(("Random test weights: not a geolocation", None, (177, 0, 38, 255), font))
    rows += [(text, colour, black, font) for text, colour in lines]
    rows += [(note, None, (85, 85, 85, 255), font) for note in view.notes]
    width = max(draw.textlength(t, font=f) + (16 * _SS if d else 0) for t, d, _, f in rows)
    width += 2 * pad
    height = step * len(rows) + 2 * pad
    top = HEIGHT * _SS - height - pad
    draw.rectangle([pad, top, pad + width, top + height], fill=(255, 255, 255, 235))
    y = top + pad
    for text, dot, colour, f in rows:
        x = 2 * pad
        if dot is not None:
            _dot(draw, (x + 5 * _SS, y + 8 * _SS), 5 * _SS, dot, (40, 40, 40, 255))
            x += 16 * _SS
        draw.text((x, y), text, fill=colour, font=f)
        y += step
    credit = f"Basemap: {ATTRIBUTION} - geoguess"
    cw = draw.textlength(credit, font=font)
    draw.text(
        (WIDTH * _SS - cw - pad, HEIGHT * _SS - step), credit, fill=(60, 60, 60, 255), font=font
    )


class _Labels:
    """Puts each label beside its dot (right, left, above or below) where it overlaps no
    label already placed; a label with no free side is left out, since candidates a
    few kilometres apart would otherwise print over one another."""

    def __init__(self, draw: ImageDraw.ImageDraw, font: Any, width: int, height: int) -> None:
        self.draw, self.font, self.size = draw, font, (width, height)
        self.taken: list[tuple[float, float, float, float]] = []

    def place(self, xy: tuple[float, float], r: float, text: str, fill: Any) -> bool:
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        tw, th = right - left, bottom - top
        gap = 3 * _SS
        x, y = xy
        for ox, oy in (
            (x + r + gap, y - th / 2),
            (x - r - gap - tw, y - th / 2),
            (x - tw / 2, y - r - gap - th),
            (x - tw / 2, y + r + gap),
        ):
            box = (ox, oy, ox + tw, oy + th)
            inside = (
                box[0] >= 0 and box[1] >= 0 and box[2] <= self.size[0] and box[3] <= self.size[1]
            )
            if inside and not any(_overlap(box, t) for t in self.taken):
                self.taken.append(box)
                self.draw.text((ox - left, oy - top), text, fill=fill, font=self.font)
                return True
        return False


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def render_png(view: MapView) -> bytes:
    """The picture of ``view`` as PNG bytes."""
    w, h = WIDTH * _SS, HEIGHT * _SS
    frame = _Frame(view.points(), w, h)
    image = Image.new("RGBA", (w, h), (*_OCEAN, 255))
    draw = ImageDraw.Draw(image)
    _basemap(draw, frame)
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    odraw = ImageDraw.Draw(overlay)
    _heat(odraw, frame, view.heat)
    image.alpha_composite(overlay)
    draw = ImageDraw.Draw(image)
    font = _font(13 * _SS)
    for circle in view.circles:
        colour = (178, 24, 43, 255) if circle["level"] <= 0.5 else (239, 138, 98, 255)
        pts = [frame.xy(lat, lon) for lat, lon in circle["ring"]]
        draw.line(pts, fill=colour, width=2 * _SS)
    legend: list[tuple[str, Any]] = []
    best: dict[str, tuple[float, float]] = {}
    features = view.data["features"]
    if view.kind == "scan":
        reviewed = 0
        for f in features:
            if not f.get("geometry"):
                continue
            p = f["properties"]
            lon, lat = f["geometry"]["coordinates"]
            if p.get("exif_lat") is not None:
                draw.line(
                    [frame.xy(lat, lon), frame.xy(p["exif_lat"], p["exif_lon"])],
                    fill=_hex(error_colour(p.get("error_km")), 180),
                    width=_SS,
                )
            fill = _hex(error_colour(p.get("error_km")))
            if p.get("reviewed"):
                # A position a person set is a square, as on the HTML map.
                reviewed += 1
                x, y = frame.xy(lat, lon)
                r = 6 * _SS
                draw.rectangle(
                    [x - r, y - r, x + r, y + r], fill=fill, outline=(0, 0, 0, 255), width=2 * _SS
                )
            else:
                _dot(draw, frame.xy(lat, lon), 6 * _SS, fill, (30, 30, 30, 255))
        legend = [(f"error {label}", _hex(colour)) for _, colour, label in ERROR_CLASSES]
        legend.append(("no EXIF GPS", _hex(NO_GPS_COLOUR)))
        if reviewed:
            legend.append((f"square: position set by a person ({reviewed})", None))
    else:
        # Labels go on after every dot, best first, where they hide no other label.
        labels: list[tuple[int, tuple[float, float], float, str]] = []
        placer = _Labels(draw, font, w, h)
        for f in sorted(features, key=lambda f: -(f["properties"].get("rank") or 0)):
            p = f["properties"]
            if p.get("kind") != "candidate":
                continue
            lon, lat = f["geometry"]["coordinates"]
            xy = frame.xy(lat, lon)
            r = (5 + 25 * math.sqrt(p["probability"])) * _SS
            fill = (203, 24, 29, 200) if p["rank"] == 1 else (251, 106, 74, 190)
            _dot(draw, xy, r, fill, (103, 0, 13, 255))
            labels.append((p["rank"], xy, r, f"#{p['rank']} {100 * p['probability']:.1f}%"))
            if p["rank"] == 1:
                best[p["file"]] = xy
        for f in features:
            p = f["properties"]
            if p.get("kind") != "exif_gps":
                continue
            lon, lat = f["geometry"]["coordinates"]
            xy = frame.xy(lat, lon)
            if p["file"] in best:
                draw.line([best[p["file"]], xy], fill=(8, 48, 107, 255), width=2 * _SS)
            _dot(draw, xy, 7 * _SS, (66, 146, 198, 255), (8, 48, 107, 255))
            if p.get("error_km") is not None:
                placer.place(xy, 7 * _SS, f"EXIF GPS, {p['error_km']:.0f} km", (8, 48, 107, 255))
        for _, xy, r, text in sorted(labels, key=lambda item: item[0]):
            placer.place(xy, r, text, (60, 0, 0, 255))
        legend = [("candidates, sized by probability", (203, 24, 29, 255))]
        if view.circles:
            legend.append(("rings: 50% and 90% of the probability", (178, 24, 43, 255)))
        if any(f["properties"].get("kind") == "exif_gps" for f in features):
            legend.append(("the photo's EXIF GPS", (66, 146, 198, 255)))
    _legend(draw, view, legend)
    small = image.convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
