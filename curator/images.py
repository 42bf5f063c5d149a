"""Safe image decoding for untrusted pools and uploads.

Web pools hold corrupt files, non-images and decompression bombs (openclipart ships
PNGs of 231 megapixels). Every decode here checks the header's pixel count *before*
decoding, uses JPEG draft mode to decode large JPEGs at reduced size, composites alpha
on white (clip-art is mostly transparent), and turns every failure into a
:class:`BadImageError` with a short machine-readable reason.
"""
from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import BadImageError

#: Default decoded-pixel cap: above it an image is skipped (and reported), never decoded.
DEFAULT_MAX_PIXELS = 40_000_000
#: A JPEG may declare at most this many times --max-pixels: draft decoding reduces it (up to 64x),
#: but a header claiming 50000x50000 in 1 KB would still cost seconds and hundreds of MB.
DECLARED_FACTOR = 16
#: Extensions treated as images when walking folders or webdataset samples.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

# We enforce our own cap; PIL's global bomb check would raise on our behalf with a
# different message (and warn below it), so disable it and rely on the explicit check.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_image(data: bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 0) -> Image.Image:
    """Decode ``data`` (bytes, or an open binary file: a large upload is never all in memory) into an
    RGB image, or raise :class:`BadImageError`.

    ``min_side`` lets JPEG draft mode decode at the smallest scale (1/2, 1/4, 1/8) that
    still leaves both sides at least that large: a 6000px photo headed for a 224px
    model never needs full-resolution decoding.
    """
    if isinstance(data, (bytes, bytearray)):
        data = io.BytesIO(data)
    if not data.read(1):
        raise BadImageError("empty", "zero bytes")
    data.seek(0)
    try:
        img = Image.open(data)
    except UnidentifiedImageError:
        raise BadImageError("not_an_image", "unrecognised image format") from None
    except Exception as exc:  # PIL raises a zoo of errors on hostile headers
        raise BadImageError("corrupt", f"{type(exc).__name__}: {exc}") from None
    if img.format is None or img.format.lower() not in {"jpeg", "png", "webp", "gif", "bmp", "tiff", "mpo"}:
        raise BadImageError("unsupported_format", str(img.format))
    width, height = img.size
    if width <= 0 or height <= 0:
        raise BadImageError("corrupt", f"bad size {width}x{height}")
    original_size = (width, height)
    if width * height > DECLARED_FACTOR * max_pixels:
        raise BadImageError("too_many_pixels", f"declares {width}x{height}, beyond what --max-pixels {max_pixels} "
                                               f"allows even decoded reduced")
    if img.format in ("JPEG", "MPO") and min_side > 0:
        scale = min(width, height) / min_side
        if scale >= 2:
            img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
            width, height = img.size
    if width * height > max_pixels:
        raise BadImageError("too_many_pixels", f"{width}x{height} exceeds --max-pixels {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except Exception as exc:
        raise BadImageError("truncated" if "truncat" in str(exc).lower() else "corrupt", f"{type(exc).__name__}: {exc}") from None
    if min_side > 0 and min(img.size) >= 4 * min_side:
        # Box-reduce by an integer factor, keeping >= 2x the model's input for the final
        # resampling: a 4000px PNG then costs a fraction of a full bicubic resize.
        if img.mode not in REDUCIBLE_MODES:  # palette, 1-bit, 16-bit: PIL cannot box-reduce them
            img = to_rgb(img)
        img = img.reduce(min(img.size) // (2 * min_side))
    try:
        rgb = to_rgb(img)
    except Exception as exc:  # an exotic mode PIL cannot convert: a skip, never a crash
        raise BadImageError("corrupt", f"{img.mode}: {type(exc).__name__}: {exc}") from None
    rgb.info["original_size"] = original_size
    return rgb


REDUCIBLE_MODES = {"RGB", "RGBA", "L", "LA", "RGBX", "CMYK"}


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white (black would turn clip-art to blobs)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def is_image_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS
