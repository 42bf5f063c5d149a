"""The pool's kept vectors and items, streamed from the per-shard files in bounded memory.

Nothing here holds the pool at once: vectors are read from each shard's memory-mapped
``.npy`` a chunk at a time, the item table is written to ``items.arrow`` shard by shard,
and exact duplicates are found from 16 bytes per item (the sha256's first 128 bits),
not from a set of strings.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curator import atomic
from curator.formats import INDEX_ITEM_SCHEMA, ShardTask

from .embed_images import shard_paths

#: Bytes per item that duplicate detection holds (two uint64 halves and the sort order).
DEDUP_BYTES_PER_ITEM = 24


class ShardVectors:
    """The kept vectors of some shards, addressable by a running id from ``first_id``."""

    def __init__(self, out: Path, tasks: list[ShardTask], keep: dict[str, np.ndarray], *,
                 chunk_rows: int = 200_000, first_id: int = 0):
        self.files = [shard_paths(out, t.shard_id)["npy"] for t in tasks]
        self.rows = [np.flatnonzero(keep[t.shard_id]) for t in tasks]
        self.counts = [len(r) for r in self.rows]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.chunk_rows, self.first_id = chunk_rows, first_id
        self.dim = int(self._map(0).shape[1]) if self.files else 0

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    def _map(self, i: int) -> np.ndarray:
        return np.load(self.files[i], mmap_mode="r")

    def chunks(self) -> Iterator[np.ndarray]:
        """float32 chunks of at most ``chunk_rows`` rows, in id order."""
        for i, rows in enumerate(self.rows):
            if not len(rows):
                continue
            mapped = self._map(i)
            contiguous = rows[-1] - rows[0] + 1 == len(rows)
            for s in range(0, len(rows), self.chunk_rows):
                part = rows[s:s + self.chunk_rows]
                block = mapped[part[0]:part[-1] + 1] if contiguous else mapped[part]
                yield np.ascontiguousarray(block, dtype=np.float32)

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Vectors for local ids (any order), touching only those rows of each mapped shard."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        shard_of = np.searchsorted(self.starts, sorted_ids, side="right") - 1
        result = np.empty((len(ids), self.dim), dtype=np.float32)
        for i in np.unique(shard_of):
            where = shard_of == i
            rows = self.rows[i][sorted_ids[where] - self.starts[i]]
            result[order[where]] = self._map(int(i))[rows]
        return result


def _sha_keys(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hi, lo, has) from the sha256 column: the first 128 bits as two uint64; ``has`` is False
    where a shard carries no hash (imported embeddings), and such items are never duplicates."""
    shas = table.column("sha256").to_pylist()
    has = np.array([bool(s) and len(s) >= 32 for s in shas], dtype=bool)
    raw = bytes.fromhex("".join(s[:32] if h else "0" * 32 for s, h in zip(shas, has)))
    pairs = np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64) if shas else np.zeros((0, 2), np.uint64)
    return pairs[:, 0], pairs[:, 1], has


def release_arrow_memory() -> None:
    """Hand Arrow's freed buffers back to the OS: its allocator keeps them otherwise, and they count
    against --max-build-memory like anything else."""
    pa.default_memory_pool().release_unused()


def releasing_arrow_memory(fn):
    """``fn``, then Arrow's freed buffers back to the OS (its tables are gone once it returns): every
    step that reads tables of the whole pool says so once, here, rather than at each call site."""
    @functools.wraps(fn)
    def step(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            release_arrow_memory()
    return step


@releasing_arrow_memory
def keep_masks(out: Path, tasks: list[ShardTask], keep_duplicates: bool = False,
               seen: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[dict[str, np.ndarray], int]:
    """Per-shard masks of the items to index (the first of each exact duplicate), and the count
    dropped. ``seen``: (hi, lo) keys already in the index (an append), which new items must not repeat."""
    tables = {t.shard_id: pq.read_table(shard_paths(out, t.shard_id)["parquet"], columns=["sha256"]) for t in tasks}
    if keep_duplicates:
        return {k: np.ones(t.num_rows, dtype=bool) for k, t in tables.items()}, 0
    keys = [_sha_keys(t) for t in tables.values()]
    hi = np.concatenate([seen[0] if seen else np.zeros(0, np.uint64)] + [k[0] for k in keys])
    lo = np.concatenate([seen[1] if seen else np.zeros(0, np.uint64)] + [k[1] for k in keys])
    has = np.concatenate([np.ones(len(seen[0]) if seen else 0, bool)] + [k[2] for k in keys])
    order = np.lexsort((lo, hi))  # stable: among equal keys, the earliest item comes first
    first = np.ones(len(order), dtype=bool)
    first[1:] = (hi[order][1:] != hi[order][:-1]) | (lo[order][1:] != lo[order][:-1])
    keep = np.zeros(len(order), dtype=bool)
    keep[order[first]] = True
    keep |= ~has
    offset = len(seen[0]) if seen else 0
    masks, dups = {}, 0
    for shard_id, table in tables.items():
        masks[shard_id] = keep[offset:offset + table.num_rows]
        dups += int((~masks[shard_id]).sum())
        offset += table.num_rows
    return masks, dups


def seen_keys(items_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) sha keys of an existing ``items.arrow``, for an append's duplicate check."""
    table = pa.ipc.open_file(pa.memory_map(str(items_path), "r")).read_all().select(["sha256"])
    hi, lo, has = _sha_keys(table)
    return hi[has], lo[has]


@releasing_arrow_memory
def write_items(path: Path, out: Path, tasks: list[ShardTask], keep: dict[str, np.ndarray], *,
                previous: Optional[Path] = None) -> int:
    """Stream ``items.arrow``: the rows of ``previous`` (an append's base), then each shard's kept
    items, ids running on (row i is faiss id i). Returns the row count written. Atomic: a resumed
    build trusts an ``items.arrow`` that exists."""
    n = 0
    with atomic.atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
            pa.ipc.new_file(sink, INDEX_ITEM_SCHEMA) as writer:
        if previous is not None:
            reader = pa.ipc.open_file(pa.memory_map(str(previous), "r"))
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                writer.write_batch(batch)
                n += batch.num_rows
        for task in tasks:
            mask = keep[task.shard_id]
            table = pq.read_table(shard_paths(out, task.shard_id)["parquet"]).filter(pa.array(mask))
            table = table.add_column(0, "row", pa.array(np.flatnonzero(mask), pa.int64()))
            table = table.add_column(0, "shard_id", pa.array([task.shard_id] * table.num_rows, pa.string()))
            table = table.add_column(0, "id", pa.array(np.arange(n, n + table.num_rows, dtype=np.int64)))
            writer.write_table(table.cast(INDEX_ITEM_SCHEMA), max_chunksize=65536)
            n += table.num_rows
    return n
