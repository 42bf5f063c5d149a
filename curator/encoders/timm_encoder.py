"""``timm:MODEL[/CHECKPOINT]``: any timm backbone's pooled features.

Without CHECKPOINT timm fetches its pretrained weights from the hub (e.g. DINOv2:
``timm:vit_large_patch14_dinov2.lvd142m``). CHECKPOINT may be a local weights file, or
``none`` for an untrained backbone (tests only).
"""
from __future__ import annotations

import os

import torch

from ..errors import CuratorError, EncoderUnavailableError
from contextlib import nullcontext

from .base import Encoder, deterministic_init
from .registry import register_encoder_scheme


class TimmEncoder(Encoder):
    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)

    def _is_convnet(self) -> bool:
        return not hasattr(self.model, "patch_embed")


def timm_preprocess(model: torch.nn.Module):
    """timm's own eval transform for ``model`` and the config that produced it."""
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    return timm.data.create_transform(**cfg, is_training=False), cfg


@register_encoder_scheme("timm", help="timm:MODEL[/CHECKPOINT], e.g. timm:vit_large_patch14_dinov2.lvd142m "
                         "(CHECKPOINT: a local weights file, or 'none' for untrained)")
def create_timm_encoder(rest: str, *, spec: str, device: str, precision: str) -> Encoder:
    import timm

    name, _, checkpoint = rest.partition("/")
    if not timm.is_model(name.split(".")[0]):
        raise CuratorError(f"unknown timm model {name!r}; see timm.list_models()")
    kwargs: dict = {"num_classes": 0}
    if checkpoint == "none":
        kwargs["pretrained"] = False
    elif checkpoint:
        if not os.path.isfile(checkpoint):
            raise CuratorError(f"checkpoint {checkpoint} for {name} does not exist")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": checkpoint})
    else:
        kwargs["pretrained"] = True
    try:
        with deterministic_init() if checkpoint == "none" else nullcontext():
            model = timm.create_model(name, **kwargs)
    except Exception as exc:
        raise EncoderUnavailableError(
            f"cannot load timm weights for {name} ({type(exc).__name__}: {exc}). Offline? "
            f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}. Give a local file "
            f"(timm:{name}/path/to/weights.safetensors) or use --encoder packaged:efficientnet-lite2."
        ) from None
    preprocess, cfg = timm_preprocess(model)
    size = cfg["input_size"][-1]
    return TimmEncoder(spec, model, preprocess, dim=int(model.num_features), image_size=int(size),
                       device=device, precision=precision, preprocess_info=_jsonable(cfg))


def _jsonable(cfg: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
