"""The service's bounds, as a model: ``curator serve``'s flags and their defaults come from here."""
from __future__ import annotations

from pydantic import Field

from ..images import DEFAULT_MAX_PIXELS
from .base import Doc
from .curate import MAX_IMAGES


class Limits(Doc):
    """Every upload is bounded: count, bytes per file, bytes per request, decoded pixels."""
    max_files: int = Field(256, ge=1, le=100_000, description="images per request")
    max_file_bytes: int = Field(20 << 20, ge=1, description="bytes per image")
    max_request_bytes: int = Field(256 << 20, ge=1, description="bytes per request")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="decoded pixels per image")
    max_request_pixels: int = Field(400_000_000, ge=1, description="decoded pixels per request, all images together")
    max_budget: int = Field(2_000_000, ge=1, le=MAX_IMAGES, description="images per transfer set")
    max_k: int = Field(1000, ge=1, le=100_000, description="neighbours per search")
