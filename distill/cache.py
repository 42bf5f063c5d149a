"""Fixed augmented views, computed once: the student's pixels and the teacher's outputs.

Why: on a CPU, decoding images and running the VFM dominate distillation, and both repeat
every epoch. A view cache holds, for V fixed views of each image (``fixed_view``: the same
crop and flip every time), the view's pixels at the *student's* resolution (uint8) and the
teacher's targets on that same view:

* ``features``: backbone features. A linear-probe teacher's backbone is frozen, so its task
  predictions are ``head(features)``, applied on the fly: every seed's adapted head, and the
  task-agnostic baseline (which matches features), share one cache per backbone.
* ``logits``: the adapted teacher's predictions, for a finetuned teacher.

A cache is keyed by a hash of the weights that produced it, of the image list, V, both sizes
and the view seed; it is built once (runs on one machine wait on a lock beside it), written
atomically (concurrent students on other machines agree) and reused by any later student, of any
architecture.
"""
from __future__ import annotations

import contextlib
import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from curator import atomic
from curator.pipeline import Sample

from .data import FixedViewDataset, collate_skip_bad

Kind = Literal["features", "logits"]


@dataclass
class ViewCache:
    pixels: np.ndarray      # uint8 [M, 3, s, s]: the views the student sees
    targets: np.ndarray     # float16 [M, D]: teacher features or logits on the same views
    labels: np.ndarray      # int64 [M]: the image's label (-1 for unlabelled transfer images)
    path: str
    passes: int             # teacher forward passes spent now (0: reused)

    def __len__(self) -> int:
        return len(self.targets)


def weights_key(module: nn.Module) -> str:
    """Hash of a module's weights and buffers: caches of other weights are never reused."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def items_key(items: list[tuple]) -> str:
    """Hash of the image list, by shard name and byte range (or file path) and label: a
    transfer set downloaded to another folder keeps its key."""
    digest = hashlib.sha256()
    for ref, label in items:
        ref = (Path(ref[0]).name, ref[1], ref[2]) if isinstance(ref, tuple) else ref
        digest.update(repr((ref, label)).encode())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def view_cache(teacher, items: list[tuple], folder: Path, *, kind: Kind, views: int, student_size: int,
               view_seed: int = 0, augment: bool = True, batch_size: int = 32, workers: int = 0,
               progress: bool = False, forward_mode: Callable[[], ContextManager] = nullcontext) -> ViewCache:
    """Load the cache for these images and views from ``folder``, or build and store it.

    ``augment=False`` gives one centred view per image (for evaluation). Views are decoded on the
    CPU and labelled on the teacher's device (under ``forward_mode``: bf16 on CUDA); the stored
    student-size pixels are made on the CPU from the same views."""
    producer = teacher.backbone if kind == "features" else teacher
    views = views if augment else 1
    name = (f"{kind}-{weights_key(producer)}-{items_key(items)}-v{views}{'a' if augment else 'c'}"
            f"-t{teacher.size}-s{student_size}-seed{view_seed}.npz")
    path = folder / name
    if path.exists():
        return _load(path)
    folder.mkdir(parents=True, exist_ok=True)
    with _one_builder(path):
        if path.exists():  # another run on this machine built it while this one waited
            return _load(path)
        return _build(teacher, items, path, kind=kind, views=views, student_size=student_size,
                      view_seed=view_seed, augment=augment, batch_size=batch_size, workers=workers,
                      progress=progress, forward_mode=forward_mode)


def _load(path: Path) -> ViewCache:
    with np.load(path) as z:
        return ViewCache(z["pixels"], z["targets"], z["labels"], str(path), 0)


@contextlib.contextmanager
def _one_builder(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cache file: the runs of a bench that train at once wait for the
    one building a cache they share, instead of each spending the same teacher passes."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _build(teacher, items: list[tuple], path: Path, *, kind: Kind, views: int,
           student_size: int, view_seed: int, augment: bool, batch_size: int, workers: int, progress: bool,
           forward_mode: Callable[[], ContextManager]) -> ViewCache:
    """The teacher over every fixed view, written atomically to ``path``."""
    dataset = FixedViewDataset(items, teacher.size, views, view_seed, augment=augment)
    device = teacher.mean.device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_bad,
                        pin_memory=device.type == "cuda")
    teacher.eval()
    chunks: list[tuple] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(dataset), desc=f"teacher {kind} ({views} view{'s' * (views > 1)})", unit="view")
    for batch, ks, _ in loader:
        if batch is not None:
            on_device = batch.to(device, non_blocking=True)
            with forward_mode():
                out = teacher.features(on_device) if kind == "features" else teacher(on_device)
            small = F.interpolate(batch, size=(student_size, student_size), mode="bilinear", antialias=True)
            pixels = (small.clamp(0, 1) * 255).round().to(torch.uint8)
            labels = np.array([items[k // views][1] for k in ks.tolist()], dtype=np.int64)
            chunks.append((pixels.numpy(), out.float().cpu().numpy().astype(np.float16), labels))
        if bar:
            bar.update(len(ks) if ks is not None else batch_size)
    if bar:
        bar.close()
    pixels, targets, labels = (np.concatenate([c[i] for c in chunks]) for i in range(3)) if chunks else (
        np.zeros((0, 3, student_size, student_size), np.uint8), np.zeros((0, 1), np.float16), np.zeros(0, np.int64))
    atomic.write_with(path, lambda p: _save_npz(p, pixels=pixels, targets=targets, labels=labels))
    return ViewCache(pixels, targets, labels, str(path), len(targets))


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


class CachedViews(Dataset):
    """A cache as a dataset. ``pixels``: (student-resolution view in [0, 1], row), the row
    indexing the teacher's targets; ``labelled``: (that view, label); ``targets``: (teacher
    features, label), on which a linear-probe teacher's head trains alone."""

    def __init__(self, cache: ViewCache, give: Literal["pixels", "labelled", "targets"] = "pixels"):
        self.cache, self.give = cache, give

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, k: int):
        """``(tag, Sample)``, as every distill dataset yields (the views were decoded when cached)."""
        if self.give == "targets":
            value = torch.from_numpy(self.cache.targets[k].astype(np.float32))
            return int(self.cache.labels[k]), Sample(value, None, 0, 0)
        view = torch.from_numpy(self.cache.pixels[k]).float().div_(255)
        return (int(self.cache.labels[k]) if self.give == "labelled" else k), Sample(view, None, 0, 0)
