"""Image encoders behind one interface, created from spec strings.

>>> enc = create_encoder("packaged:efficientnet-lite2")   # offline, real ImageNet weights
>>> enc.encode_pil([img]).shape
(1, 1280)
"""
from .._torchvision_shim import import_torchvision

import_torchvision()  # before timm/open_clip import torchvision

from .base import Encoder, resolve_device  # noqa: E402
from .registry import create_encoder, describe_encoder, list_encoder_schemes, register_encoder_scheme  # noqa: E402
from . import open_clip_encoder, packaged, timm_encoder  # noqa: E402,F401  (importing them registers their schemes)

from ..specs import DEFAULT_ENCODER, OFFLINE_ENCODER  # noqa: E402

__all__ = ["Encoder", "create_encoder", "describe_encoder", "list_encoder_schemes", "register_encoder_scheme",
           "resolve_device", "OFFLINE_ENCODER", "DEFAULT_ENCODER"]
