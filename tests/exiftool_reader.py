"""ExifTool, the reference reader of the sidecars geoguess writes.

It is the Debian package libimage-exiftool-perl (.ci/run installs it). A missing
exiftool fails the tests that use it: a sidecar only ever checked by its own writer
proves little.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

EXIFTOOL = shutil.which("exiftool")


def exiftool(*args: str | Path) -> dict:
    """ExifTool's reading of one file: ``-json -n -G1`` (numbers, group-qualified tags)."""
    if EXIFTOOL is None:
        pytest.fail("exiftool not found: apt-get install libimage-exiftool-perl", pytrace=False)
    out = subprocess.run(
        [EXIFTOOL, "-json", "-n", "-G1", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)[0]
