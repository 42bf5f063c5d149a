"""A transfer set as people look at it. At curation time the set folder gets two small tables beside
``samples.parquet``: ``queries.parquet`` (each query's id, label, a JPEG thumbnail and its
embedding) and ``dropped.parquet`` (what near-duplicate and contamination rules kept out, and why).
From those and the manifest come the per-query view and the 2-D map; sets written before they
existed still have a view, without thumbnails or dropped items."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BadImageError
from .formats import MapPoint, SetMap, SetView, ViewItem, ViewQuery
from .queries import Query
from .refshards import SAMPLES_FILE
from .thumbs import thumbnail
from .transfer import read_manifest

QUERIES_FILE, DROPPED_FILE = "queries.parquet", "dropped.parquet"
QUERY_THUMB = 256
QUERIES_SCHEMA = pa.schema([("index", pa.int64()), ("query_id", pa.string()), ("label", pa.string()),
                            ("thumbnail", pa.binary()), ("vector", pa.list_(pa.float32()))])
DROPPED_SCHEMA = pa.schema([("pool_id", pa.int64()), ("pool_key", pa.string()), ("query_index", pa.int64()),
                            ("rank", pa.int64()), ("similarity", pa.float32()), ("reason", pa.string()),
                            ("caption", pa.string())])


def query_table(queries: Sequence[Query], vectors: np.ndarray) -> pa.Table:
    """One row per query: a thumbnail where the query is an image that decodes, and its embedding."""
    thumbs = []
    for q in queries:
        try:
            thumbs.append(thumbnail(q.read(), QUERY_THUMB) if q.data or q.path else None)
        except BadImageError:
            thumbs.append(None)
    return pa.table({"index": list(range(len(queries))), "query_id": [q.id for q in queries],
                     "label": [q.label for q in queries], "thumbnail": thumbs,
                     "vector": [v.astype(np.float32).tolist() for v in vectors]}, schema=QUERIES_SCHEMA)


def dropped_table(dropped: list[tuple], items: pa.Table) -> pa.Table:
    """``Selection.dropped`` with each item's pool key and caption."""
    ids = [d[0] for d in dropped]
    rows = items.take(pa.array(ids, type=pa.int64())).to_pydict() if ids else {"key": [], "caption": []}
    return pa.table({"pool_id": ids, "pool_key": rows["key"], "query_index": [d[1] for d in dropped],
                     "rank": [d[2] for d in dropped],
                     "similarity": [None if math.isnan(d[3]) else d[3] for d in dropped],
                     "reason": [d[4] for d in dropped], "caption": rows["caption"]}, schema=DROPPED_SCHEMA)


def read_view(folder: str | Path) -> SetView:
    folder = Path(folder)
    manifest = read_manifest(folder)
    queries = [ViewQuery(index=i, id=q.id, label=q.label, quota=q.quota, taken=q.taken)
               for i, q in enumerate(manifest.queries)]
    by_id = {q.id: q for q in queries}
    samples = pq.read_table(folder / SAMPLES_FILE).to_pylist()
    for s in samples:
        by_id[s["query_id"]].items.append(ViewItem(pool_id=s["pool_id"], key=s["pool_key"], sample_key=s["key"],
                                                   rank=s["rank"],
                                                   similarity=s["similarity"], caption=s.get("caption")))
    if (folder / QUERIES_FILE).exists():
        for row in pq.read_table(folder / QUERIES_FILE, columns=["index", "thumbnail"]).to_pylist():
            queries[row["index"]].thumbnail = row["thumbnail"] is not None
    unattributed = []
    if (folder / DROPPED_FILE).exists():
        for d in pq.read_table(folder / DROPPED_FILE).to_pylist():
            item = ViewItem(pool_id=d["pool_id"], key=d["pool_key"], rank=d["rank"], similarity=d["similarity"], caption=d["caption"],
                            reason=d["reason"])
            (queries[d["query_index"]].dropped if d["query_index"] >= 0 else unattributed).append(item)
    for q in queries:
        q.items.sort(key=lambda it: it.rank)
        q.dropped.sort(key=lambda it: it.rank)
    return SetView(id=manifest.id, params=manifest.params, counts=manifest.counts, index_name=manifest.index.name,
                   shards=[s.url for s in manifest.shardlist], queries=queries, unattributed=unattributed)


def query_thumbnail(folder: str | Path, index: int) -> Optional[bytes]:
    """The stored thumbnail of query ``index``; None when the set has none for it."""
    path = Path(folder) / QUERIES_FILE
    if not path.exists():
        return None
    rows = pq.read_table(path, columns=["thumbnail"], filters=[("index", "==", index)]).to_pylist()
    return rows[0]["thumbnail"] if rows else None


def set_map(folder: str | Path, vectors_of: Callable[[np.ndarray], np.ndarray]) -> SetMap:
    """Queries and their set on the first two principal components of their embeddings together
    (PCA: deterministic, and honest about distances, unlike a seeded t-SNE)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    samples = pq.read_table(folder / SAMPLES_FILE, columns=["pool_id", "query_id", "query_label"]).to_pydict()
    index_of = {q.id: i for i, q in enumerate(manifest.queries)}
    points = []
    vectors = []
    if (folder / QUERIES_FILE).exists():
        qt = pq.read_table(folder / QUERIES_FILE, columns=["index", "label", "vector"]).to_pydict()
        vectors.append(np.asarray(qt["vector"], dtype=np.float32).reshape(len(qt["index"]), -1))
        points += [("query", i, lab, None) for i, lab in zip(qt["index"], qt["label"])]
    ids = np.asarray(samples["pool_id"], dtype=np.int64)
    if len(ids):
        vectors.append(vectors_of(ids).astype(np.float32))
        points += [("item", index_of[q], lab, int(p)) for p, q, lab in zip(ids, samples["query_id"],
                                                                         samples["query_label"])]
    xy = _pca2(np.concatenate(vectors)) if vectors else np.zeros((0, 2))
    return SetMap(id=manifest.id, points=[MapPoint(x=float(x), y=float(y), kind=k, query=q, label=lab, pool_id=p)
                                          for (k, q, lab, p), (x, y) in zip(points, xy)])


def _pca2(x: np.ndarray) -> np.ndarray:
    if len(x) < 2:
        return np.zeros((len(x), 2))
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    scale = np.abs(xy).max() or 1.0
    return xy / scale
