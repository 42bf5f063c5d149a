"""``curator build-index``: pool -> shards + embeddings -> FAISS index, resumably.

Steps, each restartable on its own:
1. plan: inputs are split into shard tasks, saved as ``plan.json`` (a re-run must match);
2. embed: every shard without a valid done-marker is embedded (index_builder.embed);
3. index: exact duplicates (sha256) are dropped, the index chosen, trained, filled and
   tuned (index_builder.faiss_index), then ``items.arrow``, ``index.faiss`` and, last,
   ``index.json`` are written atomically.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curator import atomic
from curator.encoders import create_encoder
from curator.errors import CuratorError, PlanMismatchError
from curator.faiss_support import import_faiss
from curator.formats import (INDEX_ITEM_SCHEMA, INDEX_MANIFEST_NAME, BuildConfig, BuildPlan, BuildReport, EncoderInfo, IndexManifest,
                             ShardDone, ShardTask, load_doc)
from curator.pool import input_kind, plan_tasks
from curator.progress import progress_bar

from . import faiss_index
from .embed import EmbedOptions, embed_shards, read_done, shard_paths
from .ingest import download_url_list

log = logging.getLogger(__name__)
CHUNK_ROWS = 200_000


def build_index(inputs: list[str], out: str | Path, opts: BuildConfig) -> BuildReport:
    t_start = time.perf_counter()
    out = Path(out)
    # the model first: a typo'd or unloadable encoder must leave nothing behind in --out
    encoder = create_encoder(opts.encoder, device=opts.device, precision=opts.precision)
    if opts.overwrite and out.exists():
        for name in ("shards", "plan.json", INDEX_MANIFEST_NAME, "index.faiss", "items.arrow", "build-report.json"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_inputs(inputs, out, opts)
    tasks = plan_tasks(resolved, opts.shard_size)
    plan = BuildPlan(inputs=resolved, encoder=opts.encoder, precision=opts.precision, max_pixels=opts.max_pixels,
                     shard_size=opts.shard_size, keep_duplicates=opts.keep_duplicates, seed=opts.seed,
                     recall_queries=opts.recall_queries, tasks=tasks)
    check_plan(out, plan)

    for stale in (out / "shards").glob(".*.tmp*"):  # left by a build killed mid-write
        stale.unlink()
    dones: dict[str, Optional[ShardDone]] = {t.shard_id: read_done(out, t, opts.encoder) for t in tasks}
    pending = [t for t in tasks if dones[t.shard_id] is None]
    reused = len(tasks) - len(pending)
    if reused:
        log.info("resuming: %d of %d shards already embedded", reused, len(tasks))
    t_embed = time.perf_counter()
    known = sum(len(t.files) for t in pending if t.files is not None)
    n_embedded = 0
    with progress_bar(total=known or None, desc="embed", unit="img", enabled=opts.progress) as bar:
        eopts = EmbedOptions(opts.batch_size, opts.workers, opts.max_pixels, opts.worker_nice)
        for done in embed_shards(pending, encoder, out, eopts, on_items=bar.update):
            dones[done.shard_id] = done
            n_embedded += done.n_items + done.n_skipped
    embed_seconds = time.perf_counter() - t_embed

    t_index = time.perf_counter()
    index_json, old_report = out / INDEX_MANIFEST_NAME, out / "build-report.json"
    before = index_json.read_bytes() if index_json.exists() else None
    manifest = write_index(out, tasks, dones, EncoderInfo(**encoder.describe()), opts)
    index_seconds = time.perf_counter() - t_index
    if not pending and before == index_json.read_bytes() and old_report.exists():
        # a finished build, run again: its real figures stand (the file is left as the build wrote it)
        return load_doc(old_report, BuildReport).model_copy(update={"shards_reused": reused})

    skipped = [s for t in tasks for s in dones[t.shard_id].skipped]
    report = BuildReport(
        items=manifest.ntotal, skipped=len(skipped), skipped_by_reason=dict(Counter(s.reason for s in skipped)),
        skipped_items=skipped[:1000], duplicates=manifest.n_duplicates, shards_total=len(tasks),
        shards_reused=reused, embed_seconds=round(embed_seconds, 3),
        embed_images_per_s=round(n_embedded / embed_seconds, 2) if n_embedded else 0.0,
        index_seconds=round(index_seconds, 3), total_seconds=round(time.perf_counter() - t_start, 3),
        index_factory=manifest.index_factory, recall_at_10=manifest.recall_at_10)
    atomic.write_json(out / "build-report.json", report.model_dump())
    return report


def resolve_inputs(inputs: list[str], out: Path, opts: BuildConfig) -> list[str]:
    """Replace URL lists by the tar shards img2dataset downloads them into."""
    resolved: list[str] = []
    for n, spec in enumerate(inputs):
        if input_kind(spec) == "urls":
            dest = out / "download" / f"{n:03d}-{Path(spec).stem}"
            resolved.extend(download_url_list(spec, dest, max_pixels=opts.max_pixels, **opts.download))
        else:
            resolved.append(spec)
    return resolved


def check_plan(out: Path, plan: BuildPlan) -> None:
    path = out / "plan.json"
    if path.exists():
        old = load_doc(path, BuildPlan)
        if old.model_dump() != plan.model_dump():
            changed = [f"{k}: {getattr(old, k)!r} -> {getattr(plan, k)!r}" if k != "tasks" else
                       "tasks (the pool's files changed)" for k in BuildPlan.model_fields
                       if getattr(old, k) != getattr(plan, k)]
            raise PlanMismatchError(f"{out} holds a build with other settings ({'; '.join(changed)}); "
                                    f"re-run with the same arguments to resume, or add --overwrite")
        return
    atomic.write_json(path, plan.model_dump())


class ShardVectors:
    """The kept (deduplicated) vectors of all shards, addressable by global id, streamed."""

    def __init__(self, out: Path, tasks: list[ShardTask], keep: dict[str, np.ndarray]):
        self.files = [shard_paths(out, t.shard_id)["npy"] for t in tasks]
        self.keep = [keep[t.shard_id] for t in tasks]
        self.counts = [int(k.sum()) for k in self.keep]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.dim = int(np.load(self.files[0], mmap_mode="r").shape[1]) if self.files else 0

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    def _shard(self, i: int) -> np.ndarray:
        return np.load(self.files[i], mmap_mode="r")[self.keep[i]]

    def chunks(self) -> Iterator[np.ndarray]:
        for i in range(len(self.files)):
            if self.counts[i]:
                vecs = self._shard(i)
                for s in range(0, len(vecs), CHUNK_ROWS):
                    yield vecs[s:s + CHUNK_ROWS].astype(np.float32)

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Vectors for global ``ids`` (any order), reading each shard once."""
        order = np.argsort(ids)
        sorted_ids = ids[order]
        shard_of = np.searchsorted(self.starts, sorted_ids, side="right") - 1
        parts = [self._shard(i)[sorted_ids[shard_of == i] - self.starts[i]].astype(np.float32)
                 for i in np.unique(shard_of)]
        result = np.empty((len(ids), self.dim), dtype=np.float32)
        if parts:
            result[order] = np.concatenate(parts)
        return result


