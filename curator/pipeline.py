"""One sample pipeline for every reader of images: read -> hash -> decode -> transform -> batch.

Embedding a pool, query images (curation, search, uploads), the distillation datasets and the view
caches all load images through :meth:`ImagePipeline.load`, so a bad sample is handled one way
everywhere, as webdataset's stages share one ``handler``. The pipeline's ``on_bad`` says what that
way is: ``skip`` makes it a :class:`Skip` with a machine-readable reason and a detail, counted and
named by the caller, so a bad file never stops a run over many; ``raise`` makes it a
:class:`BadImageError` that names the sample, for inputs given one by one (a query, an upload).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Literal, NamedTuple, Optional, Sequence, Union

from PIL import Image

from .errors import BadImageError
from .images import DEFAULT_MAX_PIXELS, decode_image
from .pool import read_range

#: An image: a file path, a ``(source, offset, size)`` byte range of a shard, its bytes, or an open binary file
#: (a large upload is never all in memory).
Ref = Union[str, tuple, bytes, BinaryIO]
#: What a pipeline does with a bad sample: leave it out as a Skip, or raise BadImageError.
OnBad = Literal["skip", "raise"]


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


def read_ref(ref: Ref) -> Union[bytes, BinaryIO]:
    """An image's bytes from a file path or a ``(source, offset, size)`` range of a shard; bytes and
    open files are already there."""
    if isinstance(ref, tuple):
        return read_range(*ref)
    if isinstance(ref, (bytes, bytearray)) or hasattr(ref, "read"):
        return ref
    with open(ref, "rb") as fh:
        return fh.read()


@dataclass(frozen=True)
class ImagePipeline:
    """The stages' settings. ``min_side`` lets JPEG draft mode decode reduced (never below it);
    ``hash`` records the original bytes' sha256 (the index's exact-duplicate check uses it); ``on_bad``
    is the one bad-sample policy."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 0
    hash: bool = False
    on_bad: OnBad = "skip"

    def decode(self, ref: Ref, name: str = "") -> Union[tuple[Image.Image, Optional[str]], Skip]:
        """read -> hash -> decode: the image and its sha256, or why not (``name`` names it in an error)."""
        try:
            data = read_ref(ref)
        except OSError as exc:
            return self.bad(Skip("unreadable", f"{type(exc).__name__}: {exc}"), name)
        sha = hashlib.sha256(data).hexdigest() if self.hash and isinstance(data, (bytes, bytearray)) else None
        try:
            return decode_image(data, max_pixels=self.max_pixels, min_side=self.min_side), sha
        except BadImageError as exc:
            return self.bad(Skip(exc.reason, exc.detail), name)

    def load(self, ref: Ref, transform: Optional[Callable[[Image.Image], Any]] = None,
             name: str = "") -> Union[Sample, Skip]:
        """The whole pipeline for one sample; a failure is handled by ``on_bad``."""
        decoded = self.decode(ref, name)
        if isinstance(decoded, Skip):
            return decoded
        return self.bad(self.finish(*decoded, transform), name)

    def bad(self, result: Any, name: str = "") -> Any:
        """``result`` as it is, unless it is a Skip and bad samples raise."""
        if isinstance(result, Skip) and self.on_bad == "raise":
            raise BadImageError(result.reason, f"{name}: {result.detail}" if name else result.detail)
        return result

    @staticmethod
    def finish(img: Image.Image, sha: Optional[str], transform=None) -> Union[Sample, Skip]:
        """The transform stage on a decoded image (shared by memoised decoders)."""
        width, height = img.info.get("original_size", img.size)
        try:
            value = transform(img) if transform is not None else img
        except Exception as exc:  # a strange image that breaks a transform must not stop a run
            return Skip("preprocess_failed", f"{type(exc).__name__}: {exc}")
        return Sample(value, sha, width, height)


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
