"""The curation engine: query images in, a transfer set out. Used by the CLI and the service.

Phases (each timed in the manifest): embed the queries (and crops, and the exclude set) with
the pool's own encoder; search; select (a registered strategy, with dedup and contamination
control); write the shards. Deterministic for the same index, queries, parameters and seed.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from .errors import CuratorError
from .formats import CurateParams, IndexRef, QueryEntry, TransferCounts, TransferManifest
from .pipeline import OnBad
from .queries import Query, embed_queries
from .retrieval import PoolIndex
from .select import Selection
from .setview import DROPPED_FILE, QUERIES_FILE, dropped_table, query_table
from .strategies import Rules, SelectionRequest, select
from .transfer import new_set_id, shard_writers, write_transfer_set
from .urlsets import url_only, write_url_set

Progress = Callable[[str, float], None]
#: How far from 1 a precomputed row's norm may be and still count as a unit vector (float32 rounding).
UNIT_TOLERANCE = 1e-5
#: Query views per FAISS call: large enough for FAISS's threads, small enough that cancel is prompt.
SEARCH_BLOCK = 256


def curate(pool: PoolIndex, queries: Sequence[Query], params: CurateParams, out_root: str | Path, *,
           query_vectors: Optional[np.ndarray] = None, query_owner: Optional[np.ndarray] = None,
           exclude: Sequence[Query] = (),
           exclude_vectors: Optional[np.ndarray] = None, set_id: Optional[str] = None,
           progress: Progress = lambda phase, f: None, cancelled: Callable[[], bool] = lambda: False,
           on_bad: OnBad = "raise") -> TransferManifest:
    """Curate a transfer set into ``out_root/<set_id>``; returns its manifest.

    ``on_bad``: ``skip`` leaves out query (and exclude) images that do not decode, and names them in the
    manifest (a folder of queries); ``raise`` makes the first one an error (queries given one by one).
    ``query_owner``: with ``query_vectors`` from ``embed_queries(..., crops=N)``, the query of each row
    (its first row is the whole image); default: one row per query."""
    timings: dict[str, float] = {}
    skipped: list = []
    t = time.perf_counter()
    progress("embed", 0.0)
    if query_vectors is None:
        vecs, owner, queries, skipped = embed_queries(pool.encoder(), queries, crops=params.crops, seed=params.seed,
                                                      on_bad=on_bad, cancelled=cancelled)
        if not queries:
            raise CuratorError(f"none of the query images could be decoded ({len(skipped)} skipped: "
                               f"{', '.join(s.key + ' (' + s.reason + ')' for s in skipped[:5])})")
    else:
        vecs = check_vectors(query_vectors, pool.manifest.dim)
        owner = check_owner(query_owner, len(vecs), len(queries))
    forbidden = [vecs[_first_views(owner)]]
    if exclude_vectors is not None:
        forbidden.append(check_vectors(exclude_vectors, pool.manifest.dim))
    if exclude:
        excluded = embed_queries(pool.encoder(), exclude, on_bad=on_bad, cancelled=cancelled)
        forbidden.append(excluded.vectors)
        skipped += excluded.skipped
    forbidden_vecs = np.concatenate(forbidden)
    timings["embed"] = time.perf_counter() - t

    with shard_writers(params.budget or (params.per_query or 0) * len(queries)) as writers:
        selection = select_items(pool, vecs, owner, [q.label for q in queries], forbidden_vecs, params, timings,
                                 progress=progress, cancelled=cancelled)
        progress("write", 0.0)
        base = _manifest(pool, queries, params, selection, set_id or new_set_id(), len(vecs),
                         len(forbidden_vecs) - len(queries), timings).model_copy(update={"skipped_queries": skipped})
        tables = {QUERIES_FILE: query_table(queries, vecs[_first_views(owner)]),
                  DROPPED_FILE: dropped_table(selection.dropped, pool.items)}
        ids, labels = [q.id for q in queries], [q.label for q in queries]
        if url_only(pool.items, selection.ids):  # published embeddings: the set is a URL list
            manifest = write_url_set(pool.items, selection, ids, labels, Path(out_root), base, tables)
        else:
            _check_stored(pool, selection.ids)
            manifest = write_transfer_set(pool.items, selection, ids, labels, Path(out_root), base,
                                          progress=lambda f: progress("write", f), cancelled=cancelled, tables=tables,
                                          writers=writers)
    progress("done", 1.0)
    return manifest


def select_items(pool: PoolIndex, vecs: np.ndarray, owner: np.ndarray, labels: list, forbidden: np.ndarray,
                 params: CurateParams, timings: dict[str, float], *, progress: Progress = lambda phase, f: None,
                 cancelled: Callable[[], bool] = lambda: False) -> Selection:
    """Search and select (the strategy's walk with its rules): the part of a curation that depends on
    the pool's size, timed into ``timings`` as ``search`` and ``select``."""
    search_seconds = [0.0]

    def search(k: int, rows: Optional[np.ndarray] = None):
        """Every query view's top k, or only ``rows``' (the views of queries that ran dry)."""
        t0 = time.perf_counter()
        progress("search", 0.0)
        result = _search_blocks(pool, vecs if rows is None else vecs[rows], k, cancelled)
        search_seconds[0] += time.perf_counter() - t0
        return result

    t = time.perf_counter()
    rules = Rules(vectors_of=partial(pool.vectors, dtype=np.float16), forbidden=forbidden, ntotal=pool.ntotal,
                  dedup=params.dedup, exclude_threshold=params.exclude_threshold, cells=pool.cells, links=pool.links,
                  near=pool.near, query_rows=len(_first_views(owner)))
    selection = select(SelectionRequest(search, vecs, owner, labels, rules, cancelled), params)
    timings["search"] = search_seconds[0]
    timings["select"] = time.perf_counter() - t - search_seconds[0]
    return selection


def _check_stored(pool: PoolIndex, ids: np.ndarray) -> None:
    """Items indexed from published embeddings (``--embeddings``) may have no stored bytes: a set that
    mixes them with stored items cannot be written (a set of URLs alone is a URL list), and curator
    never fetches their URLs itself."""
    if not len(ids):
        return
    rows = pool.items.take(pa.array(np.asarray(ids, dtype=np.int64))).select(["size", "source"])
    missing = np.flatnonzero(rows.column("size").to_numpy() == 0)
    if len(missing):
        example = rows.column("source")[int(missing[0])].as_py()
        raise CuratorError(f"{len(missing)} of the {len(ids)} selected pool items have no stored image (e.g. "
                           f"{example}): a set is written from stored images, or as a URL list when every item it "
                           f"selects is a URL")


def _search_blocks(pool: PoolIndex, vecs: np.ndarray, k: int,
                   cancelled: Callable[[], bool]) -> tuple[np.ndarray, np.ndarray]:
    """Search in blocks of SEARCH_BLOCK query views, asking ``cancelled`` between blocks: one deep
    search over thousands of views is minutes of a worker that a cancelled job must give back."""
    scores, ids = [], []
    for start in range(0, len(vecs), SEARCH_BLOCK):
        if cancelled():
            raise InterruptedError("cancelled")
        s, i = pool.search(vecs[start:start + SEARCH_BLOCK], k)
        scores.append(s)
        ids.append(i)
    return np.concatenate(scores), np.concatenate(ids)


def _manifest(pool: PoolIndex, queries: Sequence[Query], params: CurateParams, selection: Selection, set_id: str,
              views: int, exclude_vectors: int, timings: dict[str, float]) -> TransferManifest:
    """The manifest less what only the writer knows (shards, emitted, write time)."""
    return TransferManifest(
        id=set_id, params=params,
        index=IndexRef(name=pool.root.name, manifest_sha256=pool.manifest_sha256, generation=pool.generation,
                       encoder=pool.manifest.encoder.spec, index_factory=pool.manifest.index_factory,
                       ntotal=pool.ntotal),
        queries=[QueryEntry(id=q.id, label=q.label, quota=int(selection.quotas[i]),
                            taken=int((selection.query == i).sum())) for i, q in enumerate(queries)],
        dry_queries=[queries[i].id for i in selection.dry_queries],
        counts=TransferCounts(**selection.counts, queries=len(queries), query_views=views,
                              exclude_vectors=exclude_vectors),
        timings={k: round(v, 4) for k, v in timings.items()})


def _first_views(owner: np.ndarray) -> np.ndarray:
    """Row of each query's first view: the whole image (crops follow it)."""
    _, first = np.unique(owner, return_index=True)
    return first


def check_owner(owner: Optional[np.ndarray], rows: int, n_queries: int) -> np.ndarray:
    """Each vector's query: every query owns at least its whole-image row, listed in query order."""
    if owner is None:
        owner = np.arange(n_queries)
    owner = np.asarray(owner, dtype=np.int64)
    if owner.shape != (rows,) or not np.array_equal(np.unique(owner), np.arange(n_queries)) \
            or np.any(np.diff(owner) < 0):
        raise CuratorError(f"embeddings must be one row per query ({n_queries}), or views grouped by query with "
                           f"their owners; got {rows} rows")
    return owner


def check_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Precomputed embeddings as unit rows of this index's width; a clear error otherwise."""
    try:
        vectors = np.asarray(vectors, dtype=np.float32)
    except (ValueError, TypeError):
        raise CuratorError(f"embeddings must be a rectangular (n, {dim}) array of numbers") from None
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise CuratorError(f"embeddings must be (n, {dim}) for this index, got {vectors.shape}")
    with np.errstate(over="ignore"):  # an overflowing norm is refused below, not warned about
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise CuratorError("embeddings must be finite and non-zero, with a norm that float32 can hold")
    # Rows already of unit length are kept bit for bit: dividing by a norm of 1 +- 1 ulp would shift
    # their similarities in the last digit, and an encoder's own output would then select differently
    # passed in than embedded here.
    off = np.abs(norms - 1.0) > UNIT_TOLERANCE
    return np.where(off, vectors / norms, vectors).astype(np.float32, copy=False)