def dedup_items(out: Path, tasks: list[ShardTask], keep_duplicates: bool = False
                ) -> tuple[pa.Table, dict[str, np.ndarray], int]:
    """The item table with global ids, the per-shard keep masks, and the duplicate count."""
    seen: set[str] = set()
    tables, keep, dups = [], {}, 0
    for task in tasks:
        table = pq.read_table(shard_paths(out, task.shard_id)["parquet"])
        mask = np.zeros(table.num_rows, dtype=bool)
        for row, sha in enumerate(table.column("sha256").to_pylist()):
            if keep_duplicates or sha not in seen:
                seen.add(sha)
                mask[row] = True
        dups += int((~mask).sum())
        kept = table.filter(pa.array(mask))
        kept = kept.add_column(0, "row", pa.array(np.flatnonzero(mask), pa.int64()))
        kept = kept.add_column(0, "shard_id", pa.array([task.shard_id] * kept.num_rows, pa.string()))
        tables.append(kept)
        keep[task.shard_id] = mask
    items = pa.concat_tables(tables) if tables else INDEX_ITEM_SCHEMA.empty_table()
    items = items.add_column(0, "id", pa.array(np.arange(items.num_rows, dtype=np.int64)))
    return items.cast(INDEX_ITEM_SCHEMA), keep, dups


def write_index(out: Path, tasks: list[ShardTask], dones: dict, encoder: EncoderInfo,
                opts: BuildConfig) -> IndexManifest:
    faiss = import_faiss()

    shard_ids = [t.shard_id for t in tasks]
    existing = out / INDEX_MANIFEST_NAME
    if existing.exists():
        old = load_doc(existing, IndexManifest)
        if (old.embedding_shards == shard_ids and old.max_index_memory == opts.max_index_memory
                and old.target_recall == opts.target_recall and old.encoder.spec == encoder.spec
                and (opts.index_factory is None or opts.index_factory == old.index_factory)):
            log.info("index is up to date")
            return old
    t0 = time.perf_counter()
    items, keep, dups = dedup_items(out, tasks, opts.keep_duplicates)
    vectors = ShardVectors(out, tasks, keep)
    n, d = vectors.n, encoder.dim
    if n == 0:
        raise CuratorError("no image could be embedded; see build-report.json for why each was skipped")
    factory = opts.index_factory or faiss_index.choose_index(n, d, opts.max_index_memory).factory
    index = faiss_index.new_index(factory, d, opts.device)
    rng = np.random.default_rng(opts.seed)
    train_size = faiss_index.train_size_for(index, n)
    train = vectors.gather(np.sort(rng.choice(n, train_size, replace=False)))
    with progress_bar(total=n, desc="index", unit="vec", enabled=opts.progress) as bar:
        faiss_index.fill_index(index, train, vectors.chunks, progress=bar.update)
    del train
    qids = np.sort(rng.choice(n, min(opts.recall_queries, n), replace=False))
    queries = vectors.gather(qids)
    exact = faiss_index.exact_knn(queries, vectors.chunks, 11)
    nprobe, recall = faiss_index.tune_nprobe(index, queries, exact, qids, opts.target_recall)
    atomic.write_with(out / "index.faiss", lambda p: faiss.write_index(index, str(p)))
    atomic.write_with(out / "items.arrow", lambda p: _write_arrow(p, items))
    manifest = IndexManifest(
        encoder=encoder, dim=d, index_factory=factory, nprobe=nprobe, ntotal=n, n_duplicates=dups,
        recall_at_10=round(recall, 4), recall_queries=len(qids), target_recall=opts.target_recall,
        train_size=train_size, index_bytes=(out / "index.faiss").stat().st_size,
        max_index_memory=opts.max_index_memory, build_seconds=round(time.perf_counter() - t0, 3),
        embedding_shards=shard_ids)
    atomic.write_json(existing, manifest.model_dump())
    return manifest


def _write_arrow(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65536)
