"""The IVF cells of pool items, for near-duplicate detection without a quantizer search.

Near-duplicate detection compares candidates within their two nearest coarse cells. Asking the
quantizer for those costs a search of every candidate against every centroid (most of a 100 x 1,000
curation's selection time on 1M items). But an item's nearest cell is already known: it is the list
the index stored it in. Its second nearest is, in practice, among the centroids nearest to that one,
so each candidate is compared with its own list's centroid and that centroid's nearest
centroids only (a sixteenth of them, 64 to 128): about a sixteenth of the work. On clustered
32-d test vectors over 128 lists the second cell is the quantizer's for 99% of items; either way the
nearest is the same, and the near-duplicate pairs found were identical.
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from .faiss_support import import_faiss

#: Centroids each item is compared with besides its own list's: this fraction of them, within the bounds.
#: The cap matters at large nlist: 512 neighbours of 8,192 lists made this a 4M x 513 product for a deep
#: curation, and an item's second cell is among its own list's 128 nearest all but never.
NEIGHBOUR_FRACTION, MIN_NEIGHBOURS, MAX_NEIGHBOURS = 1 / 16, 64, 128
#: Above this many items the item-to-list map (4 bytes an item) is not built: the quantizer is asked.
MAX_MAPPED_ITEMS = 250_000_000


class ItemCells:
    """Built lazily, once per opened index generation (a map of 4 bytes per item, and the centroids)."""

    def __init__(self, ivf, ntotal: int):
        self.ivf, self.ntotal = ivf, ntotal
        self._lock = threading.Lock()
        self._ready = False
        self.list_of: Optional[np.ndarray] = None
        self.centroids: Optional[np.ndarray] = None
        self.near: Optional[np.ndarray] = None

    def available(self) -> bool:
        with self._lock:
            if not self._ready:
                self._build()
                self._ready = True
        return self.list_of is not None

    def top(self, ids: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
        """The ``n`` nearest cells of items ``ids`` whose vectors (in the IVF layer's space) are ``x``."""
        primary = self.list_of[ids]
        order = np.argsort(primary, kind="stable")
        out = np.empty((len(ids), n), dtype=np.int64)
        for group in np.split(order, np.flatnonzero(np.diff(primary[order])) + 1):
            if not len(group):
                continue
            near = self.near[primary[group[0]]]
            out[group] = near[_best(x[group] @ self.centroids[near].T, n)]
        return out

    def _build(self) -> None:
        faiss = import_faiss()
        nlist = self.ivf.nlist
        if self.ntotal > MAX_MAPPED_ITEMS or nlist < 2:
            return
        try:
            centroids = self.ivf.quantizer.reconstruct_n(0, nlist)
        except RuntimeError:  # a quantizer that cannot give its centroids back
            return
        list_of = np.full(self.ntotal, -1, dtype=np.int32)
        invlists = self.ivf.invlists
        for cell in range(nlist):
            size = invlists.list_size(cell)
            if size:
                ids = faiss.rev_swig_ptr(invlists.get_ids(cell), size)
                list_of[np.asarray(ids, dtype=np.int64)] = cell
        if (list_of < 0).any():  # ids that are not 0..ntotal-1: the map cannot say
            return
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        wanted = min(MAX_NEIGHBOURS, max(MIN_NEIGHBOURS, int(nlist * NEIGHBOUR_FRACTION)))
        self.near = _nearest_centroids(self.centroids, min(nlist - 1, wanted))
        self.list_of = list_of


def _best(sims: np.ndarray, n: int) -> np.ndarray:
    """Per row, the columns of the ``n`` largest values, largest first: ``n`` passes of argmax, which for
    the 2 a near-duplicate search asks is several times faster than a partition of every row."""
    if n >= sims.shape[1]:
        return np.argsort(-sims, axis=1, kind="stable")[:, :n]
    rows, cols = np.arange(len(sims)), []
    for _ in range(n):
        col = np.argmax(sims, axis=1)
        sims[rows, col] = -np.inf
        cols.append(col)
    return np.stack(cols, axis=1)


def _nearest_centroids(c: np.ndarray, m: int, block: int = 1024) -> np.ndarray:
    """Per centroid: itself, then its ``m`` nearest others (inner product), as (nlist, m + 1)."""
    out = np.empty((len(c), m + 1), dtype=np.int64)
    for start in range(0, len(c), block):
        sims = c[start:start + block] @ c.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = np.inf  # itself first
        top = np.argpartition(-sims, m, axis=1)[:, :m + 1]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start:start + block] = np.take_along_axis(top, order, axis=1)
    return out
