"""Image checks: the file must decode completely as the format its name says, within the
pixel cap; EXIF rotation is applied to the stored pixels so boxes and pixels always agree.

Pillow does the decoding (it is already a dependency, reads every format Ultralytics trains
on, and reports truncation and bombs as errors); nothing here parses image bytes by hand.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from flywheel.ingest.reasons import Code, Problem

# What Ultralytics trains on, by Pillow format and the suffixes that may name it.
_SUFFIXES = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (".jpg", ".jpeg"),  # multi-picture JPEG from phones: a JPEG to every reader
    "PNG": (".png",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
}
IMAGE_SUFFIXES = frozenset(s for names in _SUFFIXES.values() for s in names)
IMAGE_FORMATS = frozenset(_SUFFIXES)  # Pillow format names
# Images, but not in a format flywheel stores: refused by name, with a reason, not as "unknown file".
OTHER_IMAGE_SUFFIXES = frozenset(
    {".gif", ".heic", ".heif", ".avif", ".ico", ".psd", ".jp2", ".j2k", ".svg", ".dng", ".jfif", ".tga"}
    | {".pgm", ".ppm", ".pbm", ".pnm", ".pcx", ".eps", ".raw", ".cr2", ".nef", ".arw", ".xcf"}
)
_IMPORTED_OPEN = Image.open
_ORIENTATION = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees


_Opener = Callable[[Path | IO[bytes]], Image.Image]


def _open(path: Path | IO[bytes]) -> Image.Image:
    """Pillow's own Image.open. Importing Ultralytics replaces it process-wide with a wrapper
    that, on a file Pillow cannot identify, tries to install a HEIF plugin (pip, network) and
    fails with ImportError; ingest must say "not an image" instead, whatever else this process
    has imported (tests, `flywheel demo`)."""
    current: _Opener = Image.open
    if getattr(current, "__module__", "") != Image.__name__:
        original: _Opener | None = getattr(current, "__globals__", {}).get("_image_open")
        current = original if original and getattr(original, "__module__", "") == Image.__name__ else _IMPORTED_OPEN
    return current(path)


@dataclass(frozen=True)
class ImageInfo:
    width: int  # as displayed, i.e. after the EXIF rotation
    height: int
    format: str
    orientation: int  # EXIF orientation, 1 = as stored
    dhash: int  # 64-bit difference hash of the displayed image, for near-copy detection

    @property
    def raw_size(self) -> tuple[int, int]:
        """(width, height) of the pixels as stored, before the EXIF rotation."""
        return (self.height, self.width) if self.orientation in _SWAPS_AXES else (self.width, self.height)


def check_image(path: Path, max_pixels: int) -> ImageInfo:
    """The image's facts after a full decode, or Problem with the code and reason."""
    if path.stat().st_size == 0:
        raise Problem(Code.IMAGE_EMPTY, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides below
            with _open(path) as im:
                return _inspect(path, im, max_pixels)
    except Problem:
        raise
    except UnidentifiedImageError:
        raise Problem(
            Code.IMAGE_NOT_IMAGE, "not an image Pillow can read (the content is no known image format)"
        ) from None
    except Image.DecompressionBombError as exc:  # above Pillow's own hard cap, before ours could look
        size = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{size.group(1)} pixels" if size else "too many pixels"
        raise Problem(
            Code.IMAGE_TOO_LARGE,
            f"{pixels}, above ingest.max_image_pixels = {max_pixels} (decompression-bomb guard); "
            "downscale it or raise the cap",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Problem(Code.IMAGE_CORRUPT, f"image does not decode (truncated or corrupt): {exc}") from None


def _inspect(path: Path, im: Image.Image, max_pixels: int) -> ImageInfo:
    fmt = im.format or "?"
    suffix = path.suffix.lower()
    if fmt not in _SUFFIXES:
        raise Problem(
            Code.IMAGE_UNSUPPORTED, f"a {fmt} image; flywheel stores JPEG, PNG, BMP, TIFF or WebP: convert it"
        )
    if suffix not in _SUFFIXES[fmt]:
        raise Problem(
            Code.IMAGE_EXTENSION_MISMATCH,
            f"named {suffix} but the content is {fmt}; rename it to {_SUFFIXES[fmt][0]} (or re-export it)",
        )
    width, height = im.size
    if width * height > max_pixels:
        raise Problem(
            Code.IMAGE_TOO_LARGE,
            f"{width}x{height} = {width * height} pixels, above ingest.max_image_pixels = {max_pixels} "
            "(decompression-bomb guard); downscale it or raise the cap",
        )
    im.load()  # decodes every pixel: catches truncated and corrupt files
    if fmt in ("JPEG", "MPO") and not _ends_with_eoi(path):
        # Pillow pads a JPEG cut short after the last scan; Ultralytics would rewrite it in place
        raise Problem(Code.IMAGE_CORRUPT, "JPEG is truncated (no end-of-image marker)")
    orientation = im.getexif().get(_ORIENTATION, 1)
    orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    shown = ImageOps.exif_transpose(im) if orientation != 1 else im
    return ImageInfo(shown.width, shown.height, fmt, orientation, dhash(shown))


open_image = _open  # for readers of bytes in memory (flywheel/serve/decode.py)


def _ends_with_eoi(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-2, io.SEEK_END)
        return fh.read(2) == b"\xff\xd9"


def dhash(im: Image.Image) -> int:
    """Difference hash: each bit says whether a pixel of a 9x8 grey thumbnail is brighter than
    its right neighbour. Re-encoding or resizing an image changes few of its 64 bits."""
    factor = max(1, min(im.width // 64, im.height // 64))
    small = (im.reduce(factor) if factor > 1 else im).convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    px = small.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (px[row * 9 + col] > px[row * 9 + col + 1])
    return bits


def fine_dhash(im: Image.Image, n: int = 16) -> int:
    """A finer difference hash for flat images: each pixel of a 17x17 grey thumbnail against its
    right and its lower neighbour, 512 bits (screening's near copies, flywheel/core/screening.py)."""
    px = im.convert("L").resize((n + 1, n + 1), Image.Resampling.BILINEAR).tobytes()
    bits = 0
    for row in range(n):
        for col in range(n):
            bits = (bits << 1) | (px[row * (n + 1) + col] > px[row * (n + 1) + col + 1])
    for row in range(n):
        for col in range(n):
            bits = (bits << 1) | (px[row * (n + 1) + col] > px[(row + 1) * (n + 1) + col])
    return bits


def upright_bytes(path: Path) -> bytes:
    """The image re-encoded with its EXIF rotation applied to the pixels (and the tag gone), so
    every reader sees the frame the labeling tool showed, whether or not it honours EXIF."""
    with _open(path) as im:
        fmt = im.format or "PNG"
        icc = im.info.get("icc_profile")
        upright = ImageOps.exif_transpose(im)
        buf = io.BytesIO()
        options: dict[str, object] = {"exif": upright.getexif()}
        if icc:
            options["icc_profile"] = icc
        if fmt in ("JPEG", "MPO"):
            fmt, options["quality"] = "JPEG", 95
        upright.save(buf, format=fmt, **options)
        return buf.getvalue()
