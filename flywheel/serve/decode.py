"""An uploaded image, checked as ingest checks a file (flywheel/ingest/images.py: the formats
flywheel stores, the `ingest.max_image_pixels` cap that guards against decompression bombs)
and decoded the way Ultralytics reads a file for predict and val (OpenCV, BGR, EXIF rotation
applied), so served detections match theirs. A refusal is a `Problem` with ingest's code."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from flywheel.ingest.images import IMAGE_FORMATS, open_image
from flywheel.ingest.reasons import Code, Problem


def decode(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """(BGR uint8 pixels, Pillow format name) or Problem."""
    import cv2

    if not data:
        raise Problem(Code.IMAGE_EMPTY, "empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides below
            with open_image(io.BytesIO(data)) as im:  # reads the header only: cheap, and no pixels yet
                fmt, (width, height) = im.format or "?", im.size
    except UnidentifiedImageError:
        raise Problem(Code.IMAGE_NOT_IMAGE, "not an image (the content is no known image format)") from None
    except Image.DecompressionBombError as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))
        raise Problem(
            Code.IMAGE_TOO_LARGE,
            f"{size.group(1) if size else 'too many'} pixels, above ingest.max_image_pixels = {max_pixels}",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Problem(Code.IMAGE_CORRUPT, f"image header does not decode: {exc}") from None
    if fmt not in IMAGE_FORMATS:
        raise Problem(Code.IMAGE_UNSUPPORTED, f"a {fmt} image; send JPEG, PNG, BMP, TIFF or WebP")
    if width * height > max_pixels:
        raise Problem(
            Code.IMAGE_TOO_LARGE,
            f"{width}x{height} = {width * height} pixels, above ingest.max_image_pixels = {max_pixels} "
            "(decompression-bomb guard); downscale it",
        )
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise Problem(Code.IMAGE_CORRUPT, f"{fmt} image does not decode (truncated or corrupt)")
    return pixels, fmt
