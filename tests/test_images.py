"""Decoding photos: formats, colour modes, orientation, size limits and broken inputs."""

from __future__ import annotations

import io
import os
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import manifest_params, photo

from geoguess.errors import ImageError, InputError
from geoguess.images import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    ensure_heif_opener,
    load_image,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
YELLOW, MAGENTA, CYAN = (255, 255, 0), (255, 0, 255), (0, 255, 255)
WHITE = (255, 255, 255)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def pixel(im: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return tuple(im.getpixel((x, y)))  # type: ignore[arg-type]


def assert_close(actual, expected, tolerance: int = 0) -> None:
    assert len(actual) == len(expected)
    pairs = zip(actual, expected, strict=True)
    assert all(abs(int(a) - int(e)) <= tolerance for a, e in pairs), (actual, expected)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and carries no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# Real photos --------------------------------------------------------------------------


@pytest.mark.parametrize("row", manifest_params())
def test_real_photo_decodes_upright(row: dict[str, str]) -> None:
    path = photo(row["file"])
    if row["file"] == "pillow_truncated_jpeg.jpg":
        with pytest.raises(ImageError) as caught:
            load_image(path)
        assert str(caught.value) == f"{path}: image file is truncated"
        return
    if path.suffix.lower() in {".heic", ".heif"}:
        assert ensure_heif_opener()
    with Image.open(path) as raw:
        raw_size = raw.size
    im = load_image(path)
    assert im.mode == "RGB"
    im.getpixel((0, 0))  # fully loaded: no file access left to fail later
    orientation = int(row["orientation"]) if row["orientation"] else 1
    expected = raw_size[::-1] if orientation >= 5 else raw_size
    assert im.size == expected


def test_real_orientation_6_rotates_clockwise() -> None:
    # The camera stored the picture lying on its side; upright it is landscape and the
    # pixel that was top-left ends up top-right.
    path = photo("orient_landscape_6.jpg")
    with Image.open(path) as raw:
        raw.load()
        top_left = pixel(raw.convert("RGB"), 0, 0)
        assert raw.size == (450, 600)
    im = load_image(path)
    assert im.size == (600, 450)
    assert_close(pixel(im, im.width - 1, 0), top_left, tolerance=2)


def test_truncated_photo_error_names_the_file() -> None:
    path = photo("pillow_truncated_jpeg.jpg")
    with pytest.raises(ImageError) as caught:
        load_image(path, name="holiday/broken.jpg")
    assert caught.value.path == "holiday/broken.jpg"
    assert str(caught.value) == "holiday/broken.jpg: image file is truncated"
    assert isinstance(caught.value, InputError)


def test_sixteen_bit_tiff_uses_full_range() -> None:
    # A DJI TIFF in I;16: clipping instead of scaling would make it nearly all white.
    im = load_image(photo("mei_Issue_555_1.tif"))
    values = np.asarray(im)
    assert im.size == (1600, 1300)
    assert 10 < values.mean() < 240
    assert values.min() < 30 and values.max() > 240


def test_transparent_tiff_is_composited_on_white() -> None:
    path = photo("es_DudleyLeavittUtah.tiff")
    with Image.open(path) as raw:
        assert raw.mode == "RGBA"
    assert pixel(load_image(path), 0, 0) == WHITE


def test_heic_photo_from_bytes() -> None:
    # No suffix to go by: the ftyp brand alone must get pillow-heif registered.
    data = photo("es_IMG_5195.HEIC").read_bytes()
    im = load_image(data)
    assert im.mode == "RGB"
    assert im.size == (2566, 3313)


def test_jpeg_draft_keeps_short_side_at_least_target() -> None:
    path = photo("mei_Apple_iPhone_5.jpg")
    full = load_image(path)
    small = load_image(path, target_size=224)
    assert full.size == (3264, 2448)
    assert small.size == (408, 306)  # libjpeg's 1/8 scale
    assert min(small.size) >= 224
    # Orientation 3 still applied: the draft is upside down like the full decode.
    reference = full.resize(small.size, Image.Resampling.BOX)
    difference = np.abs(np.asarray(reference, np.int16) - np.asarray(small, np.int16))
    assert difference.mean() < 8


# Orientation ----------------------------------------------------------------------------

# 2 rows x 3 columns of far-apart colours: every one of the 8 orientations gives a
# different arrangement, so a wrong transpose cannot go unnoticed.
GRID = np.array([[RED, GREEN, BLUE], [YELLOW, MAGENTA, CYAN]], dtype=np.uint8)
CELL = 16

# What a viewer shows for each EXIF orientation, written out from the EXIF spec rather
# than from the code under test.
UPRIGHT = {
    1: lambda g: g,
    2: lambda g: g[:, ::-1],  # mirrored left-right
    3: lambda g: g[::-1, ::-1],  # rotated 180
    4: lambda g: g[::-1, :],  # mirrored top-bottom
    5: lambda g: g.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda g: np.rot90(g, k=-1),  # rotated 90 clockwise
    7: lambda g: g[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the anti-diagonal
    8: lambda g: np.rot90(g, k=1),  # rotated 90 counter-clockwise
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(tmp_path: Path, orientation: int) -> None:
    stored = Image.fromarray(GRID.repeat(CELL, axis=0).repeat(CELL, axis=1))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"orientation_{orientation}.jpg"
    stored.save(path, "JPEG", exif=exif.tobytes(), quality=95, subsampling=0)

    im = load_image(path)

    expected = UPRIGHT[orientation](GRID)
    rows, cols = expected.shape[:2]
    assert im.size == (cols * CELL, rows * CELL)
    for r in range(rows):
        for c in range(cols):
            centre = pixel(im, c * CELL + CELL // 2, r * CELL + CELL // 2)
            assert_close(centre, tuple(expected[r, c]), tolerance=12)


# Colour modes and formats ---------------------------------------------------------------


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    im = load_image(path)
    assert im.mode == "RGB"
    assert_close(pixel(im, 16, 16), RED, tolerance=8)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (20, 10), 0)
    im.putpalette([0, 0, 0, *BLUE])
    im.paste(1, (10, 0, 20, 10))
    path = tmp_path / "palette.png"
    im.save(path, transparency=0)
    out = load_image(path)
    assert pixel(out, 2, 5) == WHITE  # transparent black shows as white, not black
    assert pixel(out, 15, 5) == BLUE


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (30, 10), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (10, 0, 20, 10))
    im.paste((0, 0, 0, 128), (20, 0, 30, 10))
    path = tmp_path / "rgba.png"
    im.save(path)
    out = load_image(path)
    assert out.mode == "RGB"
    assert pixel(out, 5, 5) == WHITE  # fully transparent: the hidden red must not show
    assert pixel(out, 15, 5) == BLUE
    assert_close(pixel(out, 25, 5), (127, 127, 127), tolerance=1)  # half black on white


def test_la_png_is_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("LA", (10, 10), (0, 0))
    im.paste((50, 255), (5, 0, 10, 10))
    path = tmp_path / "la.png"
    im.save(path)
    out = load_image(path)
    assert pixel(out, 2, 2) == WHITE
    assert pixel(out, 7, 2) == (50, 50, 50)


def test_sixteen_bit_grayscale_png_maps_full_range(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(1, 256).repeat(4, 0)
    path = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    out = np.asarray(load_image(path))
    assert out.shape == (4, 256, 3)
    gray = out[0, :, 0]
    assert (out[0, :, 1] == gray).all() and (out[0, :, 2] == gray).all()
    assert gray[0] == 0 and gray[-1] == 255
    assert (np.diff(gray.astype(int)) >= 0).all()
    assert gray[128] == 128  # 32896 / 257: scaled, where clipping would give 255


def test_float_tiff_in_unit_range(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values).save(path)
    gray = np.asarray(load_image(path))[0, :, 0]
    assert gray.tolist() == [0, 128, 255]


def test_thirty_two_bit_integer_is_stretched(tmp_path: Path) -> None:
    values = np.array([[-1000, 0, 1_000_000]], dtype=np.int32)
    path = tmp_path / "int32.tif"
    Image.fromarray(values).save(path)
    gray = np.asarray(load_image(path))[0, :, 0]
    assert gray[0] == 0 and gray[2] == 255


def test_one_bit_and_grayscale(tmp_path: Path) -> None:
    bilevel = Image.new("1", (8, 8), 0)
    bilevel.paste(1, (4, 0, 8, 8))
    path = tmp_path / "bilevel.png"
    bilevel.save(path)
    out = load_image(path)
    assert pixel(out, 1, 1) == (0, 0, 0) and pixel(out, 6, 1) == WHITE

    path = tmp_path / "gray.png"
    Image.new("L", (4, 4), 77).save(path)
    assert pixel(load_image(path), 0, 0) == (77, 77, 77)


def test_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), RED), Image.new("RGB", (10, 10), BLUE)]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as raw:
        assert raw.n_frames == 2
    assert pixel(load_image(path), 5, 5) == RED


