"""Decode photos into upright RGB Pillow images ready for CLIP preprocessing.

Every way a photo can fail to decode (missing, empty, truncated, not an image, too
large, unsupported) ends in one :class:`~geoguess.errors.ImageError` whose message
names the input, so a batch run can report it on one line and go on.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image, UnidentifiedImageError

from geoguess.errors import ImageError, one_line, os_reason

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "ImageSource",
    "ensure_heif_opener",
    "load_image",
    "open_regular_file",
    "opened_image",
    "quiet_pillow",
    "read_stream",
]

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",
        ".png",
        ".tif", ".tiff",
        ".webp",
        ".heic", ".heif", ".hif",
        ".avif",
        ".jxl",
        ".bmp",
        ".gif",
    }
)  # fmt: skip

#: Largest image (width x height) load_image decodes unless told otherwise. Big enough
#: for any camera or stitched phone panorama, small enough that a hostile header cannot
#: make us allocate gigabytes (120 MP of RGB is 360 MB).
DEFAULT_MAX_PIXELS = 120_000_000

#: Largest file (or stdin stream) read. Far above any camera file, even a 120 MP 16-bit
#: uncompressed TIFF (720 MB); below it, the pixel limit bounds memory.
MAX_FILE_BYTES = 1 << 30

#: Longest side over shortest side accepted. Stitched 360-degree panoramas reach about
#: 12:1; beyond this an image is a strip, not a photo of a place.
MAX_ASPECT_RATIO = 100

#: What load_image accepts: a path, the raw bytes of a file, or a binary stream (stdin).
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

STDIN_NAME = "<stdin>"

# Pillow format names we decode. Restricting Image.open to these keeps Pillow's rarely
# used (and less hardened) plugins away from untrusted input. JPEGs with a multi-picture
# extension (many phones and cameras) open through "JPEG" and come back as "MPO".
_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF", "AVIF")
_HEIF_FORMAT = "HEIF"
_JXL_FORMAT = "JXL"
_HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
_JXL_SUFFIXES = frozenset({".jxl"})
# A bare JPEG XL codestream, and the ISO-BMFF container's signature box.
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")
# The ISO-BMFF brands pillow-heif accepts: lets HEIC arriving on stdin, or misnamed as
# .jpg, be recognised without importing pillow-heif for every other photo.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_WHITE = (255, 255, 255)

# Same mapping as PIL.ImageOps.exif_transpose. We apply it ourselves because the
# orientation must be read before the mode conversion (converting a TIFF drops the
# tag-based EXIF it comes from) and we have no use for the rewritten EXIF block that
# exif_transpose builds for every image.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_heif_lock = threading.Lock()
_heif_available: bool | None = None
_jxl_available: bool | None = None


def ensure_heif_opener() -> bool:
    """Register pillow-heif with Pillow on first use; return whether HEIC can be opened.

    Importing pillow-heif costs tens of milliseconds and loads libheif, so it is only
    done when a HEIC/HEIF file actually shows up.
    """
    global _heif_available
    if _heif_available is None:
        with _heif_lock:
            if _heif_available is None:
                try:
                    from pillow_heif import register_heif_opener
                except ImportError:
                    _heif_available = False
                else:
                    register_heif_opener()
                    _heif_available = True
    return _heif_available


def ensure_jxl_opener() -> bool:
    """Register the JPEG XL plugin (``pillow-jxl-plugin``, the ``[jxl]`` extra) on first
    use; return whether JPEG XL can be opened."""
    global _jxl_available
    if _jxl_available is None:
        with _heif_lock:
            if _jxl_available is None:
                try:
                    import pillow_jxl  # noqa: F401 - registers the JXL format on import
                except ImportError:
                    _jxl_available = False
                else:
                    _jxl_available = True
    return _jxl_available


def default_name(source: ImageSource) -> str:
    """How an input is named in messages when the caller gives no name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    return STDIN_NAME


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
) -> Image.Image:
    """Decode a photo into a fully loaded, upright RGB image.

    ``source`` is a path, the raw bytes of an image file, or a binary stream (read to
    the end). ``name`` is what error messages call the input (default: the path, or
    ``<stdin>``). Images over ``max_pixels`` (width x height, checked from the header
    before anything is decoded) are refused; ``None`` leaves only Pillow's own
    decompression-bomb limit. ``target_size`` lets JPEGs decode at a reduced scale
    whose short side is still at least that many pixels.

    Raises :class:`ImageError` for anything that stops the photo being decoded.
    """
    label = name if name is not None else default_name(source)
    if target_size is not None and target_size < 1:
        raise ValueError(f"target_size must be positive, got {target_size}")
    with opened_image(source, name=label, max_pixels=max_pixels) as im:
        width, height = im.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageError(label, _too_large(width * height, max_pixels, (width, height)))
        if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ImageError(
                label,
                f"image is {width}x{height} pixels, a strip rather than a photo "
                f"(sides over {MAX_ASPECT_RATIO}:1 are refused)",
            )
        if target_size is not None and im.format in _JPEG_FORMATS:
            # libjpeg can decode straight to 1/2, 1/4 or 1/8 scale (DCT scaling), which
            # makes a 24 MP JPEG decode several times faster and with an eighth of the
            # memory. CLIP only ever sees a 224 px short side, so decoding more detail
            # than target_size on the short side is wasted work. Pillow picks the
            # largest reduction that keeps both sides >= the requested size. It is not
            # the default because callers wanting full-resolution pixels must get them.
            im.draft("RGB", (target_size, target_size))
        orientation = _orientation(im)
        _decode(im, label, max_pixels)
        rgb = _to_rgb(im, label)
    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    return rgb.transpose(transpose) if transpose is not None else rgb


