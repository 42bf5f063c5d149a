"""Open a built pool index and search it: the read side of ``curator build-index``.

The faiss index is memory-mapped (IVF lists and flat codes stay on disk until touched)
and the item table is an Arrow IPC file, also memory-mapped, so opening a 100M-item
index costs seconds and little RAM, and every hit resolves to its original bytes with
one ranged read.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import logging

from pydantic import BaseModel

from .errors import CuratorError
from .cells import ItemCells
from .link_table import LinkTable
from .dedup import Adjacency
from .faiss_support import import_faiss, native_stdout_to_stderr
from .formats import INDEX_MANIFEST_NAME, IndexManifest, load_doc
from .images import DEFAULT_MAX_PIXELS
from .pipeline import ImagePipeline
from .pool import read_range


class Hit(BaseModel):
    """One search result: the pool item, its score, and where its original bytes are."""
    id: int
    score: float
    key: str
    source: str
    offset: int
    size: int
    caption: Optional[str] = None

    def as_dict(self) -> dict:
        return self.model_dump()


#: ``PoolIndex.near``: lists searched per vector.
NEAR_PROBE = 64


def code_margin(index_factory: str) -> float:
    """How far an index's codes may move a cosine between unit vectors: none for exact (Flat) codes;
    SQ8 quantizes each dimension to 1/255 of its range, which moves a 512-d cosine by well under 0.01
    (0.03 leaves room); PQ and coarser codes by up to about 0.1."""
    codec = index_factory.split(",")[-1].strip()
    return 1e-4 if codec.startswith("Flat") else 0.03 if codec == "SQ8" else 0.15


class PoolIndex:
    def __init__(self, root: Path, manifest: IndexManifest, index, items: pa.Table, manifest_sha256: str = ""):
        self.root, self.manifest, self.index, self.items = root, manifest, index, items
        self.manifest_sha256 = manifest_sha256
        self._encoder = None
        self._lock = threading.Lock()
        self._shards: dict[str, np.ndarray] = {}
        self._cells: Optional[ItemCells] = None
        self._links: Optional[LinkTable] = None
        # shard ids as small integer codes: one Python string per item would cost seconds and
        # gigabytes at service start on a pool of tens of millions
        self._shard_of, self._shard_names = shard_codes(items)
        self._row_of = items.column("row").to_numpy()

    @classmethod
    def open(cls, root: str | Path, *, mmap: bool = True) -> "PoolIndex":
        faiss = import_faiss()

        root = Path(root)
        raw = (root / INDEX_MANIFEST_NAME).read_bytes() if (root / INDEX_MANIFEST_NAME).exists() else b""
        manifest = load_doc(root / INDEX_MANIFEST_NAME, IndexManifest)
        index = read_faiss_index(root / manifest.index_file, manifest.layout, mmap=mmap)
        if manifest.nprobe:
            faiss.extract_index_ivf(index).nprobe = manifest.nprobe
        items = pa.ipc.open_file(pa.memory_map(str(root / manifest.items_file), "r")).read_all()
        if index.ntotal != manifest.ntotal or items.num_rows != manifest.ntotal:
            raise CuratorError(f"{root}: index has {index.ntotal} vectors and {items.num_rows} items, "
                               f"manifest says {manifest.ntotal}; the index folder is damaged, rebuild it")
        return cls(root, manifest, index, items, hashlib.sha256(raw).hexdigest())

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def ntotal(self) -> int:
        return self.manifest.ntotal

    def encoder(self, device: str = "cpu"):
        """The encoder the pool was embedded with (built once, on first use)."""
        with self._lock:
            if self._encoder is None:
                from .encoders import create_encoder

                enc = self.manifest.encoder
                encoder = create_encoder(enc.spec, device=device, precision=enc.precision)
                check_preprocessing(self.root, enc.preprocess, encoder.describe()["preprocess"])
                self._encoder = encoder
        return self._encoder

    def vectors(self, ids: np.ndarray, dtype=np.float32) -> np.ndarray:
        """The stored (float16) embeddings of pool items ``ids``, in that order, as ``dtype``: float16
        halves the memory of a deep selection's candidates (4M of them are 4 GB as float32)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.manifest.dim), dtype=dtype)
        order = np.argsort(ids, kind="stable")  # ascending rows: sequential reads of the mapped shards
        shards = self._shard_of[ids[order]]
        for shard in np.unique(shards):
            where = order[shards == shard]
            out[where] = self._shard_vectors(self._shard_names[int(shard)])[self._row_of[ids[where]]]
        return out

    def _shard_vectors(self, shard_id: str) -> np.ndarray:
        with self._lock:
            if shard_id not in self._shards:
                self._shards[shard_id] = np.load(self.root / "shards" / f"{shard_id}.npy", mmap_mode="r")
            return self._shards[shard_id]

    def embed_images(self, blobs: Sequence[bytes], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Embed query images exactly as the pool was (same decode rules and preprocessing)."""
        import torch

        enc = self.encoder()
        pipeline = ImagePipeline(max_pixels=max_pixels, min_side=2 * enc.image_size, on_bad="raise")
        return enc.encode_images(torch.stack([pipeline.load(b, enc.preprocess).value for b in blobs]))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. For IVF indexes nprobe grows with k (passed per call, so
        concurrent searches never race on shared state): the tuned nprobe suits k=10, but a
        quota of thousands needs enough lists probed to hold k items at all."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.manifest.dim:
            raise CuratorError(f"queries must be (n, {self.manifest.dim}), got {queries.shape}")
        k = min(k, self.ntotal)
        params = self._search_params(k)
        if params is None:
            return self.index.search(queries, k)
        return self.index.search(queries, k, params=params)

    def _ivf(self):
        """The IVF layer under any wrapping (OPQ, PCA, pre-transforms), or None for flat indexes."""
        faiss = import_faiss()
        try:
            return faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None

    def _search_params(self, k: int):
        faiss = import_faiss()
        ivf = self._ivf()
        if not self.manifest.nprobe or ivf is None:
            return None
        nlist = ivf.nlist
        wanted = math.ceil(8 * k * nlist / max(1, self.ntotal))  # lists holding ~8x k items on average
        return faiss.SearchParametersIVF(nprobe=min(nlist, max(self.manifest.nprobe, wanted)))

    def cells(self, vectors: np.ndarray, n: int, ids: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """The ``n`` nearest IVF cells of each vector (the index's own coarse quantizer). With the pool
        ``ids`` of the vectors, from the lists they are stored in and those lists' neighbours
        (``curator.cells``) instead of a search against every centroid."""
        ivf = self._ivf()
        if ivf is None:
            return None
        x = self._pre_transformed(vectors)
        if ids is not None and self._item_cells(ivf).available():
            return self._item_cells(ivf).top(np.asarray(ids, dtype=np.int64), x, n)
        return ivf.quantizer.search(x, n)[1]

    def near(self, vectors: np.ndarray, threshold: float) -> np.ndarray:
        """Sorted pool ids within cosine ``threshold`` of any of ``vectors`` (a curation's forbidden images).

        A range search through each vector's NEAR_PROBE nearest lists (an item this close shares one of
        them, as near-duplicates share cells), ``code_margin`` below the threshold since the index's codes
        are approximate. Hits the codes put that far above it are in; hits within the margin either side
        are checked on their stored vectors. A few lists per vector, instead of reading every candidate's
        vector to compare it with them."""
        faiss = import_faiss()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(x) or threshold >= 1.0:
            return np.empty(0, np.int64)
        ivf, margin = self._ivf(), code_margin(self.manifest.index_factory)
        kw = {} if ivf is None else {"params": faiss.SearchParametersIVF(
            nprobe=min(ivf.nlist, max(self.manifest.nprobe or 1, NEAR_PROBE)))}
        _, approx, found = self.index.range_search(x, threshold - margin, **kw)
        sure = np.unique(found[approx >= threshold + margin]).astype(np.int64)
        maybe = np.setdiff1d(found[approx < threshold + margin], sure).astype(np.int64)
        if len(maybe):
            best, _ = faiss.knn(np.ascontiguousarray(self.vectors(maybe), np.float32), x, 1,
                                metric=faiss.METRIC_INNER_PRODUCT)
            sure = np.union1d(sure, maybe[best[:, 0] >= threshold])
        return sure

    def stored_lists(self) -> Optional[np.ndarray]:
        """The IVF list each item is stored in (item id -> list), or None where it cannot be known."""
        ivf = self._ivf()
        return self._item_cells(ivf).list_of if ivf is not None and self._item_cells(ivf).available() else None

    def links(self, candidates: np.ndarray, threshold: float) -> Optional[Adjacency]:
        """The candidates' near-duplicates from this generation's precomputed links (``curator.link_table``),
        or None where it has none at this threshold or below."""
        if self.manifest.links is None:
            return None
        with self._lock:
            if self._links is None:
                self._links = LinkTable(self.root, self.manifest.links)
        return self._links.among(candidates, threshold)

    def _item_cells(self, ivf) -> ItemCells:
        with self._lock:
            if self._cells is None:
                self._cells = ItemCells(ivf, self.ntotal)
            return self._cells

    def _pre_transformed(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors in the IVF layer's space: through the index's pre-transforms (PCA, OPQ), if any."""
        faiss = import_faiss()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.downcast_index(self.index)
        if isinstance(index, faiss.IndexPreTransform):
            for i in range(index.chain.size()):
                x = index.chain.at(i).apply(x)
        return x

    def hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        keep = ids >= 0
        rows = self.items.take(pa.array(ids[keep])).to_pydict()
        return [Hit(id=int(i), score=float(s), key=rows["key"][n], source=rows["source"][n], offset=rows["offset"][n],
                    size=rows["size"][n], caption=rows["caption"][n]) for n, (i, s) in enumerate(zip(ids[keep], scores[keep]))]

    def fetch(self, item_id: int) -> bytes:
        """The original bytes of pool item ``item_id``: one ranged read."""
        if not 0 <= item_id < self.ntotal:
            raise CuratorError(f"item id {item_id} out of range 0..{self.ntotal - 1}")
        row = self.items.slice(item_id, 1).to_pylist()[0]
        if row["size"] == 0 and row["offset"] == 0 and "://" in row["source"]:
            raise CuratorError(f"item {item_id} was indexed from published embeddings and its image is not stored "
                               f"here (it was at {row['source']}); curator does not fetch it")
        return read_range(row["source"], row["offset"], row["size"])


def read_faiss_index(path: str | Path, layout: str, *, mmap: bool = True):
    """Read a saved faiss index. ``memory`` layout: mapped (IO_FLAG_MMAP) or loaded whole. ``on-disk``:
    its lists map themselves and are found beside the index file wherever the folder now is
    (IO_FLAG_ONDISK_SAME_DIR; faiss 1.15 crashes at search if IO_FLAG_MMAP is added to them)."""
    faiss = import_faiss()
    if layout == "on-disk":
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR
    else:
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        with native_stdout_to_stderr():
            return faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise CuratorError(f"{path}: faiss cannot read this index ({str(exc).splitlines()[-1]}); "
                           f"the index folder is damaged, rebuild it") from None


def shard_codes(items: pa.Table) -> tuple[np.ndarray, list[str]]:
    """(code of each item's shard_id, the shard ids by code), from a dictionary encoding."""
    encoded = items.column("shard_id").combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32), encoded.dictionary.to_pylist()


class LivePool:
    """The current generation of an index folder, re-opened when ``index.json`` changes (an
    ``--append`` or a rebuild), so a running service picks it up without a restart.

    Callers take ``current()`` once per request or job and keep that :class:`PoolIndex`: a job
    started on one generation finishes on it (the builder keeps the previous generation's files)."""

    #: Seconds between checks of index.json (one stat each).
    CHECK_EVERY = 1.0

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._pool = PoolIndex.open(self.root)
        self._stamp = self._read_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _read_stamp(self) -> tuple:
        try:
            st = os.stat(self.root / INDEX_MANIFEST_NAME)
        except OSError:
            return ()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def current(self) -> PoolIndex:
        now = time.monotonic()
        if now - self._checked < self.CHECK_EVERY:
            return self._pool
        with self._lock:
            self._checked = now
            stamp = self._read_stamp()
            if stamp and stamp != self._stamp:
                try:
                    fresh = PoolIndex.open(self.root)
                except CuratorError as exc:  # a half-removed or damaged generation: keep serving the last
                    logging.getLogger(__name__).warning("index changed but cannot be opened (%s); still "
                                                        "serving generation %d", exc, self._pool.generation)
                else:
                    if fresh.manifest.encoder.spec == self._pool.manifest.encoder.spec:
                        fresh._encoder = self._pool._encoder  # same model: keep it loaded
                    self._pool = fresh
                self._stamp = stamp
        return self._pool


def check_preprocessing(root: Path, recorded: dict, current: dict) -> None:
    """Queries must go through the pool's preprocessing: a library upgrade that changed it would
    silently embed queries differently from the pool, so a difference is an error that names it."""
    current = json.loads(json.dumps(current))  # tuples -> lists, as index.json holds them
    diff = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
    if diff:
        changes = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in diff)
        raise CuratorError(f"{root}: the encoder's preprocessing differs from the one the pool was indexed with "
                           f"({changes}); install the library versions the index was built with, or rebuild it")
