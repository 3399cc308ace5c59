"""Files that must give an error row quickly and cheaply (issue 12, problems 2, 3, 6-8).

FIFOs and devices named like photos, strips of 20,000 x 1 pixels, truncated HEIC and
AVIF, folders that cannot be listed, and the formats that must be read (AVIF, JPEG XL).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoguess.errors import ImageError
from geoguess.images import MAX_ASPECT_RATIO, SUPPORTED_SUFFIXES, load_image

posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs and /dev/zero are POSIX")


def _pixels(h: int = 48, w: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _error(path: Path | bytes) -> str:
    with pytest.raises(ImageError) as info:
        load_image(path)
    return str(info.value)


@posix_only
def test_fifo_named_jpg_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    # No writer ever opens it: reading would wait for ever.
    assert _error(fifo) == f"{fifo}: is a named pipe (FIFO), not a regular file"


@posix_only
def test_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    assert "is a character device, not a regular file" in _error(link)


@posix_only
def test_scan_with_a_fifo_and_dev_zero_ends_with_rows_for_all(
    tiny_home: Path, photos_dir: Path, tmp_path: Path
) -> None:
    """The whole scan, in a child process under a time limit and with its peak RSS read."""
    folder = tmp_path / "photos"
    folder.mkdir()
    good = ["gps_DSCN0010.jpg", "es_Canon_40D.jpg"]
    for name in good:
        (folder / name).write_bytes((photos_dir / name).read_bytes())
    os.mkfifo(folder / "a.jpg")
    (folder / "b.jpg").symlink_to("/dev/zero")
    Image.new("RGB", (20000, 1)).save(folder / "strip.png")
    out = tmp_path / "out.csv"
    script = textwrap.dedent(
        """
        import resource, sys
        from geoguess.cli import main
        sys.argv = ["geoguess", "scan", sys.argv[1], "-o", sys.argv[2], "--batch-size", "4"]
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak_rss_mb={peak:.0f}", file=sys.stderr)
        sys.exit(code)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(out)],
        capture_output=True,
        text=True,
        timeout=120,  # a hang (the FIFO) fails here instead of stalling the suite
    )
    assert done.returncode == 1, done.stderr
    import csv

    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open(newline=""))}
    assert set(rows) == {*good, "a.jpg", "b.jpg", "strip.png"}
    assert all(not rows[n]["error"] for n in good)
    assert "named pipe" in rows["a.jpg"]["error"]
    assert "character device" in rows["b.jpg"]["error"]
    assert "strip rather than a photo" in rows["strip.png"]["error"]
    peak = int(done.stderr.rsplit("peak_rss_mb=", 1)[1].split()[0])
    print(f"scan with FIFO, /dev/zero and a 20000x1 strip: peak RSS {peak} MB")
    # Includes loading the tiny model set and, on a cold cache, ONNX Runtime optimising
    # its graph (measured 1.2 GB warm, 4.5 GB cold in the full suite); unbounded before.
    assert peak < 6000


def test_extreme_proportions_are_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    Image.new("RGB", (20000, 1)).save(path)
    assert path.stat().st_size < 1000
    message = _error(path)
    assert message == (
        f"{path}: image is 20000x1 pixels, a strip rather than a photo "
        f"(sides over {MAX_ASPECT_RATIO}:1 are refused)"
    )
    # A wide panorama is a photo.
    Image.new("RGB", (3600, 300)).save(path)
    assert load_image(path).size == (3600, 300)


def test_stdin_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoguess.images as images

    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ImageError, match="over the 0 MiB limit"):
        load_image(io.BytesIO(b"\xff" * 5000))


@pytest.mark.parametrize("fraction", [0.07, 0.5, 0.95, 0.999])
def test_truncated_heic_is_an_error(photos_dir: Path, fraction: float) -> None:
    data = (photos_dir / "es_IMG_5195.HEIC").read_bytes()
    cut = data[: int(len(data) * fraction)]
    with pytest.raises(ImageError, match="image file is truncated"):
        load_image(cut, name="cut.heic")


def test_whole_heic_still_decodes(photos_dir: Path) -> None:
    assert load_image(photos_dir / "es_IMG_5195.HEIC").size[0] > 0


def test_avif_is_read_and_a_truncated_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.avif"
    _pixels().save(path, quality=90)
    assert load_image(path).size == (64, 48)
    assert ".avif" in SUPPORTED_SUFFIXES
    data = path.read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2], name="cut.avif")


def test_jpeg_xl_is_read_with_the_plugin(tmp_path: Path) -> None:
    pytest.importorskip("pillow_jxl", reason="the [jxl] extra: pip install pillow-jxl-plugin")
    path = tmp_path / "photo.jxl"
    _pixels().save(path, lossless=True)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(_pixels()))


def _as_unprivileged(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with a user's powers: root lists folders whatever their mode, so
    as root the child runs without capabilities (setpriv, from util-linux)."""
    cmd = [sys.executable, "-c", script, *args]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@posix_only
def test_a_folder_that_cannot_be_listed_gets_an_error_row(photos_dir: Path) -> None:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="geoguess-unlistable-"))
    try:
        locked = root / "locked"
        locked.mkdir()
        for where in (root / "ok.jpg", locked / "unseen.jpg"):
            where.write_bytes((photos_dir / "gps_DSCN0010.jpg").read_bytes())
            where.chmod(0o644)
        locked.chmod(0)
        script = textwrap.dedent(
            """
            import sys
            from geoguess.scan import _prepare_safely, list_images
            listed = list_images(sys.argv[1])
            print("\\n".join(map(str, listed)))
            print(_prepare_safely(None, str(listed[0])).error)
            """
        )
        done = _as_unprivileged(script, str(root))
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        # The folder is listed where its photos would have been, and its row says why.
        assert lines[:2] == [str(locked), str(root / "ok.jpg")]
        assert lines[2] == (
            f"{locked}: cannot list folder (permission denied); photos in it were not scanned"
        )
        root_locked = _as_unprivileged(script, str(locked))
        assert root_locked.returncode == 1
        assert f"{locked}: cannot list folder (permission denied)" in root_locked.stderr
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)


# --- damaged files: one line naming the file, nothing on stderr (problem 9) -------------


def _lzw_tiff() -> bytearray:
    out = io.BytesIO()
    _pixels(200, 300).save(out, format="TIFF", compression="tiff_lzw")
    return bytearray(out.getvalue())


def test_damaged_lzw_tiff_is_named_and_libtiff_stays_quiet(
    capfd: pytest.CaptureFixture[str],
) -> None:
    data = _lzw_tiff()
    for i in np.random.default_rng(0).integers(200, len(data) - 2000, 30):
        data[i] ^= 0xFF
    with pytest.raises(ImageError) as info:
        load_image(bytes(data), name="bad.tif")
    assert (
        str(info.value) == "bad.tif: image data is damaged (libtiff: Using code not yet in table)"
    )
    err = capfd.readouterr().err
    assert "tempfile.tif" not in err


def test_truncated_tiff_and_webp_are_called_damaged_not_vague() -> None:
    data = _lzw_tiff()
    assert "truncated or damaged (it starts as a TIFF file)" in _error(
        bytes(data[: len(data) // 3])
    )
    out = io.BytesIO()
    _pixels().save(out, format="WEBP")
    webp = out.getvalue()
    message = _error(webp[: len(webp) // 2])
    assert "truncated or damaged" in message and "could not create decoder" not in message
