"""Teacher (a curator encoder plus a task head) and student (any timm model)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms

from curator.encoders import Encoder, create_encoder
from curator.errors import CuratorError, EncoderUnavailableError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalisation(encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
    steps = getattr(encoder.preprocess, "transforms", [])
    norm = next((t for t in steps if isinstance(t, transforms.Normalize)), None)
    mean, std = (norm.mean, norm.std) if norm is not None else ((0.5,) * 3, (0.5,) * 3)
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


class Teacher(nn.Module):
    """The VFM's image tower with a cosine classifier head; takes [0, 1] views at its size."""

    def __init__(self, spec: str, num_classes: int, device: str = "cpu"):
        super().__init__()
        self.encoder = create_encoder(spec, device=device)
        self.backbone = self.encoder.model
        self.size = self.encoder.image_size
        mean, std = _normalisation(self.encoder)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.head = nn.Linear(self.encoder.dim, num_classes)
        self.scale = 10.0  # cosine classifier: logits = 10 * <w, f/|f|>, stable with few labels

    def features(self, views: torch.Tensor) -> torch.Tensor:
        if views.shape[-1] != self.size:
            views = F.interpolate(views, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.encoder.features((views - self.mean) / self.std).float()

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.head(F.normalize(features, dim=-1))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(views))


class Student(nn.Module):
    """A timm classifier at low resolution; ``features`` gives its pooled pre-logits."""

    def __init__(self, name: str, num_classes: int, size: int, init: str = "scratch"):
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise CuratorError(f"unknown timm student {name!r}; e.g. mobilenetv3_small_100, resnet18, fastvit_t8")
        try:
            self.net = timm.create_model(name, num_classes=num_classes, pretrained=init == "imagenet")
        except Exception as exc:
            raise EncoderUnavailableError(f"cannot load ImageNet weights for student {name} ({exc}); "
                                          f"use --student-init scratch offline") from None
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _prep(self, views: torch.Tensor) -> torch.Tensor:
        if views.shape[-1] != self.size:
            views = F.interpolate(views, size=(self.size, self.size), mode="bilinear", antialias=True)
        return (views - self.mean) / self.std

    def features(self, views: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(self._prep(views)), pre_logits=True)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from ``features`` (pre-logits): the classifier layer alone."""
        return self.net.get_classifier()(features)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.net(self._prep(views))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_per_image(module: nn.Module, size: int) -> int:
    """Forward FLOPs for one image at ``size`` (torch's own counter; 0 if it cannot count)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.rand(1, 3, size, size, device=next(module.parameters()).device))
        return int(counter.get_total_flops())
    except Exception:
        return 0
