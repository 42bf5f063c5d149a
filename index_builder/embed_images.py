"""Pool shards -> embeddings + metadata: the per-shard work unit and its pipeline.

:func:`embed_shards` takes self-contained :class:`ShardTask` s and, for each, writes
``shards/ID.npy`` (float16, one row per kept item), ``shards/ID.parquet`` (the item
table) and finally ``shards/ID.done.json``. All three are atomic, the marker last, so a
killed build resumes by redoing exactly the shards without a valid marker. A
distributed runner can call the same function with one task per machine.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, Dataset

from curator import atomic
from curator.encoders import Encoder
from curator.errors import PlanMismatchError
from curator.formats import ITEM_SCHEMA, ShardDone, ShardTask, SkippedItem, load_doc, save_doc
from curator.images import DEFAULT_MAX_PIXELS
from curator.pipeline import ImagePipeline, collate
from curator.pool import PoolItem, list_items

from .memo import VectorMemo

log = logging.getLogger(__name__)


@dataclass
class EmbedOptions:
    batch_size: int = 64
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Decode workers' CPU priority (``os.nice``). None: 19 when the model runs on the CPU,
    #: so its OpenMP threads keep their cores and decoding fills the gaps (on 2 cores: 93% of
    #: the forward-only ceiling at nice 0, ~100% at 19); 0 on a GPU, where decoding is the
    #: bottleneck and must never wait.
    worker_nice: Optional[int] = None
    #: Consecutive shards read through one DataLoader, up to this many items: its workers start
    #: once per group, not per shard (on an H100, a loader per 1,000-image shard kept the
    #: encoder at 10-16% of its ceiling).
    loader_items: int = 100_000
    #: Distinct contents whose vectors are remembered (``memo.VectorMemo``), so an exact duplicate within
    #: this many costs no forward pass; 0 encodes every item.
    memo_items: int = 50_000


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
    """The core sample pipeline (read, hash, decode, the encoder's preprocessing), in a worker."""

    def __init__(self, items: list[PoolItem], preprocess, image_size: int, max_pixels: int):
        self.items, self.preprocess = items, preprocess
        self.pipeline = ImagePipeline(max_pixels=max_pixels, min_side=2 * image_size, hash=True)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        return i, self.pipeline.load((item.source, item.offset, item.size), self.preprocess)


def _nice_for(opts: EmbedOptions, encoder: Encoder) -> int:
    if opts.worker_nice is not None:
        return opts.worker_nice
    return 19 if encoder.device.type == "cpu" else 0


def _lower_priority(nice: int, _worker_id: int) -> None:
    if nice and hasattr(os, "nice"):
        os.nice(nice)


class _ShardOutput:
    """One shard's rows as they arrive from a loader shared with other shards; written once all
    are in (vectors allocated at the first row, so only the shards in flight hold memory)."""

    def __init__(self, task: ShardTask, items: list[PoolItem], dim: int):
        self.task, self.items, self.dim = task, items, dim
        self.vectors: Optional[np.ndarray] = None
        self.info: dict[int, tuple] = {}
        self.skipped: list[SkippedItem] = []
        self.seen, self.t0 = 0, time.perf_counter()

    @property
    def complete(self) -> bool:
        return self.seen == len(self.items)

    def add(self, i: int, vector: Optional[np.ndarray], meta: tuple) -> None:
        """Item ``i``'s vector and (sha256, width, height), or, without a vector, (reason, detail)."""
        if self.seen == 0:
            self.t0 = time.perf_counter()
        self.seen += 1
        if vector is None:
            item = self.items[i]
            self.skipped.append(SkippedItem(key=item.key, source=item.source, reason=meta[0], detail=meta[1]))
            return
        if self.vectors is None:
            self.vectors = np.zeros((len(self.items), self.dim), dtype=np.float16)
        self.vectors[i], self.info[i] = vector, meta

    def write(self, encoder: Encoder, out: Path) -> ShardDone:
        """The shard's outputs, atomically, the done-marker last."""
        items, info, kept = self.items, self.info, sorted(self.info)
        table = pa.table({
            "key": [items[i].key for i in kept], "source": [items[i].source for i in kept],
            "offset": [items[i].offset for i in kept], "size": [items[i].size for i in kept],
            "sha256": [info[i][0] for i in kept], "width": [info[i][1] for i in kept],
            "height": [info[i][2] for i in kept], "caption": [items[i].caption for i in kept],
            "meta": [items[i].meta for i in kept],
        }, schema=ITEM_SCHEMA)
        vectors = self.vectors[kept] if self.vectors is not None else np.zeros((0, encoder.dim), np.float16)
        paths = shard_paths(out, self.task.shard_id)
        atomic.write_npy(paths["npy"], vectors)
        atomic.write_with(paths["parquet"], lambda p: pq.write_table(table, p))
        done = ShardDone(shard_id=self.task.shard_id, task_digest=self.task.digest(), encoder=encoder.spec,
                         dim=encoder.dim, n_items=len(kept), n_skipped=len(self.skipped), skipped=self.skipped,
                         embeddings_file=paths["npy"].name, metadata_file=paths["parquet"].name,
                         seconds=round(time.perf_counter() - self.t0, 3))
        save_doc(paths["done"], done)
        self.vectors = None
        return done


def _groups(tasks: Iterable[ShardTask], loader_items: int) -> Iterator[list[tuple[ShardTask, list[PoolItem]]]]:
    """Consecutive shards with their items, about ``loader_items`` items per group (listed lazily,
    so a million-shard pool is never listed at once)."""
    group: list[tuple[ShardTask, list[PoolItem]]] = []
    n = 0
    for task in tasks:
        items = list_items(task)
        group.append((task, items))
        n += len(items)
        if n >= loader_items:
            yield group
            group, n = [], 0
    if group:
        yield group


def _loader(items: list[PoolItem], encoder: Encoder, opts: EmbedOptions) -> DataLoader:
    return DataLoader(_ItemDataset(items, encoder.preprocess, encoder.image_size, opts.max_pixels),
                      batch_size=opts.batch_size, num_workers=opts.workers, collate_fn=collate,
                      pin_memory=encoder.device.type == "cuda",
                      prefetch_factor=4 if opts.workers > 0 else None,
                      worker_init_fn=partial(_lower_priority, _nice_for(opts, encoder)))


def embed_shards(tasks: Iterable[ShardTask], encoder: Encoder, out: Path, opts: EmbedOptions,
                 on_items: Optional[Callable[[int], None]] = None) -> Iterator[ShardDone]:
    """Embed shards in order; yields each shard's done-marker as soon as its outputs are written.

    Consecutive shards share one DataLoader (up to ``opts.loader_items`` items), so its decode
    workers start once per group instead of once per shard. The loader keeps order, so shards
    finish one after another and a killed build loses at most the shards in flight."""
    memo = VectorMemo(opts.memo_items)
    for group in _groups(tasks, opts.loader_items):
        outputs = [_ShardOutput(task, items, encoder.dim) for task, items in group]
        where = [(s, i) for s, o in enumerate(outputs) for i in range(len(o.items))]
        pending = iter(outputs)
        ready = next(pending, None)
        while ready is not None and ready.complete:  # shards with no items
            yield ready.write(encoder, out)
            ready = next(pending, None)
        if not where:
            continue
        for idx, pixels, samples, bad in _loader([outputs[s].items[i] for s, i in where], encoder, opts):
            vectors = memo.encode(encoder, pixels, [s.sha256 for s in samples]) if pixels is not None else []
            for f, vector, sample in zip(idx, vectors, samples):
                outputs[where[f][0]].add(where[f][1], vector, (sample.sha256, sample.width, sample.height))
            for f, skip in bad:
                outputs[where[f][0]].add(where[f][1], None, (skip.reason, skip.detail))
            if on_items:
                on_items(len(idx) + len(bad))
            while ready is not None and ready.complete:
                yield ready.write(encoder, out)
                ready = next(pending, None)
    if memo.reused:
        log.info("%d exact duplicates took their first copy's vector (no forward pass)", memo.reused)


def embed_shard(task: ShardTask, encoder: Encoder, out: Path, opts: EmbedOptions,
                on_items: Optional[Callable[[int], None]] = None) -> ShardDone:
    """Embed one shard (a distributed runner's work unit) and write its outputs atomically."""
    return next(iter(embed_shards([task], encoder, out, opts, on_items)))
