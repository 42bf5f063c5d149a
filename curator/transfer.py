"""Write a selection as a transfer set: webdataset shards + samples.parquet + manifest.json.

Images are copied from the pool with ranged reads, byte for byte (never re-encoded), and
checked against the sha256 recorded at indexing time, so a pool that changed under the
index is caught here instead of poisoning a training run. Everything is written into a
hidden temp folder that is renamed into place last: a crash never leaves a set that looks
complete. The manifest's ``shardlist`` follows webdataset's ``wids-shard-index-v1``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CuratorError
from .formats import ShardEntry, TransferManifest, dump_doc, load_doc
from .pool import read_range

#: The file that describes a transfer set (and makes its folder one).
MANIFEST_FILE = "manifest.json"

SAMPLES_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("pool_id", pa.int64()), ("pool_key", pa.string()),
    ("source", pa.string()), ("query_id", pa.string()), ("query_label", pa.string()), ("rank", pa.int64()),
    ("similarity", pa.float32()), ("sha256", pa.string()), ("caption", pa.string()),
])


class _ShardWriter:
    """Fills ``transfer-NNNNN.tar`` files of at most ``size`` samples, hashing as it goes."""

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = folder, size
        self.shards: list[dict] = []
        self._tar = None
        self._count = 0

    def add(self, key: str, files: dict[str, bytes]) -> str:
        if self._tar is None or self._count >= self.size:
            self._close()
            name = f"transfer-{len(self.shards):05d}.tar"
            self._tar = tarfile.open(self.folder / name, "w", format=tarfile.USTAR_FORMAT)
            self.shards.append({"url": name, "nsamples": 0})
            self._count = 0
        for ext, data in files.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444   # reproducible tars
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self.shards[-1]["nsamples"] += 1
        return self.shards[-1]["url"]

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            path = self.folder / self.shards[-1]["url"]
            sha, md5 = hashlib.sha256(), hashlib.md5()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(block)
                    md5.update(block)
            self.shards[-1].update(filesize=path.stat().st_size, sha256=sha.hexdigest(), md5sum=md5.hexdigest())
            self._tar = None

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
    tmp = out_root / f".{set_id}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        rows = items.take(pa.array(selection.ids, type=pa.int64())).to_pylist() if len(selection.ids) else []
        writer = _ShardWriter(tmp, shard_size)
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
            key = f"{len(samples):08d}"
            meta = {"pool_id": row["id"], "pool_key": row["key"], "query_id": query_ids[q],
                    "query_label": query_labels[q], "rank": int(rank), "similarity": round(float(score), 6),
                    "caption": row["caption"]}
            shard = writer.add(key, {image_extension(row["key"], row["source"], data): data,
                                     "json": json.dumps(meta).encode()})
            samples.append((key, shard, row["id"], row["key"], row["source"], query_ids[q], query_labels[q],
                            int(rank), float(score), row["sha256"], row["caption"]))
            if n % 256 == 0:
                progress(n / max(1, len(rows)))
        shards = writer.close()
        cols = list(zip(*samples)) if samples else [[] for _ in SAMPLES_SCHEMA]
        pq.write_table(pa.table({f.name: list(c) for f, c in zip(SAMPLES_SCHEMA, cols)}, schema=SAMPLES_SCHEMA),
                       tmp / "samples.parquet")
        for name, table in (tables or {}).items():
            pq.write_table(table, tmp / name)
        manifest = manifest.model_copy(update={
            "shardlist": [ShardEntry(**s) for s in shards],
            "counts": manifest.counts.model_copy(update={"emitted": len(samples), "unreadable": missing}),
            # the caller's phases, plus this one, recorded in the one manifest write
            "timings": dict(manifest.timings, write=round(time.perf_counter() - t_write, 4))})
        (tmp / MANIFEST_FILE).write_text(json.dumps(dump_doc(manifest), indent=2) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        return manifest
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
