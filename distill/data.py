"""Labelled target sets and unlabelled transfer sets, as torch datasets of PIL-decoded images.

Both load through the core sample pipeline (``curator.pipeline``: pixel caps, alpha on white,
one error policy): a corrupt sample is skipped and counted, never a crash. Augmented views are made once at the teacher's resolution and
resized for the student, so teacher and student always see *the same* view.
"""
from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset
from torchvision import transforms

from curator.errors import CuratorError
from curator.images import is_image_name
from curator.pipeline import ImagePipeline, Skip, collate
from curator.pool import scan_tar
from curator.refshards import Ref
from curator.transfer import read_manifest, shard_path_or_layout

log = logging.getLogger(__name__)


@dataclass
class LabelledSet:
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)   # split -> [(path, label)]

    def describe(self) -> dict:
        return {"classes": self.classes, **{k: len(v) for k, v in self.splits.items()}}


def load_labelled(path: str | Path, *, labels_per_class: Optional[int] = None, val_per_class: int = 1,
                  seed: int = 0, usable: Optional[Callable[[str], bool]] = None) -> LabelledSet:
    """A folder with train/ (val/, test/) sub-folders of classes; a folder of class folders, split
    seeded into ``labels_per_class`` train + ``val_per_class`` val + the rest test; or a CSV or
    parquet table with ``path,label[,split]`` (relative paths are relative to the table)."""
    path = Path(path)
    if path.is_file():
        return _from_table(path)
    if not path.is_dir():
        raise CuratorError(f"labelled set {path} is neither a folder nor a CSV")
    if (path / "train").is_dir():
        classes = sorted(d.name for d in (path / "train").iterdir() if d.is_dir())
        splits = {s: _files_by_class(path / s, classes) for s in ("train", "val", "test") if (path / s).is_dir()}
        return LabelledSet(classes, splits)
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise CuratorError(f"{path}: need at least two class sub-folders")
    if labels_per_class is None:
        raise CuratorError(f"{path} has no train/ split: give --labels-per-class to split it (seeded)")
    rng = random.Random(seed)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(classes):
        files = sorted(str(p) for p in (path / cls).rglob("*") if p.is_file() and is_image_name(p.name))
        if usable is not None:  # e.g. only images that decode: one bad file must not unbalance the split
            files = [f for f in files if usable(f)]
        rng.shuffle(files)
        if len(files) < 2:
            raise CuratorError(f"class {cls!r} has {len(files)} image(s); need 2 (one to train, one to test)")
        # a class too small for the full split keeps one test image, then gives train priority over val
        n_train = min(labels_per_class, len(files) - 1)
        n_val = min(val_per_class, len(files) - n_train - 1)
        if (n_train, n_val) != (labels_per_class, val_per_class):
            log.warning("class %r has %d images: %d train, %d val, %d test", cls, len(files), n_train, n_val,
                        len(files) - n_train - n_val)
        splits["train"] += [(f, label) for f in files[:n_train]]
        splits["val"] += [(f, label) for f in files[n_train:n_train + n_val]]
        splits["test"] += [(f, label) for f in files[n_train + n_val:]]
    return LabelledSet(classes, splits)


def _files_by_class(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    return [(str(p), label) for label, cls in enumerate(classes) if (root / cls).is_dir()
            for p in sorted((root / cls).rglob("*")) if p.is_file() and is_image_name(p.name)]


def _from_table(path: Path) -> LabelledSet:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in pq.read_table(path).to_pylist()]
        except Exception as exc:
            raise CuratorError(f"{path}: not a readable parquet table ({exc})") from None
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise CuratorError(f"{path}: needs 'path' and 'label' columns (and optionally 'split')")
    classes = sorted({r["label"] for r in rows})
    splits: dict[str, list] = {}
    for r in rows:
        file = Path(r["path"]) if Path(r["path"]).is_absolute() else path.parent / r["path"]
        splits.setdefault(r.get("split") or "train", []).append((str(file), classes.index(r["label"])))
    return LabelledSet(classes, splits)


def view_transform(size: int, train: bool) -> transforms.Compose:
    """Augmented (train) or centred (eval) view at ``size``, as a [0, 1] tensor."""
    if train:
        return transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    return transforms.Compose([transforms.Resize(size, antialias=True), transforms.CenterCrop(size),
                               transforms.ToTensor()])


