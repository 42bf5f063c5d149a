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
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CuratorError
from .formats import ShardEntry, TransferManifest, dump_doc, load_doc
from .pool import read_range
from .processes import spawn_pool, usable_cpus
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
    """Lays one shard's samples out as a tar and hashes its bytes; writes them to disk only when the set
    is materialized (``copy``). Both modes lay out the same bytes (``curator.refshards``), so a
    by-reference shard served later hashes the same."""

    def __init__(self, name: str, path: Optional[Path]):
        self.entry = {"url": name, "nsamples": 0}
        self._fh = open(path, "wb") if path is not None else None
        self._sha, self._len = hashlib.sha256(), 0

    def add(self, key: str, ext: str, data: bytes, meta: bytes) -> None:
        self._emit(b"".join(sample_segments(key, ext, data, len(data), meta)))  # one update per sample
        self.entry["nsamples"] += 1

    def _emit(self, data: bytes) -> None:
        self._sha.update(data)
        self._len += len(data)
        if self._fh is not None:
            self._fh.write(data)

    def close(self) -> dict:
        self._emit(end_of_archive(self._len))
        if self._fh is not None:
            self._fh.close()
        return dict(self.entry, filesize=self._len, sha256=self._sha.hexdigest())


#: Below this many samples a set is written in this process; above, shards are written by a pool of
#: processes (per-sample work is mostly Python, so threads would share one core's worth of it). Spawned
#: processes re-import the program's main module: ``curator``'s CLI is light, a script calling
#: ``curate`` should keep heavy imports (torch) out of its top level, or each writer pays for them.
PROCESS_MIN_SAMPLES = 20_000
#: At most this many writer processes (and never more than the cores or the shards).
MAX_WRITE_PROCESSES = 8


@dataclass
class _ShardJob:
    """One shard's work, self-contained so that another process can do it."""
    n: int
    start: int             # the selection position of its first sample: keys are positions
    rows: pa.Table         # its pool items' rows (compact: a slice would carry its parent's buffers)
    picks: list[tuple]     # per sample: query id, query label, rank, score
    folder: str
    copy: bool


class _PoolItem(NamedTuple):
    """The pool columns a shard's sample is made from."""
    id: int
    key: str
    source: str
    offset: int
    size: int
    sha256: str
    caption: Optional[str]


def _pool_items(rows: pa.Table) -> Iterator[_PoolItem]:
    return (_PoolItem(*values) for values in zip(*(rows.column(f).to_pylist() for f in _PoolItem._fields)))


def _write_shard(job: _ShardJob, stop: Callable[[], bool] = lambda: False) -> tuple[dict, pa.Table, int]:
    """(its manifest entry, its samples.parquet rows, how many samples were unreadable). A pool file
    changed or gone since indexing leaves its sample out, never different bytes in. Rows travel as
    Arrow tables both ways (cheap to pickle), and become Python objects here, in the writer processes,
    not in the one process that feeds them all."""
    name = f"transfer-{job.n:05d}.tar"
    writer = _ShardWriter(name, Path(job.folder) / name if job.copy else None)
    samples, missing = [], 0
    for i, (row, (qid, qlabel, rank, score)) in enumerate(zip(_pool_items(job.rows), job.picks)):
        if stop():
            raise InterruptedError("cancelled")
        try:
            data = read_range(row.source, row.offset, row.size)
        except OSError:
            missing += 1
            continue
        if hashlib.sha256(data).hexdigest() != row.sha256:
            missing += 1
            continue
        key, ext = f"{job.start + i:08d}", image_extension(row.key, row.source, data)
        writer.add(key, ext, data, sample_meta({"pool_id": row.id, "pool_key": row.key, "query_id": qid,
                                                 "query_label": qlabel, "rank": rank, "similarity": score,
                                                 "caption": row.caption}))
        samples.append((key, name, row.id, row.key, row.source, qid, qlabel, rank, score, row.sha256,
                        row.caption, ext, row.offset, row.size))
    columns = zip(*samples) if samples else [[] for _ in SAMPLES_SCHEMA]
    return writer.close(), pa.table(dict(zip(SAMPLES_SCHEMA.names, map(list, columns))), schema=SAMPLES_SCHEMA), missing


def _shard_jobs(items: pa.Table, selection, query_ids: list[str], query_labels: list[Optional[str]], folder: Path,
                copy: bool, shard_size: int) -> Iterator[_ShardJob]:
    """The selection cut into shards, each job made only as it is handed out: the selected rows are taken
    from the pool's table once (one take per shard costs 30 ms each on a 1M-item table), and become
    Python objects a shard at a time."""
    table = items.take(pa.array(selection.ids, type=pa.int64())) if len(selection.ids) else None
    for n, start in enumerate(range(0, len(selection.ids), shard_size)):
        span = slice(start, start + shard_size)
        rows = table.slice(start, shard_size).take(pa.array(np.arange(min(shard_size, len(table) - start))))
        picks = [(query_ids[q], query_labels[q], int(r), float(sc))
                 for q, r, sc in zip(selection.query[span], selection.rank[span], selection.score[span])]
        yield _ShardJob(n, start, rows, picks, str(folder), copy)


