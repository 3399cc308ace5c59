"""Damage as the disk does it, for the integrity tests."""

from __future__ import annotations

import os
from pathlib import Path


def flip_byte(path: Path, offset: int = -50, mask: int = 0x5A) -> None:
    """Change one byte and put the timestamps back, as bit rot would leave them."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
