"""Headless Chromium for the map tests: load a page with the network cut off and read
what its scripts found (counts, errors, resources), or take a screenshot.

Chromium is the Debian package (.ci/run installs it); a missing one fails the tests
that need it.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# A script the test adds to a copy of the page: every resource the page asked for.
_RESOURCES = (
    "<script>window.addEventListener('load',function(){document.documentElement.dataset"
    ".ggResources=JSON.stringify(performance.getEntriesByType('resource').map(function(e)"
    "{return e.name}))})</script>"
)


def browse(page: Path, tmp_path: Path, screenshot: Path | None = None) -> dict:
    """Load ``page`` in headless Chromium with every network request sent to a dead
    proxy; returns the page's data-gg-* attributes after its scripts ran."""
    if CHROMIUM is None:
        pytest.fail("chromium not found: apt-get install chromium", pytrace=False)
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _RESOURCES + "</body>"))
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-extensions",
        "--window-size=1200,800",
        "--virtual-time-budget=8000",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    if screenshot is not None:
        subprocess.run(
            [*base, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120
        )
    attrs = {
        k: json.loads(v.replace("&quot;", '"').replace("&amp;", "&"))
        for k, v in re.findall(r'data-gg-([a-z]+)="([^"]*)"', dom)
        if k != "ready"
    }
    attrs["ready"] = 'data-gg-ready="1"' in dom
    attrs["dom"] = dom
    return attrs


def assert_not_blank(png: Path | bytes, min_colours: int = 50) -> None:
    image = Image.open(io.BytesIO(png) if isinstance(png, bytes) else png).convert("RGB")
    pixels = np.asarray(image)
    assert pixels.std() > 10
    assert len(image.getcolors(1 << 24)) >= min_colours