@contextlib.contextmanager
def shard_writers(expected: int) -> Iterator[Optional[Executor]]:
    """The writer processes for a set of about ``expected`` samples, started now (None below
    PROCESS_MIN_SAMPLES or on one core). ``curate`` starts them before its selection: their start-up,
    an interpreter and its imports (0.4 s of a core each), then runs on the core the single-threaded
    selection leaves idle, instead of ahead of the write."""
    workers = _writer_count()
    if expected < PROCESS_MIN_SAMPLES or workers < 2:
        yield None
        return
    with spawn_pool(workers) as pool:
        for _ in range(workers):
            pool.submit(_ready)
        yield pool


def _writer_count() -> int:
    return min(MAX_WRITE_PROCESSES, usable_cpus())


def _ready() -> None:
    """Nothing: unpickling it imports this module in a writer process, which is the point."""


def _write_shards(jobs: Iterator[_ShardJob], total: int, n_shards: int, progress: Callable[[float], None],
                  cancelled: Callable[[], bool], writers: Optional[Executor]) -> list[tuple[dict, pa.Table, int]]:
    """Every shard's result, in shard order: here for a small set, else by the writer processes
    (``writers``, or started here)."""
    if total < PROCESS_MIN_SAMPLES:
        return _write_here(jobs, n_shards, progress, cancelled)
    if writers is not None:
        return _write_by(writers, jobs, n_shards, progress, cancelled)
    with shard_writers(total) as started:
        if started is None:
            return _write_here(jobs, n_shards, progress, cancelled)
        return _write_by(started, jobs, n_shards, progress, cancelled)


def _write_here(jobs: Iterator[_ShardJob], n_shards: int, progress: Callable[[float], None],
                cancelled: Callable[[], bool]) -> list[tuple[dict, pa.Table, int]]:
    done = []
    for job in jobs:
        done.append(_write_shard(job, cancelled))
        progress(len(done) / max(1, n_shards))
    return done


def _write_by(writers: Executor, jobs: Iterator[_ShardJob], n_shards: int, progress: Callable[[float], None],
              cancelled: Callable[[], bool]) -> list[tuple[dict, pa.Table, int]]:
    """By the writer processes, fed a few shards ahead (memory stays a few shards' rows), asked
    ``cancelled`` between shards."""
    from concurrent.futures import FIRST_COMPLETED, wait

    results: dict[int, tuple] = {}
    pending: dict = {}
    ahead = 2 * _writer_count()
    try:
        for job in jobs:
            while len(pending) >= ahead:
                _collect(pending, results, wait(pending, return_when=FIRST_COMPLETED).done)
                progress(len(results) / n_shards)
            if cancelled():
                raise InterruptedError("cancelled")
            pending[writers.submit(_write_shard, job)] = job.n
        while pending:
            _collect(pending, results, wait(pending, return_when=FIRST_COMPLETED).done)
            progress(len(results) / n_shards)
            if cancelled():
                raise InterruptedError("cancelled")
    except BaseException:
        for future in pending:
            future.cancel()
        raise
    return [results[n] for n in sorted(results)]


def _collect(pending: dict, results: dict, finished) -> None:
    for future in finished:
        results[pending.pop(future)] = future.result()  # a shard's error is raised here


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
                       tables: Optional[dict[str, pa.Table]] = None,
                       writers: Optional[Executor] = None) -> TransferManifest:
    """Write the set to ``out_root/<manifest.id>`` atomically; returns the completed manifest
    (``manifest`` is the caller's part: this adds the shards, the counts it saw, its own time).
    ``tables``: more parquet files for the folder (``curator.setview``'s), renamed into place with it;
    ``writers``: processes from ``shard_writers``, started by the caller ahead of time."""
    set_id, shard_size = manifest.id, manifest.params.shard_size
    final = out_root / set_id
    if final.exists():
        raise CuratorError(f"transfer set {final} already exists")
    t_write = time.perf_counter()
    with staged_folder(final) as tmp:
        n_shards = -(-len(selection.ids) // shard_size)
        jobs = _shard_jobs(items, selection, query_ids, query_labels, tmp, manifest.params.materialize == "copy",
                           shard_size)
        done = _write_shards(jobs, len(selection.ids), n_shards, progress, cancelled, writers)
        shards = [entry for entry, _, _ in done if entry["nsamples"]]
        emitted = sum(rows_.num_rows for _, rows_, _ in done)
        missing = sum(m for _, _, m in done)
        for entry, _, _ in done:
            if not entry["nsamples"] and (tmp / entry["url"]).exists():
                (tmp / entry["url"]).unlink()  # every sample of it vanished from the pool
        with pq.ParquetWriter(tmp / SAMPLES_FILE, SAMPLES_SCHEMA) as parquet:
            for _, rows_, _ in done:  # one row group per shard: serving a shard reads only its own rows
                if rows_.num_rows:
                    parquet.write_table(rows_)
        for name, table in (tables or {}).items():
            pq.write_table(table, tmp / name)
        manifest = manifest.model_copy(update={
            "shardlist": [ShardEntry(**s) for s in shards],
            "counts": manifest.counts.model_copy(update={"emitted": emitted, "unreadable": missing}),
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
