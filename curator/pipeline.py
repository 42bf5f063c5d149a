"""One sample pipeline for every reader of images: read -> hash -> decode -> transform -> batch.

Embedding a pool, the distillation datasets and the view caches all load images through
:meth:`ImagePipeline.load`, so a bad sample is handled one way everywhere (as webdataset's
stages share one ``handler``): it becomes a :class:`Skip` with a machine-readable reason and a
detail, is counted and named by the caller, and never stops a run. A caller that wants the
error instead (a single query given explicitly) calls :meth:`ImagePipeline.load_or_raise`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from PIL import Image

from .errors import BadImageError
from .images import DEFAULT_MAX_PIXELS, decode_image
from .pool import read_range

#: An image's location: a file path, or a ``(source, offset, size)`` byte range of a shard.
Ref = Union[str, tuple]


class Skip(NamedTuple):
    """Why a sample was left out: ``reason`` is one of the documented skip reasons."""
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Sample:
    value: Any                     # the transformed image (a tensor), or the PIL image without a transform
    sha256: Optional[str]          # of the original bytes, when asked for
    width: int                     # original size, before any reduced decoding
    height: int


def read_ref(ref: Ref) -> bytes:
    """An image's bytes from a file path, or a ``(source, offset, size)`` range of a shard."""
    if isinstance(ref, tuple):
        return read_range(*ref)
    with open(ref, "rb") as fh:
        return fh.read()


@dataclass(frozen=True)
class ImagePipeline:
    """The stages' settings. ``min_side`` lets JPEG draft mode decode reduced (never below it);
    ``hash`` records the original bytes' sha256 (the index's exact-duplicate check uses it)."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 0
    hash: bool = False

    def decode(self, ref: Ref) -> Union[tuple[Image.Image, Optional[str]], Skip]:
        """read -> hash -> decode: the image and its sha256, or why not."""
        try:
            data = read_ref(ref)
        except OSError as exc:
            return Skip("unreadable", f"{type(exc).__name__}: {exc}")
        sha = hashlib.sha256(data).hexdigest() if self.hash else None
        try:
            return decode_image(data, max_pixels=self.max_pixels, min_side=self.min_side), sha
        except BadImageError as exc:
            return Skip(exc.reason, exc.detail)

    def load(self, ref: Ref, transform: Optional[Callable[[Image.Image], Any]] = None) -> Union[Sample, Skip]:
        """The whole pipeline for one sample; every failure is a :class:`Skip`."""
        decoded = self.decode(ref)
        if isinstance(decoded, Skip):
            return decoded
        return self.finish(*decoded, transform)

    @staticmethod
    def finish(img: Image.Image, sha: Optional[str], transform=None) -> Union[Sample, Skip]:
        """The transform stage on a decoded image (shared by memoised decoders)."""
        width, height = img.info.get("original_size", img.size)
        try:
            value = transform(img) if transform is not None else img
        except Exception as exc:  # a strange image that breaks a transform must not stop a run
            return Skip("preprocess_failed", f"{type(exc).__name__}: {exc}")
        return Sample(value, sha, width, height)

    def load_or_raise(self, ref: Ref, transform=None) -> Sample:
        result = self.load(ref, transform)
        if isinstance(result, Skip):
            raise BadImageError(result.reason, result.detail)
        return result


class Batch(NamedTuple):
    tags: list                     # the callers' tags (index, label, row) of the good samples
    values: Optional[Any]          # their values, stacked (None when every sample was bad)
    samples: list[Sample]          # their facts (sha256, size), without the values: those are in ``values``
    skipped: list[tuple[Any, Skip]]


def collate(batch: Sequence[tuple[Any, Union[Sample, Skip]]]) -> Batch:
    """``(tag, Sample | Skip)`` pairs into one batch: good samples stacked, bad ones set aside."""
    import torch

    good = [(tag, s) for tag, s in batch if isinstance(s, Sample)]
    bad = [(tag, s) for tag, s in batch if isinstance(s, Skip)]
    values = torch.stack([s.value for _, s in good]) if good else None
    # the per-sample tensors are dropped here: a batch crossing from a loader worker would otherwise
    # carry every view twice, the second time as one shared-memory segment per sample (measured: -13%)
    facts = [Sample(None, s.sha256, s.width, s.height) for _, s in good]
    return Batch([t for t, _ in good], values, facts, bad)
