"""A map as one self-contained HTML file: Leaflet, the basemap and the data inline.

The page opens from a file, a mail attachment or a USB stick with no network: Leaflet
1.9 and Leaflet.markercluster come from the xstatic-leaflet packages (BSD-2-Clause and
MIT), their CSS images are inlined as data: URIs, the world is Natural Earth's countries
(:mod:`.basemap`). Online tiles (OpenStreetMap) are added only with ``tiles=True``.

Three JSON blocks carry the data: ``#geoguess-data`` (``application/geo+json``, the
same FeatureCollection as ``--format geojson``), ``#geoguess-view`` (spread circles,
heat cells, thumbnails, legend) and ``#geoguess-basemap``.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

from .basemap import countries
from .view import MapView

__all__ = ["render_html"]


def _xstatic(package: str, name: str) -> bytes:
    return (importlib.resources.files(f"xstatic.pkg.{package}") / "data" / name).read_bytes()


@functools.cache
def _leaflet() -> tuple[str, str]:
    """Leaflet's and the cluster plugin's JavaScript and CSS, CSS images inlined."""

    def inline(match: re.Match[str]) -> str:
        image = _xstatic("leaflet", match.group(1))
        return "url(data:image/png;base64," + base64.b64encode(image).decode("ascii") + ")"

    css = _xstatic("leaflet", "leaflet.css").decode("utf-8")
    css = re.sub(r"url\((images/[A-Za-z0-9_.-]+\.png)\)", inline, css)
    css += _xstatic("leaflet_markercluster", "MarkerCluster.css").decode("utf-8")
    css += _xstatic("leaflet_markercluster", "MarkerCluster.Default.css").decode("utf-8")
    js = _xstatic("leaflet", "leaflet.js").decode("utf-8")
    js += "\n" + _xstatic("leaflet_markercluster", "leaflet.markercluster.js").decode("utf-8")
    # A source-map comment would make a browser's developer tools ask the network.
    js = re.sub(r"//# sourceMappingURL=\S+", "", js)
    return js, css


def _own(name: str) -> str:
    return (importlib.resources.files("geoguess.maps") / name).read_text(encoding="utf-8")


def _script_json(obj: Any) -> str:
    # "<" escaped everywhere, so no string in the data (a file name "</script>.jpg")
    # can close the block; \u003c is the same character to a JSON parser.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


_STYLE = """
html, body { margin: 0; height: 100%; font: 13px/1.4 system-ui, sans-serif; }
#map { position: absolute; inset: 0; background: #c9dced; }
.gg-popup { max-width: 220px; } .gg-popup img { display: block; max-width: 200px; margin: 4px 0; }
.gg-file { font-weight: 600; word-break: break-all; }
.gg-legend { background: rgba(255,255,255,.92); padding: 6px 8px; border-radius: 4px;
  box-shadow: 0 1px 4px rgba(0,0,0,.3); max-width: 320px; }
.gg-title { font-weight: 600; margin-bottom: 2px; word-break: break-all; }
.gg-warning { color: #b10026; font-weight: 600; }
.gg-note { color: #555; }
.gg-dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  margin-right: 5px; border: 1px solid #333; vertical-align: -1px; }
.gg-photo span { display: block; width: 12px; height: 12px; border-radius: 50%;
  border: 1px solid #222; box-shadow: 0 0 2px #fff; }
.gg-reviewed span, .gg-square { border-radius: 1px; border: 2px solid #000; }
"""


def render_html(view: MapView) -> str:
    """The whole page for ``view``, as text."""
    js, css = _leaflet()
    title = html.escape(view.title)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="geoguess">\n'
        f"<title>{title} - geoguess</title>\n"
        f"<style>{css}</style>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        '<div id="map" role="application" aria-label="map"></div>\n'
        '<script type="application/geo+json" id="geoguess-data">'
        f"{_script_json(view.data)}</script>\n"
        f'<script type="application/json" id="geoguess-view">{_script_json(view.to_dict())}'
        "</script>\n"
        f'<script type="application/json" id="geoguess-basemap">{_script_json(countries())}'
        "</script>\n"
        f"<script>{js}</script>\n<script>{_own('page.js')}</script>\n</body>\n</html>\n"
    )


def read_data(page: str | Path) -> dict[str, Any]:
    """The GeoJSON a page made by :func:`render_html` embeds (for programs reading maps)."""
    text = Path(page).read_text(encoding="utf-8") if isinstance(page, Path) else page
    found = re.search(
        r'<script type="application/geo\+json" id="geoguess-data">(.*?)</script>', text, re.S
    )
    if found is None:
        raise ValueError("no geoguess-data block in this page")
    return json.loads(found.group(1))
