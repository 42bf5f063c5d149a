"""Near-duplicate links: every pool item's near-duplicates, found once at build time.

A deep curation (100 queries x 20,000 neighbours) has millions of candidates, and finding their
near-duplicates by comparing each with those sharing its coarse cells is nearly all of its time
(minutes at 20M items). The pairs do not depend on the curation, only on the pool and the
threshold, so ``curator build-index --dedup-links`` finds them once for the whole pool and a
curation gathers its candidates' rows from one memory-mapped CSR table (``LinksInfo``). The pairs
are those a curation of many candidates finds, items compared within their two nearest cells, less
what the build's finer sub-cells miss (measured: ``LinksInfo.recall``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from . import atomic
from .formats import LinksInfo
from .dedup import Adjacency

INDPTR, NEIGHBOURS, COSINES = "links-indptr.npy", "links-neighbours.npy", "links-cosines.npy"


class LinkTable:
    """An index generation's links, memory-mapped (only the candidates' rows are read)."""

    def __init__(self, root: Path, info: LinksInfo):
        self.info = info
        self.indptr = np.load(root / info.indptr_file, mmap_mode="r")
        self.neighbours = np.load(root / info.neighbours_file, mmap_mode="r")
        self.cosines = np.load(root / info.cosines_file, mmap_mode="r")

    def among(self, candidates: np.ndarray, threshold: float) -> Optional[Adjacency]:
        """The near-duplicates of sorted pool ids ``candidates`` among themselves, at cosine >=
        ``threshold``, as positions in ``candidates``; None when the links were built at a higher
        threshold than asked for (they would miss pairs)."""
        if threshold < self.info.threshold:
            return None
        candidates = np.asarray(candidates, dtype=np.int64)
        starts = np.asarray(self.indptr[candidates], dtype=np.int64)
        lens = np.asarray(self.indptr[candidates + 1], dtype=np.int64) - starts
        rows = np.repeat(np.arange(len(candidates)), lens)
        at = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
        ids, cos = self.neighbours[at], self.cosines[at]
        pos = np.minimum(np.searchsorted(candidates, ids), max(0, len(candidates) - 1))
        keep = (cos >= threshold) & (candidates[pos] == ids) if len(candidates) else cos < 0
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=len(candidates)))])
        return Adjacency(len(candidates), indptr, pos[keep])


def write_links(gdir: Path, out: Path, ntotal: int, i: np.ndarray, j: np.ndarray, cos: np.ndarray,
                threshold: float, seconds: float) -> LinksInfo:
    """Write pairs (i, j, cosine), each found once or more in either order, as the generation's table.

    Each pair is stored from both ends, once; file names in the returned ``LinksInfo`` are relative
    to ``out`` (the index folder), as every other file of the manifest."""
    rows, cols = np.concatenate([i, j]).astype(np.int64), np.concatenate([j, i]).astype(np.int64)
    sims = np.concatenate([cos, cos]).astype(np.float32)
    key = rows * ntotal + cols
    order = np.argsort(key, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = np.diff(key[order]) != 0
    order = order[first]                                   # a pair found in several cells counts once
    rows, cols, sims = rows[order], cols[order], sims[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=ntotal))]).astype(np.int64)
    rel = gdir.relative_to(out)
    for name, array in ((INDPTR, indptr), (NEIGHBOURS, cols), (COSINES, sims)):
        atomic.write_npy(gdir / name, array)
    return LinksInfo(threshold=threshold, indptr_file=str(rel / INDPTR), neighbours_file=str(rel / NEIGHBOURS),
                     cosines_file=str(rel / COSINES), links=int(len(cols)), seconds=round(seconds, 3))
