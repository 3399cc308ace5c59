"""The ``geoguess`` command line: parses arguments, calls the library, prints.

One module per command group; each registers its commands on the shared app when
imported. Heavy modules (numpy, onnxruntime, torch) are imported inside the commands
so that ``geoguess --help`` and ``--version`` start fast.
"""

from __future__ import annotations

import sys

from ..errors import InputError
from . import bench, evaluate, galleries, locate, maps, models, scan, xmp  # noqa: F401  (registers commands)
from .common import EXIT_SOME_FAILED, _err, app

__all__ = ["app", "main"]


def main() -> None:
    from ..output import tolerate_any_text

    tolerate_any_text(sys.stdout, sys.stderr)
    try:
        app()
    except InputError as exc:  # pragma: no cover - commands catch these themselves
        _err(str(exc))
        sys.exit(EXIT_SOME_FAILED)
