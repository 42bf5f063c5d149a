"""Write a selection as a transfer set: webdataset shards (by reference, or copied) + samples.parquet +
manifest.json.

Images are copied from the pool with ranged reads, byte for byte (never re-encoded), and
checked against the sha256 recorded at indexing time, so a pool that changed under the
index is caught here instead of poisoning a training run. Everything is written into a
hidden temp folder that is renamed into place last: a crash never leaves a set that looks
complete. The manifest's ``shardlist`` follows webdataset's ``wids-shard-index-v1``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CuratorError
from .formats import ShardEntry, TransferManifest, dump_doc, load_doc
from .pool import read_range
from .refshards import SAMPLES_FILE, end_of_archive, sample_meta, sample_segments

#: The file that describes a transfer set (and makes its folder one).
MANIFEST_FILE = "manifest.json"

SAMPLES_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("pool_id", pa.int64()), ("pool_key", pa.string()),
    ("source", pa.string()), ("query_id", pa.string()), ("query_label", pa.string()), ("rank", pa.int64()),
    ("similarity", pa.float32()), ("sha256", pa.string()), ("caption", pa.string()),
    # where the image lives in the pool: a by-reference set's shards are assembled from these
    ("ext", pa.string()), ("offset", pa.int64()), ("size", pa.int64()),
])


class _ShardWriter:
    """Lays samples out as ``transfer-NNNNN.tar`` shards of at most ``size`` samples and hashes each
    shard's bytes; writes them to disk only when the set is materialized (``copy``). Both modes lay out
    the same bytes (``curator.refshards``), so a by-reference shard served later hashes the same."""

    def __init__(self, folder: Path, size: int, copy: bool):
        self.folder, self.size, self.copy = folder, size, copy
        self.shards: list[dict] = []
        self._fh = None
        self._open = False
        self._count = 0

    def add(self, key: str, ext: str, data: bytes, meta: bytes) -> str:
        if not self._open or self._count >= self.size:
            self._close()
            name = f"transfer-{len(self.shards):05d}.tar"
            self._fh = open(self.folder / name, "wb") if self.copy else None
            self._sha, self._md5, self._len, self._open = hashlib.sha256(), hashlib.md5(), 0, True
            self.shards.append({"url": name, "nsamples": 0})
            self._count = 0
        for seg in sample_segments(key, ext, data, len(data), meta):
            self._emit(seg)
        self._count += 1
        self.shards[-1]["nsamples"] += 1
        return self.shards[-1]["url"]

    def _emit(self, data: bytes) -> None:
        self._sha.update(data)
        self._md5.update(data)
        self._len += len(data)
        if self._fh is not None:
            self._fh.write(data)

    def _close(self) -> None:
        if self._open:
            self._emit(end_of_archive(self._len))
            if self._fh is not None:
                self._fh.close()
            self.shards[-1].update(filesize=self._len, sha256=self._sha.hexdigest(), md5sum=self._md5.hexdigest())
            self._open, self._fh = False, None

    def close(self) -> list[dict]:
        self._close()
        return self.shards


def image_extension(key: str, source: str, data: bytes) -> str:
    for name in (key, source):
        ext = name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""
        if ext in ("jpg", "jpeg", "png", "webp"):
            return "jpg" if ext == "jpeg" else ext
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"


def write_transfer_set(items: pa.Table, selection, query_ids: list[str], query_labels: list[Optional[str]],
                       out_root: Path, manifest: TransferManifest, *,
                       progress: Callable[[float], None] = lambda f: None,
                       cancelled: Callable[[], bool] = lambda: False,
                       tables: Optional[dict[str, pa.Table]] = None) -> TransferManifest:
    """Write the set to ``out_root/<manifest.id>`` atomically; returns the completed manifest
    (``manifest`` is the caller's part: this adds the shards, the counts it saw, its own time).
    ``tables``: more parquet files for the folder (``curator.setview``'s), renamed into place with it."""
    set_id, shard_size = manifest.id, manifest.params.shard_size
    final = out_root / set_id
    if final.exists():
        raise CuratorError(f"transfer set {final} already exists")
    t_write = time.perf_counter()
    with staged_folder(final) as tmp:
        rows = items.take(pa.array(selection.ids, type=pa.int64())).to_pylist() if len(selection.ids) else []
        writer = _ShardWriter(tmp, shard_size, copy=manifest.params.materialize == "copy")
        samples, missing = [], 0
        for n, (row, q, rank, score) in enumerate(zip(rows, selection.query, selection.rank, selection.score)):
            if cancelled():
                raise InterruptedError("cancelled")
            try:
                data = read_range(row["source"], row["offset"], row["size"])
            except OSError:
                missing += 1
                continue
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                missing += 1
                continue
            key, ext = f"{len(samples):08d}", image_extension(row["key"], row["source"], data)
            meta = {"pool_id": row["id"], "pool_key": row["key"], "query_id": query_ids[q],
                    "query_label": query_labels[q], "rank": int(rank), "similarity": float(score),
                    "caption": row["caption"]}
            shard = writer.add(key, ext, data, sample_meta(meta))
            samples.append((key, shard, row["id"], row["key"], row["source"], query_ids[q], query_labels[q],
                            int(rank), float(score), row["sha256"], row["caption"], ext, row["offset"],
                            row["size"]))
            if n % 256 == 0:
                progress(n / max(1, len(rows)))
        shards = writer.close()
        cols = list(zip(*samples)) if samples else [[] for _ in SAMPLES_SCHEMA]
        # one row group per shard: serving a shard by reference reads only its own rows
        pq.write_table(pa.table({f.name: list(c) for f, c in zip(SAMPLES_SCHEMA, cols)}, schema=SAMPLES_SCHEMA),
                       tmp / SAMPLES_FILE, row_group_size=shard_size)
        for name, table in (tables or {}).items():
            pq.write_table(table, tmp / name)
        manifest = manifest.model_copy(update={
            "shardlist": [ShardEntry(**s) for s in shards],
            "counts": manifest.counts.model_copy(update={"emitted": len(samples), "unreadable": missing}),
            # the caller's phases, plus this one, recorded in the one manifest write
            "timings": dict(manifest.timings, write=round(time.perf_counter() - t_write, 4))})
        (tmp / MANIFEST_FILE).write_text(json.dumps(dump_doc(manifest), indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A hidden temp folder beside ``final``: renamed into place (each file fsync'd first) when the block
    ends without error, removed otherwise. A set is never seen half-written, and a killed writer leaves
    only a ``.ID.tmp-*`` folder that start-up cleans."""
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def new_set_id() -> str:
    return time.strftime("ts-%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def read_manifest(folder: str | Path) -> TransferManifest:
    """A transfer set's manifest, validated: the one way any wing reads it."""
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file():
        raise CuratorError(f"{folder}: not a transfer set (no {MANIFEST_FILE})")
    return load_doc(folder / MANIFEST_FILE, TransferManifest)


def shard_path_or_layout(folder: Path, name: str):
    """Where shard ``name`` of the set in ``folder`` comes from: its file (a copied or materialized set),
    or the layout to assemble it from the pool (a set by reference). CuratorError when the set has no
    such shard; a copied set's missing file is that error too, never quietly replaced."""
    from .refshards import shard_layout

    path = folder / name
    if path.is_file():
        return path
    manifest = read_manifest(folder)
    by_reference = manifest.params.materialize == "reference"
    segs = shard_layout(folder, name) if by_reference and name in {s.url for s in manifest.shardlist} else None
    if segs is None:
        raise CuratorError(f"no shard {name!r} in transfer set {folder.name!r}")
    return segs


def materialize(folder: str | Path, out: str | Path, progress: Callable[[float], None] = lambda f: None) -> Path:
    """Turn a by-reference set into one that holds its shards: every pool item read and sha256-checked,
    every shard checked against the manifest, the new folder renamed into place last."""
    from .refshards import read_segments

    folder, out = Path(folder), Path(out)
    manifest = read_manifest(folder)
    final = out / manifest.id
    if final.exists():
        raise CuratorError(f"{final} already exists")
    with staged_folder(final) as tmp:
        for n, shard in enumerate(manifest.shardlist):
            source = shard_path_or_layout(folder, shard.url)
            sha = hashlib.sha256()
            with open(tmp / shard.url, "wb") as fh:
                for block in (read_segments(source) if isinstance(source, list) else _file_blocks(source)):
                    sha.update(block)
                    fh.write(block)
            if sha.hexdigest() != shard.sha256:
                raise CuratorError(f"shard {shard.url} does not match its manifest sha256: the pool changed")
            progress((n + 1) / max(1, len(manifest.shardlist)))
        for f in folder.iterdir():
            if f.is_file() and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
    return final


def _file_blocks(path: Path):
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(1 << 20), b"")
