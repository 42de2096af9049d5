"""Image checks: the file must decode completely as the image its name says it is."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# What Ultralytics reads, by suffix (it picks dataset files by their extension).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class ImageProblem(ValueError):
    """An image that cannot be used; str() is the reason a person reads."""


def check_image(path: Path) -> tuple[int, int]:
    """(width, height) after a full decode, or ImageProblem with the reason."""
    if path.stat().st_size == 0:
        raise ImageProblem("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decodes every pixel: catches truncated and corrupt files
                return im.size
    except UnidentifiedImageError:
        raise ImageProblem("not an image Pillow can read (corrupt, or not an image at all)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(f"too many pixels, refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"image does not decode: {exc}") from None
