"""The one interface every image encoder implements.

An encoder owns three things that must never drift apart: the network, the exact
preprocessing it was trained with, and the spec string that rebuilds both. Index
manifests record the spec and :meth:`Encoder.describe`, so a query encoded months later
goes through the same pipeline as the pool was.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..allocator import bound_freed_memory, keep_freed_memory
from ..errors import CuratorError, DeviceUnavailableError

Preprocess = Callable[[Image.Image], torch.Tensor]
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(device: str) -> torch.device:
    """Turn ``cpu`` / ``cuda`` / ``cuda:N`` into a device; never fall back silently."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"--device {device} was requested but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); use --device cpu or run on a GPU machine"
            )
    elif device != "cpu":
        raise CuratorError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    return torch.device(device)


class Encoder(ABC):
    """An image (and optionally text) embedding model with its preprocessing.

    Subclasses set ``model`` and ``preprocess`` and implement :meth:`_embed`.
    ``encode_images`` returns L2-normalised float32 arrays, ready for inner-product search.
    """

    spec: str
    dim: int
    image_size: int

    def __init__(self, spec: str, model: torch.nn.Module, preprocess: Preprocess, dim: int,
                 image_size: int, *, device: str = "cpu", precision: str = "fp32",
                 preprocess_info: dict[str, Any] | None = None):
        if precision not in PRECISIONS:
            raise CuratorError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.spec = spec
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # 2x the img/s of a convnet at batch 64 on a CPU (curator.allocator)
        self.precision = precision
        self.model = model.eval().to(self.device)
        if self._is_convnet():
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocess = preprocess
        self.dim = dim
        self.image_size = image_size
        self.preprocess_info = preprocess_info or {}

    # -- subclass hooks -------------------------------------------------------------
    @abstractmethod
    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features for a preprocessed batch (each family's own forward)."""

    def _embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        raise CuratorError(f"encoder {self.spec} has no text tower")

    def _is_convnet(self) -> bool:
        return False

    # -- public API -------------------------------------------------------------------
    @property
    def has_text(self) -> bool:
        return type(self)._embed_text is not Encoder._embed_text

    def autocast(self):
        """bf16/fp16 autocast on the encoder's device, or a no-op for fp32."""
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed batch ``(B, 3, H, W)``; returns ``(B, dim)`` unit vectors."""
        pixels = pixels.to(self.device, non_blocking=True)
        if self._is_convnet():
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            feats = self._embed(pixels)
        out = _normalise(feats)
        if self.device.type == "cpu":
            bound_freed_memory()
        return out

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised features *with* gradients: for training a head on the encoder, or finetuning it."""
        return self._embed(pixels)

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and embed PIL images (convenience for small query batches)."""
        return self.encode_images(torch.stack([self.preprocess(im) for im in images]))

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        with self.autocast():
            feats = self._embed_text(list(texts))
        return _normalise(feats)

    def describe(self) -> dict[str, Any]:
        """What an index manifest records about this encoder."""
        return {"spec": self.spec, "dim": self.dim, "image_size": self.image_size,
                "precision": self.precision, "preprocess": self.preprocess_info}


def deterministic_init():
    """RNG context for untrained (``/none``) models: the same spec gives the same weights,
    so an index built with an untrained test encoder can still be queried later."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            yield
    return ctx()


def _normalise(feats: torch.Tensor) -> np.ndarray:
    feats = feats.float()
    feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return feats.cpu().numpy().astype(np.float32, copy=False)