@pytest.mark.parametrize(
    ("suffix", "params"),
    [
        (".bmp", {}),
        (".webp", {"lossless": True}),
        (".tiff", {}),
        (".png", {}),
    ],
)
def test_lossless_formats_keep_pixels(tmp_path: Path, suffix: str, params: dict) -> None:
    im = Image.fromarray(GRID.repeat(4, axis=0).repeat(4, axis=1))
    path = tmp_path / f"grid{suffix}"
    im.save(path, **params)
    out = load_image(path)
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(im))


def test_supported_suffixes() -> None:
    expected = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp"}
    expected |= {".heic", ".heif", ".bmp", ".gif"}
    assert expected <= SUPPORTED_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)


# Inputs other than paths ----------------------------------------------------------------


def test_bytes_and_stream_input() -> None:
    data = encode(Image.new("RGB", (6, 4), GREEN), "PNG")
    assert pixel(load_image(data), 0, 0) == GREEN
    assert load_image(io.BytesIO(data)).size == (6, 4)
    assert load_image(bytearray(data)).size == (6, 4)


def test_bytes_errors_are_named_stdin_or_given_name() -> None:
    with pytest.raises(ImageError) as caught:
        load_image(b"definitely not an image")
    assert str(caught.value) == "<stdin>: not an image file (cannot identify format)"
    with pytest.raises(ImageError) as caught:
        load_image(io.BytesIO(b""), name="upload.jpg")
    assert str(caught.value) == "upload.jpg: file is empty"


