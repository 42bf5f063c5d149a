"""The index step: embeddings on disk -> one new index *generation*, switched atomically.

A generation is a folder ``gen-NNNNN/`` holding ``index.faiss`` (plus ``lists.ivfdata`` when
out of core), ``items.arrow`` and ``trained.faiss`` (the empty trained index). ``index.json``
names the current one and is written last, so readers see the old generation or the new
one, never a mix; a running service re-opens on the switch, and jobs in flight finish on
the generation they started with (the previous one is kept for them).

A full build trains on a sample; an append adds only the new shards' vectors to the trained
index of the current generation, then re-measures recall on held-out vectors.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from curator import atomic
from curator.errors import CuratorError
from curator.faiss_support import import_faiss
from curator.formats import (INDEX_MANIFEST_NAME, BuildConfig, EncoderInfo, GenerationStart, IndexManifest, ShardTask,
                             load_doc, save_doc)
from curator.progress import progress_bar
from curator.retrieval import read_faiss_index, shard_codes

from . import faiss_index, ondisk
from .runners import Runner
from .vectors import DEDUP_BYTES_PER_ITEM, ShardVectors, keep_masks, seen_keys, write_items

log = logging.getLogger(__name__)
#: An append warns (and suggests --retrain) once the pool is this many times its training pool.
OUTGROWN_FACTOR = 4.0
#: Held-out queries for an append's recall check: exact search over the whole pool costs queries x N,
#: and 250 queries (2,500 neighbours) pin recall@10 within about 1% at a quarter of a build's cost.
APPEND_RECALL_QUERIES = 250


@dataclass
class Generation:
    manifest: IndexManifest
    warnings: list[str] = field(default_factory=list)
    appended: Optional[int] = None


def current(out: Path) -> Optional[IndexManifest]:
    path = out / INDEX_MANIFEST_NAME
    return load_doc(path, IndexManifest) if path.exists() else None


def up_to_date(old: Optional[IndexManifest], shard_ids: list[str], encoder: EncoderInfo, opts: BuildConfig) -> bool:
    return bool(old and old.embedding_shards == shard_ids and old.max_index_memory == opts.max_index_memory
                and old.target_recall == opts.target_recall and old.encoder.spec == encoder.spec
                and (opts.index_factory is None or opts.index_factory == old.index_factory)
                and (opts.layout == "auto" or opts.layout == old.layout))


#: The first file of a full build's generation folder (curator.formats.GenerationStart).
START_NAME = "started.json"


def _new_gen_dir(out: Path, old: Optional[IndexManifest]) -> tuple[int, Path]:
    gen = old.generation + 1 if old else 0
    path = out / f"gen-{gen:05d}"
    if path.exists():  # left by a build killed before its switch: nothing points at it
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return gen, path


def _resumable_gen_dir(out: Path, old: Optional[IndexManifest],
                       start: GenerationStart) -> tuple[int, Path, GenerationStart]:
    """The next generation's folder. One that a killed build began for the same inputs and settings is
    kept, with its part plan; any other is removed (nothing points at it)."""
    gen = old.generation + 1 if old else 0
    begun = _started(out / f"gen-{gen:05d}")
    if begun is not None and begun.model_copy(update={"part_rows": None}) == start:
        log.info("resuming the unfinished generation gen-%05d", gen)
        return gen, out / f"gen-{gen:05d}", begun
    gen, path = _new_gen_dir(out, old)
    save_doc(path / START_NAME, start)
    return gen, path, start


def _started(path: Path) -> Optional[GenerationStart]:
    try:
        return load_doc(path / START_NAME, GenerationStart)
    except CuratorError:  # absent, or from another version: start afresh
        return None


def _trained(index, gdir: Path, vectors: ShardVectors, sample: np.ndarray, opts: BuildConfig):
    """The trained, empty index: trained on ``sample`` now, or as a killed run of this generation saved it."""
    faiss = import_faiss()
    path = gdir / "trained.faiss"
    if path.exists():
        return faiss.read_index(str(path))
    _check_train_memory(len(sample), vectors.dim, opts)
    train = vectors.gather(sample)
    faiss_index.train_index(index, train)
    del train
    atomic.write_with(path, lambda p: faiss.write_index(index, str(p)))
    return index


def _prune_generations(out: Path, keep: set[str]) -> None:
    """Remove generation folders older than the previous one (jobs in flight may still use that)."""
    for path in sorted(out.glob("gen-*")):
        if path.name not in keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def build_generation(out: Path, tasks: list[ShardTask], encoder: EncoderInfo, opts: BuildConfig,
                     runner: Runner, source_kind: str = "images") -> Generation:
    """A full build: dedup, choose, train on a sample, fill (in memory or out of core), tune."""
    t0 = time.perf_counter()
    old = current(out)
    if not opts.keep_duplicates:
        _check_dedup_memory(_count_rows(out, tasks), opts)
    keep, dups = keep_masks(out, tasks, opts.keep_duplicates)
    vectors = ShardVectors(out, tasks, keep, chunk_rows=ondisk.chunk_rows_for(opts.max_build_memory, encoder.dim))
    n, d = vectors.n, encoder.dim
    if n == 0:
        raise CuratorError("no image could be embedded; see build-report.json for why each was skipped")
    choice = faiss_index.choose_index(n, d, opts.max_index_memory)
    factory = opts.index_factory or choice.factory
    layout = _layout(factory, choice.bytes_estimate, d, opts)
    index = faiss_index.new_index(factory, d, opts.device)
    rng = np.random.default_rng(opts.seed)
    train_size = faiss_index.train_size_for(index, n)
    sample = np.sort(rng.choice(n, train_size, replace=False))  # drawn on resume too: _finish's draw follows
    gen, gdir, start = _resumable_gen_dir(out, old, GenerationStart(
        index_factory=factory, layout=layout, ntotal=n, dim=d, train_size=train_size, seed=opts.seed,
        keep_duplicates=opts.keep_duplicates, embedding_shards=[t.shard_id for t in tasks]))
    index = _trained(index, gdir, vectors, sample, opts)
    if not (gdir / "items.arrow").exists():
        write_items(gdir / "items.arrow", out, tasks, keep)
    index = _fill(index, gdir, vectors, layout, opts, runner, start)
    manifest = _finish(out, gdir, index, vectors, opts, rng, dict(
        encoder=encoder, dim=d, index_factory=factory, ntotal=n, n_duplicates=dups, train_size=train_size,
        trained_ntotal=n, max_index_memory=opts.max_index_memory, embedding_shards=[t.shard_id for t in tasks],
        layout=layout, generation=gen, source_kind=source_kind), t0)
    _prune_generations(out, {gdir.name} | ({f"gen-{old.generation:05d}"} if old else set()))
    return Generation(manifest)


def add_vectors(index, vectors: np.ndarray, first_id: int) -> None:
    """Add ``vectors`` under ids ``first_id``...: by id where the index keeps ids (IVF); by position where
    it does not (Flat, HNSW, PQ: a small pool's index), where a vector's id is its place and the new ones
    continue the old ones."""
    faiss = import_faiss()
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        if index.ntotal != first_id:
            raise CuratorError(f"cannot append to a {type(index).__name__} of {index.ntotal} vectors at id {first_id}: "
                               f"rebuild with --append --retrain") from None
        index.add(vectors)
        return
    index.add_with_ids(vectors, np.arange(first_id, first_id + len(vectors), dtype=np.int64))


def append_generation(out: Path, tasks: list[ShardTask], base: IndexManifest, opts: BuildConfig,
                      runner: Runner) -> Generation:
    """Add the shards of ``tasks`` not yet in ``base`` with base's trained quantizer, as a new generation."""
    t0 = time.perf_counter()
    if not base.trained_file:
        raise CuratorError(f"{out} was built before appends were possible (no trained.faiss); rebuild it once "
                           f"with --overwrite, or append with --retrain")
    have = set(base.embedding_shards)
    new = [t for t in tasks if t.shard_id not in have]
    seen = None if opts.keep_duplicates else seen_keys(out / base.items_file)
    keep, dups = keep_masks(out, new, opts.keep_duplicates, seen=seen)
    gen, gdir = _new_gen_dir(out, base)
    added = ShardVectors(out, new, keep, chunk_rows=ondisk.chunk_rows_for(opts.max_build_memory, base.dim))
    n = write_items(gdir / "items.arrow", out, new, keep, previous=out / base.items_file)
    shutil.copyfile(out / base.trained_file, gdir / "trained.faiss")
    layout = base.layout
    if layout == "memory" and opts.layout != "memory":  # the grown index may no longer fit
        per_item = base.index_bytes / max(1, base.ntotal)
        layout = _layout(base.index_factory, int(per_item * n), base.dim, opts)
    if layout == "on-disk":
        index = _fill_ondisk(gdir, added, opts, runner, first_id=base.ntotal,
                             base=(str(out / base.index_file), base.layout))
    else:
        index = read_faiss_index(out / base.index_file, "memory", mmap=False)
        with progress_bar(total=added.n, desc="append", unit="vec", enabled=opts.progress) as bar:
            next_id = base.ntotal
            for chunk in added.chunks():
                add_vectors(index, chunk, next_id)
                next_id += len(chunk)
                bar.update(len(chunk))
        faiss = import_faiss()
        atomic.write_with(gdir / "index.faiss", lambda p: faiss.write_index(index, str(p)))
    everything = _all_vectors(out, gdir / "items.arrow", tasks, base.dim, opts)
    rng = np.random.default_rng(opts.seed + gen)
    fields = base.model_dump(exclude={"format", "created_at", "nprobe", "recall_at_10", "recall_queries",
                                      "index_bytes", "build_seconds", "index_file", "items_file", "lists_file",
                                      "trained_file", "generation", "ntotal", "n_duplicates", "embedding_shards",
                                      "target_recall", "layout"})
    fields.update(ntotal=n, n_duplicates=base.n_duplicates + dups, generation=gen, layout=layout,
                  embedding_shards=base.embedding_shards + [t.shard_id for t in new])
    check = opts.model_copy(update={"recall_queries": min(opts.recall_queries, APPEND_RECALL_QUERIES)})
    manifest = _finish(out, gdir, index, everything, check, rng, fields, t0)
    warnings = _append_warnings(manifest, opts)
    _prune_generations(out, {gdir.name, f"gen-{base.generation:05d}"})
    return Generation(manifest, warnings, appended=n - base.ntotal)


def _append_warnings(m: IndexManifest, opts: BuildConfig) -> list[str]:
    out = []
    if m.recall_at_10 < opts.target_recall:
        out.append(f"recall@10 after the append is {m.recall_at_10:.3f}, below --target-recall {opts.target_recall}; "
                   f"rebuild the quantizer with --append --retrain")
    if m.trained_ntotal and m.ntotal > OUTGROWN_FACTOR * m.trained_ntotal:
        out.append(f"the pool ({m.ntotal:,}) has outgrown the {m.trained_ntotal:,} items its quantizer was trained "
                   f"for ({m.ntotal / m.trained_ntotal:.1f}x); run with --append --retrain")
    for w in out:
        log.warning(w)
    return out


def _all_vectors(out: Path, items_path: Path, tasks: list[ShardTask], d: int, opts: BuildConfig) -> ShardVectors:
    """Every indexed vector in id order, from the item table's (shard_id, row) columns."""
    table = pa.ipc.open_file(pa.memory_map(str(items_path), "r")).read_all().select(["shard_id", "row"])
    codes, names = shard_codes(table)
    rows = table.column("row").to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    where = {name: rows[order[bounds[j]:bounds[j + 1]]] for j, name in enumerate(names)}
    keep = {}
    for t in tasks:
        mask = np.zeros(_npy_rows(out, t), dtype=bool)
        mask[where.get(t.shard_id, np.zeros(0, np.int64))] = True
        keep[t.shard_id] = mask
    return ShardVectors(out, tasks, keep, chunk_rows=ondisk.chunk_rows_for(opts.max_build_memory, d))


def _npy_rows(out: Path, task: ShardTask) -> int:
    from .embed_images import shard_paths
    return int(np.load(shard_paths(out, task.shard_id)["npy"], mmap_mode="r").shape[0])


def _count_rows(out: Path, tasks: list[ShardTask]) -> int:
    return sum(_npy_rows(out, t) for t in tasks)


def _check_dedup_memory(n: int, opts: BuildConfig) -> None:
    need = n * DEDUP_BYTES_PER_ITEM
    if need > opts.max_build_memory // 2:
        raise CuratorError(f"finding exact duplicates among {n:,} items needs about {need:,} bytes, over half of "
                           f"--max-build-memory {opts.max_build_memory:,}; raise it, or pass --keep-duplicates")


def _check_train_memory(train_size: int, d: int, opts: BuildConfig) -> None:
    need = int(2.5 * train_size * d * 4) + ondisk.rss_bytes()
    if need > opts.max_build_memory:
        raise CuratorError(f"training on {train_size:,} vectors of dim {d} needs about {need:,} bytes, over "
                           f"--max-build-memory {opts.max_build_memory:,}; raise it, or force an index with fewer "
                           f"IVF lists (--index-factory)")


def _layout(factory: str, estimate: int, d: int, opts: BuildConfig) -> str:
    """``memory`` when this process, the whole index and its read buffers fit --max-build-memory with a
    quarter to spare; otherwise ``on-disk`` (IVF indexes only: a flat index is small by construction)."""
    ivf = "IVF" in factory
    if opts.layout == "on-disk" and not ivf:
        raise CuratorError(f"--layout on-disk needs an IVF index; {factory!r} is not one (the pool is small "
                           f"enough for exact search: use --layout auto)")
    if opts.layout != "auto":
        return opts.layout
    need = ondisk.rss_bytes() + estimate + 3 * ondisk.chunk_rows_for(opts.max_build_memory, d) * 4 * d
    return "on-disk" if ivf and need > 0.75 * opts.max_build_memory else "memory"


def _fill(index, gdir: Path, vectors: ShardVectors, layout: str, opts: BuildConfig, runner: Runner,
          start: GenerationStart):
    if (gdir / "index.faiss").exists():  # filled (and merged) before the run was killed: written last, atomically
        return read_faiss_index(gdir / "index.faiss", layout)
    if layout == "on-disk":
        return _fill_ondisk(gdir, vectors, opts, runner, start=start)
    faiss = import_faiss()
    with progress_bar(total=vectors.n, desc="index", unit="vec", enabled=opts.progress) as bar:
        faiss_index.add_chunks(index, vectors.chunks, progress=bar.update)
    atomic.write_with(gdir / "index.faiss", lambda p: faiss.write_index(index, str(p)))
    return index


def _fill_ondisk(gdir: Path, vectors: ShardVectors, opts: BuildConfig, runner: Runner, *,
                 first_id: int = 0, base: Optional[tuple[str, str]] = None, start: Optional[GenerationStart] = None):
    """Parts filled in parallel within --max-build-memory, merged into ``gdir/lists.ivfdata``. With
    ``start`` (a full build), the part size is kept in the generation's start file and parts already
    filled by a killed run are kept: each is written atomically, so one that exists is whole."""
    faiss = import_faiss()
    trained = faiss.read_index(str(gdir / "trained.faiss"))
    code = faiss.extract_index_ivf(trained).code_size
    del trained
    plan = ondisk.plan_fill(max(1, vectors.n), vectors.dim, code, opts.max_build_memory,
                            runner.fill_workers(opts.index_workers), ondisk.rss_bytes())
    part_rows, workers = plan.part_rows, plan.workers
    if start is not None and start.part_rows:  # resumed: the parts must line up; bigger parts, fewer processes
        part_rows, workers = start.part_rows, max(1, plan.workers * plan.part_rows // start.part_rows)
    elif start is not None:
        save_doc(gdir / START_NAME, start.model_copy(update={"part_rows": part_rows}))
    parts = ondisk.split_parts([str(f) for f in vectors.files], vectors.rows, part_rows, first_id)
    part_dir = gdir / "parts"
    part_dir.mkdir(exist_ok=True)
    jobs = [(str(gdir / "trained.faiss"), p, str(part_dir / f"part-{i:05d}.faiss"), plan.chunk_rows)
            for i, p in enumerate(parts)]
    done = [Path(j[2]).exists() for j in jobs]
    todo = [j for j, was in zip(jobs, done) if not was]
    log.info("filling %d parts of <= %d vectors with %d processes (%d filled before)", len(todo), part_rows,
             workers, len(jobs) - len(todo))
    with progress_bar(total=vectors.n, desc="index", unit="vec", enabled=opts.progress) as bar:
        bar.update(sum(j[1].n for j, was in zip(jobs, done) if was))
        for added in runner.fill(todo, workers):
            bar.update(added)
    ondisk.merge_parts(str(gdir / "trained.faiss"), [j[2] for j in jobs], gdir, base=base)
    shutil.rmtree(part_dir)
    return read_faiss_index(gdir / "index.faiss", "on-disk")


def _finish(out: Path, gdir: Path, index, vectors: ShardVectors, opts: BuildConfig, rng, fields: dict,
            t0: float) -> IndexManifest:
    """Tune nprobe against exact search on held-out pool vectors, then switch ``index.json``."""
    n = vectors.n
    qids = np.sort(rng.choice(n, min(opts.recall_queries, n), replace=False))
    queries = vectors.gather(qids)
    exact = faiss_index.exact_knn(queries, vectors.chunks, 11)
    nprobe, recall = faiss_index.tune_nprobe(index, queries, exact, qids, opts.target_recall)
    rel = gdir.relative_to(out)
    lists = gdir / ondisk.LISTS_NAME
    size = (gdir / "index.faiss").stat().st_size + (lists.stat().st_size if lists.exists() else 0)
    manifest = IndexManifest(
        **fields, nprobe=nprobe, recall_at_10=round(recall, 4), recall_queries=len(qids),
        target_recall=opts.target_recall, index_bytes=size, build_seconds=round(time.perf_counter() - t0, 3),
        index_file=str(rel / "index.faiss"), items_file=str(rel / "items.arrow"),
        lists_file=str(rel / ondisk.LISTS_NAME) if lists.exists() else None, trained_file=str(rel / "trained.faiss"))
    save_doc(out / INDEX_MANIFEST_NAME, manifest)
    return manifest
