"""Small previews of images for people: bounded decode (JPEG draft mode, the pixel cap), then a
JPEG no larger than ``size`` on its longest side. Used by the service's thumbnail endpoint, the
query previews stored in a transfer set, and ``curator report``."""
from __future__ import annotations

import io
from typing import BinaryIO

from .errors import CuratorError
from .images import DEFAULT_MAX_PIXELS, decode_image

#: The sizes a caller may ask for; the default suits a results grid.
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 16, 512, 160


def check_size(size: int) -> int:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise CuratorError(f"thumbnail size {size} is outside {MIN_SIZE}..{MAX_SIZE}")
    return size


def thumbnail(data: bytes | BinaryIO, size: int = DEFAULT_SIZE, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A JPEG preview at most ``size`` pixels on its longest side (never enlarged)."""
    img = decode_image(data, max_pixels=max_pixels, min_side=check_size(size))
    img.thumbnail((size, size))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()
