"""``open_clip:MODEL/PRETRAINED``: CLIP-family image and text towers via open_clip.

PRETRAINED is an open_clip tag (downloaded from the hub when a network is there), a
local checkpoint path (``open_clip:ViT-B-32//data/ckpt.pt``), or ``none`` for an
untrained model (tests and plumbing only; it is never chosen implicitly). MODEL may be
a path to a model-config JSON, which is registered with open_clip first.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch

from ..errors import CuratorError, EncoderUnavailableError
from contextlib import contextmanager, nullcontext
from dataclasses import asdict

from .base import Encoder, deterministic_init
from .registry import register_encoder_scheme

log = logging.getLogger(__name__)


class OpenClipEncoder(Encoder):
    def __init__(self, spec, model, preprocess, tokenizer, **kw):
        visual = model.visual
        size = visual.image_size
        super().__init__(spec, model, preprocess, dim=int(visual.output_dim),
                         image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
                         preprocess_info=dict(getattr(visual, "preprocess_cfg", {}) or {}), **kw)
        self.tokenizer = tokenizer

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def split_open_clip_spec(rest: str) -> tuple[str, str]:
    """``MODEL/PRETRAINED`` where MODEL may itself be a path ending in ``.json``."""
    if ".json" in rest:
        head, _, tail = rest.partition(".json")
        return head + ".json", tail[1:] if tail.startswith("/") else tail
    model, _, pretrained = rest.partition("/")
    return model, pretrained


def resolve_open_clip_spec(rest: str, spec: str) -> tuple[str, str]:
    """(a registered model name, its weights) from ``MODEL/PRETRAINED``; a clear error for either."""
    import open_clip

    model_name, pretrained = split_open_clip_spec(rest)
    if not pretrained:
        raise CuratorError(f"{spec!r} names no weights: use open_clip:{model_name}/TAG, "
                           f"open_clip:{model_name}//path/to/checkpoint.pt, or open_clip:{model_name}/none")
    if model_name.endswith(".json"):
        config = Path(model_name)
        if not config.is_file():
            raise CuratorError(f"open_clip model config {config} does not exist")
        open_clip.add_model_config(config)
        model_name = config.stem
    if model_name not in open_clip.list_models():
        raise CuratorError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")
    return model_name, pretrained


def known_tag(model_name: str, tag: str) -> dict:
    """open_clip's config of a weights tag; an unknown one is an error that lists the model's tags
    (before any download is tried, so a typo is not reported as a network failure)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = [t for m, t in open_clip.list_pretrained() if m == model_name]
        raise CuratorError(f"unknown open_clip weights {tag!r} for {model_name}; its tags: "
                           f"{', '.join(tags) or '(none: give a local checkpoint path)'}")
    return cfg


def describe_open_clip(rest: str, *, spec: str, precision: str) -> dict:
    """The architecture on the meta device (no memory, no weights) and the tag's preprocessing, merged as
    open_clip's ``create_model`` merges them."""
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    model_name, pretrained = resolve_open_clip_spec(rest, spec)
    preprocess = asdict(PreprocessCfg())
    if pretrained != "none" and not os.path.exists(pretrained):
        preprocess = merge_preprocess_dict(preprocess, known_tag(model_name, pretrained))
    with torch.device("meta"), _quiet_open_clip():
        visual = open_clip.create_model(model_name, pretrained=None, device="meta").visual
    size = visual.image_size
    preprocess["size"] = size
    return {"spec": spec, "dim": int(visual.output_dim), "image_size": int(size[0] if isinstance(size, (tuple, list))
                                                                             else size),
            "precision": precision, "preprocess": preprocess}


@contextmanager
def _quiet_open_clip():
    """open_clip logs through the root logger as it builds a model ("No pretrained weights loaded" for one
    built on purpose without them; the download it tried before a failure curator reports in one line)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


@register_encoder_scheme("open_clip", help="open_clip:MODEL/PRETRAINED, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k "
                         "(PRETRAINED: a tag, a local checkpoint path, or 'none' for untrained)",
                         describe=describe_open_clip)
def create_open_clip_encoder(rest: str, *, spec: str, device: str, precision: str) -> Encoder:
    import open_clip

    model_name, pretrained = resolve_open_clip_spec(rest, spec)
    weights = None if pretrained == "none" else pretrained
    if weights is not None and not os.path.exists(weights):
        known_tag(model_name, weights)
    if weights is None:
        log.warning("encoder %s has UNTRAINED weights: fine for tests, useless for retrieval", spec)
    try:
        with deterministic_init() if weights is None else nullcontext(), _quiet_open_clip():
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    except Exception as exc:
        where = "the local file" if weights and os.path.exists(weights) else "the model hub"
        raise EncoderUnavailableError(
            f"cannot load open_clip weights {weights!r} for {model_name} from {where} "
            f"({type(exc).__name__}: {exc}). "
            + ("The model hub is switched off here (HF_HUB_OFFLINE=1). " if os.environ.get("HF_HUB_OFFLINE") == "1"
               else "")
            + f"Give a local checkpoint (open_clip:{model_name}//path/to.pt), or use "
            f"--encoder packaged:efficientnet-lite2, whose ImageNet weights ship with curator."
        ) from None
    return OpenClipEncoder(spec, model, preprocess, open_clip.get_tokenizer(model_name),
                           device=device, precision=precision)
