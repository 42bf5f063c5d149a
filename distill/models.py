"""Teacher (a curator encoder plus a task head) and student (any timm model)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from curator.encoders import Encoder, create_encoder
from curator.encoders.packaged import PACKAGED, load_packaged_model, packaged_name_for_timm
from curator.errors import CuratorError, EncoderUnavailableError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalisation(encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's own normalisation, read from its recorded preprocessing (the registry's data)."""
    info = encoder.preprocess_info
    mean, std = info.get("mean", (0.5,) * 3), info.get("std", (0.5,) * 3)
    return torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)


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
        """``init``: ``scratch``, ``imagenet`` (packaged weights where curator ships them, else timm's
        hub) or the path of a checkpoint (a student.pt, or a timm state_dict) of the same architecture."""
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise CuratorError(f"unknown timm student {name!r}; e.g. mobilenetv3_small_100, resnet18, fastvit_t8")
        self.net = _imagenet_student(name, num_classes) if init == "imagenet" else \
            timm.create_model(name, num_classes=num_classes)
        self.size = size
        # the normalisation the architecture's ImageNet weights were trained with (TF-Lite: 0.5/0.5)
        cfg = getattr(self.net, "pretrained_cfg", None) or {}
        self.register_buffer("mean", torch.tensor(cfg.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", IMAGENET_STD)).view(1, 3, 1, 1))
        if init not in ("scratch", "imagenet"):
            self.dropped = load_checkpoint(self.net, init)
        out_of_place_activations(self.net)

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


#: Activations whose gradient reads their input: run in place, autograd first copies that input whole.
CLONED_IN_PLACE = (nn.Hardtanh, nn.Hardswish, nn.SiLU)  # nn.ReLU6 is an nn.Hardtanh


def out_of_place_activations(net: nn.Module) -> int:
    """Turn timm's in-place ReLU6 / hard-swish / SiLU layers out of place; returns how many. Why: their
    backward needs the input, so an in-place call on a tensor that needs a gradient makes autograd clone
    it first: a copy plus an in-place pass, where out of place is one pass. The copy is memory traffic
    more than time (a Lite0 step on an AVX512 CPU: 1.00-1.02x, docs/benchmarks.md *student-step-avx512*).
    ReLU's gradient reads its output, so in-place ReLU stays."""
    layers = [m for m in net.modules() if isinstance(m, CLONED_IN_PLACE) and getattr(m, "inplace", False)]
    for layer in layers:
        layer.inplace = False
    return len(layers)


def _imagenet_student(name: str, num_classes: int) -> nn.Module:
    """ImageNet weights for a student: the packaged checkpoint where one exists for the
    architecture (real weights, offline), else timm's hub weights; the classifier starts fresh."""
    import timm

    packaged = packaged_name_for_timm(name)
    if packaged:
        net = load_packaged_model(packaged)
        net.reset_classifier(num_classes)
        return net
    try:
        return timm.create_model(name, num_classes=num_classes, pretrained=True)
    except Exception as exc:
        offline = ", ".join(info.timm_name for info in PACKAGED.values())
        raise EncoderUnavailableError(
            f"cannot load ImageNet weights for student {name} ({exc}); offline, use --student-init scratch, a "
            f"local checkpoint, or a student with packaged weights ({offline})"
        ) from None


def load_checkpoint(net: nn.Module, path: str) -> list[str]:
    """Load a checkpoint's matching tensors into ``net``; returns the names left at their init
    (a classifier trained for other classes). A checkpoint that shares nothing is an error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CuratorError(f"--student-init {path}: not a readable checkpoint ({exc})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    state = {k.removeprefix("net."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if _weight_share(usable) < 0.5 * _weight_share(own):  # a few BN counters are not a match
        raise CuratorError(f"--student-init {path}: no tensor matches the student's architecture "
                           f"(less than half of its weights); was it trained for another model?")
    net.load_state_dict(usable, strict=False)
    return sorted(k for k in own if k not in usable)


def _weight_share(state: dict[str, torch.Tensor]) -> int:
    """Floating-point elements in a state dict (integer counters such as BatchNorm's step count
    have the same shape in every architecture, so they say nothing about a match)."""
    return sum(v.numel() for v in state.values() if v.is_floating_point())


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