def test_text_stream_is_refused() -> None:
    with pytest.raises(ImageError, match="text stream"):
        load_image(io.StringIO("hello"))


# Size limits ------------------------------------------------------------------------------


def test_pixel_limit_from_header(tmp_path: Path) -> None:
    path = tmp_path / "claims_100mp.png"
    path.write_bytes(png_header(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak
        with pytest.raises(ImageError) as caught:
            load_image(path, max_pixels=50_000_000)
    assert str(caught.value) == (
        f"{path}: image is 10000x10000 pixels (100 MP), over the 50 MP limit"
    )


def test_huge_header_refused_without_leaking_pillow_errors() -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError) as caught:
            load_image(png_header(30_000, 30_000), name="bomb.png")
    assert str(caught.value) == "bomb.png: image is 900 MP, over the 120 MP limit"
    assert not isinstance(caught.value.__cause__, Image.DecompressionBombError)
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert DEFAULT_MAX_PIXELS == 120_000_000


def test_low_pixel_limit_on_real_pixels() -> None:
    data = encode(Image.new("RGB", (40, 30)), "PNG")
    with pytest.raises(ImageError, match=r"image is 40x30 pixels \(0.0012 MP\), over the"):
        load_image(data, max_pixels=1000)
    assert load_image(data, max_pixels=1200).size == (40, 30)
    assert load_image(data, max_pixels=None).size == (40, 30)


# Broken inputs ----------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value) == f"{path}: file is empty"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: eggs, milk\n")
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value) == f"{path}: not an image file (cannot identify format)"


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "icon.ico"
    Image.new("RGB", (16, 16)).save(path)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value) == f"{path}: unsupported image format (ICO)"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as caught:
        load_image(tmp_path / "nope.jpg")
    assert str(caught.value) == f"{tmp_path / 'nope.jpg'}: no such file"
    with pytest.raises(ImageError) as caught:
        load_image(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory"


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root and Windows ignore chmod 000"
)
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(encode(Image.new("RGB", (2, 2)), "PNG"))
    path.chmod(0)
    try:
        with pytest.raises(ImageError) as caught:
            load_image(path)
    finally:
        path.chmod(0o600)
    assert str(caught.value) == f"{path}: permission denied"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_synthetic(tmp_path: Path, fmt: str) -> None:
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value) == f"{path}: image file is truncated"


def test_messages_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\xff" * 40)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_file_handles_are_closed(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    big = tmp_path / "big.png"
    big.write_bytes(png_header(10_000, 10_000))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:40])

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    for _ in range(5):
        load_image(good)
        for path in (bad, big, cut):
            with pytest.raises(ImageError):
                load_image(path, max_pixels=1000)
    assert open_files() == before


def test_corrupt_exif_is_ignored_quietly() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    good = encode(Image.new("RGB", (20, 10), RED), "JPEG", exif=exif.tobytes())
    start = good.index(b"Exif\x00\x00")
    corrupt = good[: start + 14] + b"\xff" * 30 + good[start + 44 :]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        im = load_image(corrupt)
    assert [str(w.message) for w in caught] == []
    assert im.size == (20, 10)  # orientation unreadable: left as stored
    assert_close(pixel(im, 5, 5), RED, tolerance=8)
