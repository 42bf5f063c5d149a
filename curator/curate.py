"""The curation engine: query images in, a transfer set out. Used by the CLI and the service.

Phases (each timed in the manifest): embed the queries (and crops, and the exclude set) with
the pool's own encoder; search; select (strategy, dedup, contamination control); write the
shards. The function is deterministic for the same index, queries, parameters and seed.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import CuratorError
from .formats import TRANSFER_FORMAT, CurateParams, utcnow
from .queries import Query, embed_queries
from .retrieval import MANIFEST_NAME, PoolIndex
from .select import quotas_for, select_balanced, select_random, select_threshold
from .transfer import new_set_id, write_transfer_set

Progress = Callable[[str, float], None]


def curate(pool: PoolIndex, queries: Sequence[Query], params: CurateParams, out_root: str | Path, *,
           query_vectors: Optional[np.ndarray] = None, exclude: Sequence[Query] = (),
           exclude_vectors: Optional[np.ndarray] = None, set_id: Optional[str] = None,
           progress: Progress = lambda phase, f: None, cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Curate a transfer set into ``out_root/<set_id>``; returns its manifest."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    progress("embed", 0.0)
    if query_vectors is None:
        vecs, owner = embed_queries(pool.encoder(), queries, crops=params.crops, seed=params.seed)
    else:
        vecs, owner = _check_vectors(query_vectors, pool.manifest.dim), np.arange(len(queries))
    forbidden = [vecs[_first_views(owner)]]
    if exclude_vectors is not None:
        forbidden.append(_check_vectors(exclude_vectors, pool.manifest.dim))
    if exclude:
        forbidden.append(embed_queries(pool.encoder(), exclude)[0])
    forbidden_vecs = np.concatenate(forbidden)
    timings["embed"] = time.perf_counter() - t

    search_seconds = [0.0]

    def search(k: int):
        t0 = time.perf_counter()
        progress("search", 0.0)
        result = pool.search(vecs, k)
        search_seconds[0] += time.perf_counter() - t0
        return result

    t = time.perf_counter()
    labels = [q.label for q in queries]
    common = dict(vectors_of=pool.vectors, forbidden=forbidden_vecs, ntotal=pool.ntotal, dedup=params.dedup,
                  exclude_threshold=params.exclude_threshold, cells=pool.cells)
    if params.strategy == "threshold":
        selection = select_threshold(search, owner, len(queries), params.threshold, params.budget, **common)
    elif params.strategy == "random":
        budget = params.budget or params.per_query * len(queries)
        selection = select_random(vecs, owner, budget, params.seed, **common)
    else:
        quotas = quotas_for(params.strategy, len(queries), labels, params.budget, params.per_query)
        selection = select_balanced(search, owner, len(queries), quotas, cancelled=cancelled, **common)
    timings["search"] = search_seconds[0]
    timings["select"] = time.perf_counter() - t - search_seconds[0]

    progress("write", 0.0)
    index_manifest = (pool.root / MANIFEST_NAME).read_bytes()
    base = {
        "format": TRANSFER_FORMAT, "__kind__": "wids-shard-index-v1", "wids_version": 1, "created_at": utcnow(),
        "index": {"path": str(pool.root), "manifest_sha256": hashlib.sha256(index_manifest).hexdigest(),
                  "encoder": pool.manifest.encoder.spec, "index_factory": pool.manifest.index_factory,
                  "ntotal": pool.ntotal},
        "params": params.model_dump(),
        "queries": [{"id": q.id, "label": q.label, "quota": int(selection.quotas[i]),
                     "taken": int((selection.query == i).sum())} for i, q in enumerate(queries)],
        "dry_queries": [queries[i].id for i in selection.dry_queries],
        "counts": {**selection.counts, "queries": len(queries), "query_views": int(len(vecs)),
                   "exclude_vectors": int(len(forbidden_vecs) - len(queries))},
        "timings": {k: round(v, 4) for k, v in timings.items()},  # the writer adds its own phase
    }
    manifest = write_transfer_set(pool.items, selection, [q.id for q in queries], labels, Path(out_root),
                                  set_id or new_set_id(), base, shard_size=params.shard_size,
                                  progress=lambda f: progress("write", f), cancelled=cancelled)
    progress("done", 1.0)
    return manifest


def _first_views(owner: np.ndarray) -> np.ndarray:
    """Row of each query's first view: the whole image (crops follow it)."""
    _, first = np.unique(owner, return_index=True)
    return first


def _check_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise CuratorError(f"embeddings must be (n, {dim}) for this index, got {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise CuratorError("embeddings must be finite and non-zero")
    return vectors / norms