#: Labelled images are decoded once per process (they are few and seen every epoch, by every stage and run).
_LABELLED = ImagePipeline(min_side=256)
_MEMO: dict = {}
_MEMO_MAX = 4096


def _decode_memo(ref):
    """``_LABELLED.decode`` remembered; failures are not (a file may be fixed and retried)."""
    if ref not in _MEMO:
        decoded = _LABELLED.decode(ref)
        if isinstance(decoded, Skip):
            return decoded
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[ref] = decoded
    return _MEMO[ref]


class ImageDataset(Dataset):
    """(view, label) pairs through the core sample pipeline; a bad sample is set aside by the collate.

    ``memo`` keeps decoded images in memory (for the small labelled sets, not transfer sets)."""

    def __init__(self, items: list[tuple], size: int, train: bool, memo: bool = False):
        self.items, self.transform, self.memo = items, view_transform(size, train), memo

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        ref, label = self.items[i]
        if not self.memo:
            return label, _LABELLED.load(ref, self.transform)
        decoded = _decode_memo(ref)
        return label, decoded if isinstance(decoded, Skip) else ImagePipeline.finish(*decoded, self.transform)


def collate_skip_bad(batch):
    """(views, tags, number of bad samples): the one collate of every distill loader."""
    b = collate(batch)
    if b.values is None:
        return None, None, len(b.skipped)
    return b.values, torch.tensor(b.tags), len(b.skipped)


def transfer_items(folder: Path) -> list[tuple]:
    """Every image of a transfer set as ((file, offset, size), -1): in its shards after checking each
    shard's sha256, or, for a set by reference on storage this machine shares with the pool, in the
    pool itself after checking each sample's sha256 (a vanished or changed item is an error naming it)."""
    import hashlib

    items = []
    for shard in read_manifest(folder).shardlist:
        path = folder / shard.url
        if not path.is_file():
            source = shard_path_or_layout(folder, shard.url)
            refs = [seg for seg in source if isinstance(seg, Ref)]
            for ref in refs:
                ref.read()  # checks its sha256
            items += [((ref.source, ref.offset, ref.size), -1) for ref in refs]
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != shard.sha256:
            raise CuratorError(f"transfer-set shard {path} fails its sha256 check (manifest {shard.sha256[:12]}..., "
                               f"file {digest[:12]}...): re-download it")
        items += [((it.source, it.offset, it.size), -1) for it in scan_tar(str(path))]
    return items


def open_transfer_set(source: str, cache: Path, token: Optional[str] = None) -> Path:
    """A local transfer-set folder, or ``http://host/transfer-sets/ID`` downloaded (sha256-checked)."""
    if source.startswith(("http://", "https://")):
        from curator.client import CuratorClient

        base, sep, set_id = source.rstrip("/").partition("/transfer-sets/")
        if not sep or not set_id:
            raise CuratorError(f"{source}: expected http://HOST:PORT/transfer-sets/ID")
        with CuratorClient(base, token) as client:
            return client.download_transfer_set(set_id, cache)
    folder = Path(source)
    read_manifest(folder)  # a clear error now, not inside a worker process later
    return folder


def fixed_view(img, size: int, key: str) -> torch.Tensor:
    """A random-resized-crop + flip whose parameters depend only on ``key``: the same view every
    time, so cached teacher outputs always match the view the student sees."""
    import math

    from torchvision.transforms import functional as TF

    rng = random.Random(key)
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.35, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
            break
    else:
        cw = ch = min(w, h)
        top, left = (h - ch) // 2, (w - cw) // 2
    view = TF.resized_crop(img, top, left, ch, cw, [size, size], antialias=True)
    if rng.random() < 0.5:
        view = TF.hflip(view)
    return TF.to_tensor(view)


class FixedViewDataset(Dataset):
    """``views`` fixed augmented views of each image: item k is view k % views of image k // views.
    With ``augment=False``, one centred view per image."""

    def __init__(self, items: list[tuple], size: int, views: int, seed: int, augment: bool = True):
        self.items, self.size, self.seed = items, size, seed
        self.views, self.centre = (views, None) if augment else (1, view_transform(size, False))

    def __len__(self) -> int:
        return len(self.items) * self.views

    def __getitem__(self, k: int):
        ref, _ = self.items[k // self.views]
        transform = self.centre or (lambda img: fixed_view(img, self.size, f"{self.seed}-{k}"))
        return k, _LABELLED.load(ref, transform)