@contextmanager
def opened_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int | None = None
) -> Iterator[Image.Image]:
    """Open ``source`` with Pillow without decoding pixels; close the file on exit.

    Only the formats geoguess supports are tried. ``max_pixels`` is only used to word
    the error when Pillow itself refuses a decompression bomb. The EXIF reader uses
    this too, so every input fails the same way whichever module touches it first.
    """
    label = name if name is not None else default_name(source)
    fp, suffix = _open_source(source, label)
    try:
        try:
            header = fp.read(16)
            fp.seek(0)
        except OSError as exc:
            raise ImageError(label, f"cannot read file ({os_reason(exc)})") from None
        if not header:
            raise ImageError(label, "file is empty")
        wants_heif = suffix in _HEIF_SUFFIXES or _looks_like_heif(header)
        if wants_heif and not ensure_heif_opener():
            raise ImageError(label, "HEIC/HEIF photos need the pillow-heif package")
        wants_jxl = suffix in _JXL_SUFFIXES or header.startswith(_JXL_SIGNATURES)
        if wants_jxl and not ensure_jxl_opener():
            raise ImageError(
                label,
                "JPEG XL photos need the pillow-jxl-plugin package: pip install 'geoguess[jxl]'",
            )
        if _is_bmff(header):
            # libheif and libavif decode what they have of a file cut short and fill the
            # rest (often solid green) without an error; the boxes' sizes tell.
            _check_boxes(fp, label)
        formats = (
            _FORMATS
            + ((_HEIF_FORMAT,) if _heif_available else ())
            + ((_JXL_FORMAT,) if _jxl_available else ())
        )
        try:
            with quiet_pillow():
                im = Image.open(fp, formats=formats)
        except Image.DecompressionBombError as exc:
            raise ImageError(label, _too_large(_pixels_from_pillow(exc), max_pixels)) from None
        except UnidentifiedImageError:
            raise ImageError(label, _identify_problem(fp)) from None
        except Exception as exc:  # plugins parse untrusted bytes and raise anything
            raise ImageError(label, _decode_problem(exc, "cannot read image header")) from None
        yield im
    finally:
        # Image.open never closes a file object it was handed; the returned image is
        # fully loaded by then and no longer needs it.
        fp.close()


