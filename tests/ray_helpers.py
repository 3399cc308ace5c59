"""What the Ray tests share: a local Ray of two CPUs, and a folder of photo copies."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def local_ray(ray: Any) -> Iterator[None]:
    """Body of a module-scoped fixture: Ray on this machine, two CPUs, quiet."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def photo_copies(root: Path, photos_dir: Path, copies: int) -> Path:
    """The real photos under ``root/orig``, ``copies`` hard links to each in subfolders,
    and two broken files (``text.jpg``, ``empty.png``)."""
    (root / "orig").mkdir()
    for photo in sorted(photos_dir.iterdir()):
        if photo.name != "MANIFEST.csv":
            (root / "orig" / photo.name).write_bytes(photo.read_bytes())
    for i in range(copies):
        sub = root / f"copy{i:02d}"
        sub.mkdir()
        for photo in (root / "orig").iterdir():
            os.link(photo, sub / photo.name)
    (root / "text.jpg").write_text("this is not a photo\n")
    (root / "empty.png").write_bytes(b"")
    return root
