"""Pool shards -> embeddings + metadata: the per-shard work unit and its pipeline.

:func:`embed_shards` takes self-contained :class:`ShardTask` s and, for each, writes
``shards/ID.npy`` (float16, one row per kept item), ``shards/ID.parquet`` (the item
table) and finally ``shards/ID.done.json``. All three are atomic, the marker last, so a
killed build resumes by redoing exactly the shards without a valid marker. A
distributed runner can call the same function with one task per machine.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from curator import atomic
from curator.encoders import Encoder
from curator.errors import BadImageError, PlanMismatchError
from curator.formats import ITEM_SCHEMA, ShardDone, ShardTask, SkippedItem, load_doc
from curator.images import decode_image
from curator.pool import PoolItem, list_items, read_range

log = logging.getLogger(__name__)


@dataclass
class EmbedOptions:
    batch_size: int = 64
    workers: int = 2
    max_pixels: int = 40_000_000
    #: Decode workers' CPU priority (``os.nice``). None: 19 when the model runs on the CPU,
    #: so its OpenMP threads keep their cores and decoding fills the gaps (on 2 cores: 93% of
    #: the forward-only ceiling at nice 0, ~100% at 19); 0 on a GPU, where decoding is the
    #: bottleneck and must never wait.
    worker_nice: Optional[int] = None


def shard_paths(out: Path, shard_id: str) -> dict[str, Path]:
    base = out / "shards"
    return {"npy": base / f"{shard_id}.npy", "parquet": base / f"{shard_id}.parquet",
            "done": base / f"{shard_id}.done.json"}


def read_done(out: Path, task: ShardTask, encoder_spec: str) -> Optional[ShardDone]:
    """The shard's valid done-marker, or None when it must be (re)embedded."""
    paths = shard_paths(out, task.shard_id)
    if not paths["done"].exists():
        return None
    done = load_doc(paths["done"], ShardDone)
    if done.task_digest != task.digest() or done.encoder != encoder_spec:
        raise PlanMismatchError(f"{paths['done']} was made from other inputs or another encoder; "
                                f"use a fresh --out folder or --overwrite")
    if not (paths["npy"].exists() and paths["parquet"].exists()):
        return None
    return done


class _ItemDataset(Dataset):
    """Ranged read + sha256 + safe decode + the encoder's preprocessing, in a worker."""

    def __init__(self, items: list[PoolItem], preprocess, image_size: int, max_pixels: int):
        self.items, self.preprocess = items, preprocess
        self.min_side, self.max_pixels = 2 * image_size, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            data = read_range(item.source, item.offset, item.size)
        except OSError as exc:
            return i, None, ("unreadable", f"{type(exc).__name__}: {exc}")
        sha = hashlib.sha256(data).hexdigest()
        try:
            img = decode_image(data, max_pixels=self.max_pixels, min_side=self.min_side)
            pixels = self.preprocess(img)
        except BadImageError as exc:
            return i, None, (exc.reason, exc.detail)
        except Exception as exc:  # a preprocessing failure on a strange image must not kill a build
            return i, None, ("preprocess_failed", f"{type(exc).__name__}: {exc}")
        width, height = img.info.get("original_size", img.size)
        return i, pixels, (sha, width, height)


def _nice_for(opts: EmbedOptions, encoder: Encoder) -> int:
    if opts.worker_nice is not None:
        return opts.worker_nice
    return 19 if encoder.device.type == "cpu" else 0


def default_workers() -> int:
    """One core for the model's main thread, the rest decode (at least one worker)."""
    return max(1, (os.cpu_count() or 2) - 1)


def _lower_priority(nice: int, _worker_id: int) -> None:
    if nice and hasattr(os, "nice"):
        os.nice(nice)


def _collate(batch):
    ok = [b for b in batch if b[1] is not None]
    bad = [(b[0], *b[2]) for b in batch if b[1] is None]
    pixels = torch.stack([b[1] for b in ok]) if ok else None
    return [b[0] for b in ok], pixels, [b[2] for b in ok], bad


def embed_shard(task: ShardTask, encoder: Encoder, out: Path, opts: EmbedOptions,
                on_items: Optional[Callable[[int], None]] = None) -> ShardDone:
    """Embed one shard and write its outputs atomically; returns the done-marker."""
    t0 = time.perf_counter()
    items = list_items(task)
    loader = DataLoader(_ItemDataset(items, encoder.preprocess, encoder.image_size, opts.max_pixels),
                        batch_size=opts.batch_size, num_workers=opts.workers, collate_fn=_collate,
                        pin_memory=encoder.device.type == "cuda",
                        prefetch_factor=4 if opts.workers > 0 else None,
                        worker_init_fn=partial(_lower_priority, _nice_for(opts, encoder)))
    vectors = np.zeros((len(items), encoder.dim), dtype=np.float16)
    info: dict[int, tuple] = {}
    skipped: list[SkippedItem] = []
    for idx, pixels, metas, bad in loader:
        if pixels is not None:
            vectors[idx] = encoder.encode_images(pixels)
            info.update(zip(idx, metas))
        skipped.extend(SkippedItem(key=items[i].key, source=items[i].source, reason=r, detail=d) for i, r, d in bad)
        if on_items:
            on_items(len(idx) + len(bad))
    kept = sorted(info)
    table = pa.table({
        "key": [items[i].key for i in kept], "source": [items[i].source for i in kept],
        "offset": [items[i].offset for i in kept], "size": [items[i].size for i in kept],
        "sha256": [info[i][0] for i in kept], "width": [info[i][1] for i in kept],
        "height": [info[i][2] for i in kept], "caption": [items[i].caption for i in kept],
        "meta": [items[i].meta for i in kept],
    }, schema=ITEM_SCHEMA)
    paths = shard_paths(out, task.shard_id)
    atomic.write_npy(paths["npy"], vectors[kept])
    atomic.write_with(paths["parquet"], lambda p: pq.write_table(table, p))
    done = ShardDone(shard_id=task.shard_id, task_digest=task.digest(), encoder=encoder.spec, dim=encoder.dim,
                     n_items=len(kept), n_skipped=len(skipped), skipped=skipped,
                     embeddings_file=paths["npy"].name, metadata_file=paths["parquet"].name,
                     seconds=round(time.perf_counter() - t0, 3))
    atomic.write_json(paths["done"], done.model_dump())
    return done
