"""Transfer sets of pool items known only by URL: an index built from published embeddings (LAION's
vectors with their URLs, ``build-index --embeddings``) holds no image bytes.

Such a set is a URL list, ``urls.parquet`` (url, caption, similarity, query, rank, and the sample's
key), that img2dataset downloads as it is; curator never fetches a URL for a caller of the service.
``curator materialize`` downloads it with img2dataset and writes the set's webdataset shards, with the
same manifest, samples table and per-shard sha256 as any set; what could not be fetched is counted as
unreadable.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .downloads import download_url_list
from .errors import CuratorError
from .formats import TransferManifest
from .formats.base import dump_doc
from .images import DEFAULT_MAX_PIXELS
from .pool import read_range, scan_tar
from .refshards import SAMPLES_FILE
from .select import Selection
from .transfer import MANIFEST_FILE, SAMPLES_SCHEMA, staged_folder, write_transfer_set

URL_LIST_FILE = "urls.parquet"
#: ``sample`` is the set's own key for the image (its place in the selection); img2dataset keeps it in each
#: downloaded sample's json, which is how a download is matched to its row.
URLS_SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("similarity", pa.float32()),
                         ("query", pa.string()), ("query_label", pa.string()), ("rank", pa.int64()),
                         ("sample", pa.string()), ("pool_id", pa.int64()), ("pool_key", pa.string())])


def url_only(items: pa.Table, ids: np.ndarray) -> bool:
    """Whether every selected item is a URL with no stored bytes."""
    rows = items.take(pa.array(np.asarray(ids, dtype=np.int64))).select(["size", "source"])
    return len(ids) > 0 and not np.any(rows.column("size").to_numpy()) and all(
        "://" in s for s in rows.column("source").to_pylist())


def write_url_set(items: pa.Table, selection: Selection, query_ids: list[str], query_labels: list[Optional[str]],
                  out_root: Path, manifest: TransferManifest, tables: dict[str, pa.Table]) -> TransferManifest:
    """The set as a URL list, written atomically like any set (no shard: the images are not here)."""
    final = Path(out_root) / manifest.id
    if final.exists():
        raise CuratorError(f"transfer set {final} already exists")
    rows = items.take(pa.array(np.asarray(selection.ids, dtype=np.int64))).select(["key", "source", "caption"])
    queries = np.asarray(selection.query, dtype=np.int64)
    table = pa.table({
        "url": rows.column("source"), "caption": rows.column("caption"),
        "similarity": pa.array(np.asarray(selection.score, np.float32)),
        "query": pa.array([query_ids[q] for q in queries], pa.string()),
        "query_label": pa.array([query_labels[q] for q in queries], pa.string()),
        "rank": pa.array(np.asarray(selection.rank, np.int64)),
        "sample": pa.array([f"{i:08d}" for i in range(len(selection.ids))], pa.string()),
        "pool_id": pa.array(np.asarray(selection.ids, np.int64)), "pool_key": rows.column("key")}, schema=URLS_SCHEMA)
    with staged_folder(final) as tmp:
        pq.write_table(table, tmp / URL_LIST_FILE)
        pq.write_table(SAMPLES_SCHEMA.empty_table(), tmp / SAMPLES_FILE)
        for name, extra in tables.items():
            pq.write_table(extra, tmp / name)
        manifest = manifest.model_copy(update={"url_list": URL_LIST_FILE, "shardlist": [],
                                               "counts": manifest.counts.model_copy(update={"emitted": len(table)})})
        (tmp / MANIFEST_FILE).write_text(json.dumps(dump_doc(manifest), indent=2) + "\n")
    return manifest


def materialize_urls(folder: Path, out: Path, manifest: TransferManifest, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                     processes: int = 1, threads: int = 16) -> Path:
    """Download a URL-list set with img2dataset and write it as a set of shards (``out/ID``)."""
    final = Path(out) / manifest.id
    if final.exists():
        raise CuratorError(f"{final} already exists")
    urls = pq.read_table(folder / URL_LIST_FILE)
    download = Path(out) / f".{manifest.id}.download"
    try:
        tars = download_url_list(str(folder / URL_LIST_FILE), download, max_pixels=max_pixels, processes=processes,
                                 threads=threads, extra_columns=["sample"])
        fetched = _downloaded(tars)
        items, selection = _as_selection(urls, fetched, manifest)
        tables = {name: pq.read_table(folder / name) for name in ("queries.parquet", "dropped.parquet")
                  if (folder / name).exists()}
        base = manifest.model_copy(update={"url_list": None,
                                           "params": manifest.params.model_copy(update={"materialize": "copy"})})
        done = write_transfer_set(items, selection, [q.id for q in manifest.queries],
                                  [q.label for q in manifest.queries], Path(out), base, tables=tables)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    missing = len(urls) - done.counts.emitted
    if missing:
        done = done.model_copy(update={"counts": done.counts.model_copy(update={"unreadable": missing})})
        (final / MANIFEST_FILE).write_text(json.dumps(dump_doc(done), indent=2) + "\n")
    return final


def _downloaded(tars: list[str]) -> dict[str, tuple[str, int, int, str, Optional[str]]]:
    """Each downloaded image by the set's sample key: (tar, offset, size, sha256, caption)."""
    found = {}
    for tar in tars:
        for item in scan_tar(tar):
            meta = json.loads(item.meta or "{}")
            data = read_range(item.source, item.offset, item.size)
            found[str(meta.get("sample"))] = (item.source, item.offset, item.size, hashlib.sha256(data).hexdigest(),
                                             item.caption)
    return found


def _as_selection(urls: pa.Table, fetched: dict, manifest: TransferManifest) -> tuple[pa.Table, Selection]:
    """The downloaded images as a small pool, and the set's selection over it, in the set's order."""
    rows = [r for r in urls.to_pylist() if r["sample"] in fetched]
    where = [fetched[r["sample"]] for r in rows]
    order = {q.id: i for i, q in enumerate(manifest.queries)}
    items = pa.table({"id": pa.array([r["pool_id"] for r in rows], pa.int64()), "key": [r["pool_key"] for r in rows],
                      "source": [w[0] for w in where], "offset": pa.array([w[1] for w in where], pa.int64()),
                      "size": pa.array([w[2] for w in where], pa.int64()), "sha256": [w[3] for w in where],
                      "caption": [r["caption"] if r["caption"] is not None else w[4] for r, w in zip(rows, where)]})
    selection = Selection(ids=np.arange(len(rows), dtype=np.int64),
                          query=np.array([order[r["query"]] for r in rows], dtype=np.int64),
                          rank=np.array([r["rank"] for r in rows], dtype=np.int64),
                          score=np.array([r["similarity"] for r in rows], dtype=np.float32),
                          quotas=np.array([q.quota for q in manifest.queries], dtype=np.int64))
    return items, selection