def _open_source(source: ImageSource, label: str) -> tuple[BinaryIO, str]:
    """Return a seekable binary file for ``source`` and its lower-case suffix."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), ""
    if isinstance(source, (str, os.PathLike)):
        return open_regular_file(Path(source), label), Path(source).suffix.lower()
    if getattr(source, "read", None) is None:
        raise TypeError(f"cannot load an image from {type(source).__name__}")
    return io.BytesIO(read_stream(source, label)), ""


def read_stream(stream: BinaryIO, label: str = STDIN_NAME) -> bytes:
    """All of a binary stream (stdin), up to :data:`MAX_FILE_BYTES`; ImageError beyond."""
    try:
        data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImageError(label, f"cannot read input ({os_reason(exc)})") from None
    if not isinstance(data, (bytes, bytearray)):
        raise ImageError(label, "input is a text stream; binary image data is needed")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(label, f"input is over the {MAX_FILE_BYTES >> 20} MiB limit")
    return bytes(data)


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode is not decoded, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    # Reading one can block for ever (a FIFO) or never end (/dev/zero).
    return f"is {kind}, not a regular file"


def open_regular_file(path: Path, label: str) -> BinaryIO:
    """Open a regular file for reading; ImageError naming ``label`` for anything else
    (FIFOs, devices, folders, files over :data:`MAX_FILE_BYTES`), before reading it."""
    try:
        problem = _not_regular(os.stat(path).st_mode)
    except FileNotFoundError:
        # A dangling symlink stats as missing too.
        raise ImageError(label, "no such file") from None
    except PermissionError:
        raise ImageError(label, "permission denied") from None
    except OSError as exc:
        raise ImageError(label, f"cannot read file ({os_reason(exc)})") from None
    if problem:
        raise ImageError(label, problem)
    # O_NONBLOCK: should the file be swapped for a FIFO after the check, opening it must
    # not wait for a writer; the fstat below then refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(label, "no such file") from None
    except IsADirectoryError:
        raise ImageError(label, "is a directory") from None
    except PermissionError:
        # Windows reports a directory as a permission problem.
        problem = "is a directory" if path.is_dir() else "permission denied"
        raise ImageError(label, problem) from None
    except OSError as exc:
        raise ImageError(label, f"cannot read file ({os_reason(exc)})") from None
    try:
        st = os.fstat(fd)
        problem = _not_regular(st.st_mode)
        if problem is None and st.st_size > MAX_FILE_BYTES:
            size = f"{st.st_size / 2**30:.1f} GiB"
            problem = f"file is {size}, over the {MAX_FILE_BYTES >> 30} GiB limit"
        if problem:
            raise ImageError(label, problem)
        return os.fdopen(fd, "rb")
    except ImageError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise ImageError(label, f"cannot read file ({os_reason(exc)})") from None


def _is_bmff(header: bytes) -> bool:
    return header[4:8] == b"ftyp"


def _check_boxes(fp: BinaryIO, label: str) -> None:
    """Refuse an ISO-BMFF file (HEIC, AVIF) whose top-level boxes run past its end."""
    import struct

    fp.seek(0, os.SEEK_END)
    end = fp.tell()
    offset = 0
    while offset < end:
        fp.seek(offset)
        head = fp.read(16)
        if len(head) < 8:
            break
        size = struct.unpack(">I", head[:4])[0]
        if size == 1 and len(head) == 16:
            size = struct.unpack(">Q", head[8:16])[0]
        if size == 0:  # the last box runs to the end of the file
            break
        if size < 8 or offset + size > end:
            fp.seek(0)
            have = end / (offset + size) if size >= 8 else 0.0
            raise ImageError(
                label,
                "image file is truncated"
                + (f" ({have:.0%} of its declared size is there)" if size >= 8 else ""),
            )
        offset += size
    fp.seek(0)


def _looks_like_heif(header: bytes) -> bool:
    return header[4:8] == b"ftyp" and header[8:12] in _HEIF_BRANDS


def _identify_problem(fp: BinaryIO) -> str:
    """Tell "some image Pillow knows but we do not accept" from "not an image"."""
    try:
        fp.seek(0)
        with quiet_pillow(), Image.open(fp) as other:
            found = other.format
    except Exception:  # any failure here just means "unknown format"
        found = None
    if found:
        return f"unsupported image format ({found})"
    fp.seek(0)
    header = fp.read(16)
    claimed = next((name for sig, name in _SIGNATURES if header.startswith(sig)), None)
    if claimed == "WebP" and header[8:12] != b"WEBP":
        claimed = None
    if claimed:
        return f"image file is truncated or damaged (it starts as a {claimed} file)"
    return "not an image file (cannot identify format)"


# How files of the supported formats start: a file that starts so but cannot be opened
# is damaged, not "not an image".
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WebP"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


def _decode(im: Image.Image, label: str, max_pixels: int | None) -> None:
    libtiff: list[str] = []
    try:
        with quiet_pillow(), _libtiff_messages(libtiff, im.format == "TIFF"):
            im.load()
    except Image.DecompressionBombError as exc:
        # GIF and TIFF check frame/tile sizes again while decoding.
        raise ImageError(label, _too_large(_pixels_from_pillow(exc), max_pixels)) from None
    except MemoryError:
        raise ImageError(label, "not enough memory to decode the image") from None
    except Exception as exc:  # decoders raise anything on corrupt input
        problem = _decode_problem(exc, "cannot decode image")
        if libtiff:
            problem = f"image data is damaged (libtiff: {'; '.join(libtiff)})"
        raise ImageError(label, problem) from None
    if libtiff:
        # libtiff reports damage it decoded past: the pixels are not the photo's.
        raise ImageError(label, f"image data is damaged (libtiff: {'; '.join(libtiff)})")


_stderr_lock = threading.Lock()
# Pillow hands libtiff the in-memory name "tempfile.tif"; libtiff prints its errors,
# under that name, straight to file descriptor 2.
_LIBTIFF_PREFIX = "tempfile.tif:"


@contextmanager
def _libtiff_messages(found: list[str], active: bool = True) -> Iterator[None]:
    """Collect what libtiff writes to stderr while decoding, instead of letting it reach
    the terminal unnamed; whatever else was written meanwhile is passed on."""
    if not active:
        yield
        return
    import sys
    import tempfile

    with _stderr_lock, tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            others = []
            for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True):
                if line.startswith(_LIBTIFF_PREFIX):
                    found.append(line[len(_LIBTIFF_PREFIX) :].strip().rstrip("."))
                else:
                    others.append(line)
            if others:
                with contextlib.suppress(OSError):
                    os.write(2, "".join(others).encode("utf-8", "replace"))


def _decode_problem(exc: Exception, what: str) -> str:
    # Pillow words a file cut short differently per plugin and stage ("image file is
    # truncated (5 bytes not processed)", "Truncated File Read"); users need one answer.
    text = str(exc).lower()
    if isinstance(exc, EOFError) or (isinstance(exc, OSError) and "truncated" in text):
        return "image file is truncated"
    # What Pillow's C decoders say when the data ends early or makes no sense.
    if "decoder error" in text or "broken data stream" in text:
        return "image data is damaged or cut short (the decoder stopped)"
    if "could not create decoder object" in text:
        return "image file is truncated or damaged (the WebP decoder refused it)"
    return f"{what} ({one_line(exc)})"


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1-8), or 1 when absent or unreadable."""
    try:
        with quiet_pillow():
            value = im.getexif().get(0x0112)
    except Exception:  # corrupt EXIF must not make the photo fail
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION_TRANSPOSE else 1


def _to_rgb(im: Image.Image, label: str) -> Image.Image:
    mode = im.mode
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(im)
    if mode in _ALPHA_MODES or "transparency" in im.info:
        # Transparent areas are usually "nothing there" (logos, cut-outs, screenshots);
        # white matches how viewers show them, whereas dropping alpha leaves whatever
        # colour the encoder stored underneath, often black.
        rgba = im.convert("RGBA")
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "RGB":
        return im
    try:
        # Covers L, 1, P, CMYK and YCbCr. CMYK uses Pillow's plain conversion without
        # ICC colour management: close enough for a model that sees 224 px thumbnails.
        return im.convert("RGB")
    except ValueError:
        raise ImageError(label, f"unsupported colour mode {mode}") from None


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float grayscale to 8 bit over its full range.

    Pillow's own convert("L") clips these modes to 0..255 instead of scaling, which
    turns a normal 16-bit photo almost entirely white.
    """
    import numpy as np

    values = np.asarray(im)
    if im.mode.startswith("I;16"):
        scaled = values.astype(np.float64) / 257.0  # 65535 -> 255
    elif im.mode == "I":
        # The mode does not say which range the data uses: take the smallest standard
        # container the values fit in, and stretch anything else (signed or > 16 bit).
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 255:
            scaled = values.astype(np.float64)
        elif low >= 0 and high <= 65535:
            scaled = values.astype(np.float64) / 257.0
        else:
            scaled = _stretch(values.astype(np.float64), low, high)
    else:
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        # 0..1 is the usual convention for float images; anything else is stretched.
        in_unit_range = low >= 0.0 and high <= 1.0
        scaled = values * 255.0 if in_unit_range else _stretch(values, low, high)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return values * 0.0
    return (values - low) * (255.0 / (high - low))


@contextmanager
def quiet_pillow() -> Iterator[None]:
    """Silence the warnings Pillow prints while reading untrusted files.

    Pillow warns above Image.MAX_IMAGE_PIXELS (89 MP) at open time, before we get to
    apply our own limit, which may be higher; our check replaces that warning. It also
    warns about corrupt EXIF ("Corrupt EXIF data. Expecting to read ...") that we
    tolerate anyway. Either would land on the user's terminal once per photo. Changing
    Image.MAX_IMAGE_PIXELS instead would affect every other user of Pillow in the
    process.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _too_large(pixels: int | None, limit: int | None, size: tuple[int, int] | None = None) -> str:
    # Pillow refuses outright above 2 x Image.MAX_IMAGE_PIXELS whatever our limit is;
    # then that is the limit that applied, and only the pixel count is known.
    effective = limit
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if size is None and pillow_limit is not None:
        hard = 2 * pillow_limit
        effective = hard if limit is None else min(limit, hard)
    what = f"{size[0]}x{size[1]} pixels ({_mp(pixels)} MP)" if size else None
    if what is None:
        what = f"{_mp(pixels)} MP" if pixels is not None else "too large"
    if effective is None:
        return f"image is {what}, over the decompression-bomb limit"
    return f"image is {what}, over the {_mp(effective)} MP limit"


def _pixels_from_pillow(exc: Exception) -> int | None:
    # "Image size (900000000 pixels) exceeds limit of ..." is the only place Pillow
    # reports the size of an image it refused to open.
    text = str(exc)
    start = text.find("(")
    end = text.find(" pixels)", start)
    if start < 0 or end < 0:
        return None
    digits = text[start + 1 : end]
    return int(digits) if digits.isdigit() else None


def _mp(pixels: int | None) -> str:
    if pixels is None:
        return "?"
    mp = pixels / 1_000_000
    if mp >= 100:
        return f"{mp:.0f}"
    if mp >= 1:
        return f"{mp:.1f}".removesuffix(".0")
    return f"{mp:.2g}"
