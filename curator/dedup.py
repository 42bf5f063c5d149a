"""Near-duplicates and contamination among a curation's candidates: the rules every selection shares.

Two pool items within cosine ``dedup`` of each other are near-duplicates; a candidate within
``exclude_threshold`` of a query image or an ``--exclude`` image is contamination. Small candidate sets are
compared exactly; large ones within coarse cells (the pool index's own IVF cells where it has them, split
again where crowded), so the cost is about candidates x cell size rather than its square. A pool built
with ``--dedup-links`` has every item's near-duplicates already (``curator.link_table``): they are looked up.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .faiss_support import import_faiss

#: The pool's precomputed near-duplicate links (``PoolIndex.links``): the candidates' adjacency at a
#: threshold, or None where the pool has none that cover it.
Links = Optional[Callable[[np.ndarray, float], Optional["Adjacency"]]]
#: Pool ids within a cosine of any of some vectors, checked exactly (``PoolIndex.near``): contamination
#: found from the forbidden side, without the candidates' vectors.
Near = Optional[Callable[[np.ndarray, float], np.ndarray]]
#: Above this many candidates, near-duplicate search uses an IVF index instead of exact.
EXACT_DEDUP_MAX = 20_000


#: Rows of a cell compared at once in near-duplicate detection: a 2,048 x cell-size float32 block
#: instead of the whole cell-size squared matrix.
DEDUP_BLOCK = 2048
#: A cell holding more candidates than this is split again by a small k-means into sub-cells of about
#: SUBCELL_SIZE (each candidate in its SUBCELL_PROBE nearest). The cost of comparing within cells is
#: candidates x cell size, and 100 queries x 20,000 neighbours crowd 3.6M candidates into IVF cells of
#: tens of thousands. Below the limit cells are compared whole: splitting a 1M pool's cells of ~1,000
#: cost more in k-means than it saved, and loses a few borderline pairs at dedup 0.9.
SPLIT_ABOVE, SUBCELL_SIZE = 4096, 512
#: Sub-cells each candidate of a split cell joins. Within one dense cluster k-means cells are close
#: calls: with 2, one of 150 planted pairs at cosine 0.9997 landed in disjoint sub-cells.
SUBCELL_PROBE = 3
#: Candidates whose cells are asked for at once: the IVF layer's float32 copy of them stays bounded.
CELL_BLOCK = 262_144
#: Candidate vectors are made float32 once when that copy is at most this big; above it (a deep
#: curation's millions) they stay float16 and each cell or block is converted as it is used.
FLOAT32_WORKING_BYTES = 2 << 30


def _working(vectors: np.ndarray) -> np.ndarray:
    """Candidates as float32 when that fits FLOAT32_WORKING_BYTES (numpy's float16 conversion is slow,
    and each candidate is used in several cells), else as they are."""
    if vectors.dtype == np.float32 or vectors.size * 4 > FLOAT32_WORKING_BYTES:
        return vectors
    return vectors.astype(np.float32)


def near_duplicate_pairs(vectors: np.ndarray, threshold: float, cells: Optional[Callable[..., np.ndarray]] = None,
                         ids: Optional[np.ndarray] = None) -> Adjacency:
    """For each vector, the indices of the others within cosine ``threshold``.

    Up to EXACT_DEDUP_MAX vectors: exact range search. Beyond: each vector goes into its 2
    nearest coarse cells (the pool index's own IVF cells when given, found from the pool ``ids``
    where it can, else k-means on the vectors), crowded cells are split again (each candidate in its
    3 nearest sub-cells), and pairs are compared within cells by dense matrix products. Pairs this close (cosine >= 0.95) essentially
    always share a cell (tests compare with exact search), and the cost is ~n * cell size instead of
    n^2. ``vectors`` may be float16: only one cell at a time is made float32.
    """
    faiss = import_faiss()
    n, d = vectors.shape
    if threshold >= 1.0 or n == 0:
        return _adjacency(n, np.empty(0, np.int64), np.empty(0, np.int64))
    if n <= EXACT_DEDUP_MAX:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexFlatIP(d)
        index.add(x)
        lims, _, found = index.range_search(x, threshold)
        rows = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
        return _adjacency(n, rows, found.astype(np.int64))
    assign = coarse_cells(vectors, cells, ids)
    pairs_i, pairs_j = [], []
    for group in cell_groups(assign):
        if len(group) < 2:
            continue
        a, b, _ = cell_pairs(np.ascontiguousarray(vectors[group], dtype=np.float32), threshold)
        pairs_i.append(group[a])
        pairs_j.append(group[b])
    if not pairs_i:
        return _adjacency(n, np.empty(0, np.int64), np.empty(0, np.int64))
    i, j = np.concatenate(pairs_i), np.concatenate(pairs_j)
    both = np.unique(np.concatenate([i * n + j, j * n + i]))  # a pair found in several cells counts once
    return _adjacency(n, both // n, both % n)


def cell_pairs(gx: np.ndarray, threshold: float, split_above: int = SPLIT_ABOVE, size: int = SUBCELL_SIZE,
               probe: int = SUBCELL_PROBE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs (a < b) of one coarse cell's float32 vectors ``gx`` within cosine ``threshold``, with
    their cosines. A cell of more than ``split_above`` is split again into sub-cells of about ``size``,
    each row in its ``probe`` nearest; a pair in several of them appears once per sub-cell (callers
    dedupe, as they must across coarse cells anyway)."""
    if len(gx) <= split_above:
        return close_pairs(gx, threshold)
    found = []
    for sub in cell_groups(_split_cells(gx, probe, size)):
        if len(sub) > 1:
            a, b, s = close_pairs(gx[sub], threshold)
            found.append((sub[a], sub[b], s))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return tuple(np.concatenate(part) for part in zip(*found))


#: Why a candidate is kept out, by code: ``apply_rules`` marks each candidate with one.
FREE, CONTAMINATION, QUERY = 0, 1, 2
REASONS = {CONTAMINATION: "contamination", QUERY: "query"}


def apply_rules(candidates: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray], forbidden: np.ndarray,
                dedup: float, exclude_threshold: float, cells: Optional[Callable[..., np.ndarray]] = None,
                links: Links = None, near: Near = None, query_rows: int = 0) -> tuple[np.ndarray, Adjacency]:
    """(exclusion codes, near-duplicates) of sorted pool ids ``candidates``: each candidate FREE, or kept out
    as CONTAMINATION (close to an ``--exclude`` image), or as QUERY (close to one of the queries, the first
    ``query_rows`` of ``forbidden``: a query image that is itself in the pool, most often).

    With the pool's precomputed links covering ``dedup`` and a ``near`` search for the forbidden
    vectors, the candidates' own vectors are never read: a deep curation's millions of candidate
    rows, scattered over a pool larger than memory, were most of its time once near-duplicates were
    looked up. Otherwise each candidate is compared with every forbidden vector and its cells."""
    dups = _adjacency(len(candidates), np.empty(0, np.int64), np.empty(0, np.int64)) if dedup >= 1.0 else (
        links(candidates, dedup) if links is not None else None)
    if dups is not None and near is not None:
        excluded = np.isin(candidates, near(forbidden, exclude_threshold))
        queries = np.isin(candidates, near(forbidden[:query_rows], exclude_threshold)) if query_rows else excluded & False
        return _codes(excluded, queries), dups
    vecs = _working(vectors_of(candidates))
    excluded = contaminated(vecs, forbidden, exclude_threshold)
    queries = np.zeros_like(excluded)
    if query_rows and excluded.any():  # only the few kept out are asked which side they are close to
        queries[excluded] = contaminated(vecs[excluded], forbidden[:query_rows], exclude_threshold)
    return _codes(excluded, queries), dups if dups is not None else near_duplicate_pairs(vecs, dedup, cells, candidates)


def _codes(excluded: np.ndarray, queries: np.ndarray) -> np.ndarray:
    codes = np.where(excluded, CONTAMINATION, FREE).astype(np.int8)
    codes[queries & excluded] = QUERY
    return codes


def coarse_cells(vectors: np.ndarray, cells: Optional[Callable[..., np.ndarray]],
                  ids: Optional[np.ndarray]) -> np.ndarray:
    """Each vector's 2 nearest coarse cells: the pool index's (a block at a time), else k-means."""
    if cells is not None:
        blocks = []
        for s in range(0, len(vectors), CELL_BLOCK):
            part = cells(np.asarray(vectors[s:s + CELL_BLOCK], dtype=np.float32), 2,
                         None if ids is None else ids[s:s + CELL_BLOCK])
            if part is None:
                break
            blocks.append(part)
        else:
            return np.concatenate(blocks)
    return _split_cells(np.ascontiguousarray(vectors, dtype=np.float32), 2, size=64)


def cell_groups(assign: np.ndarray) -> list[np.ndarray]:
    """The rows in each cell, from a (rows, m) cell assignment: a row appears in each of its m cells."""
    n, m = assign.shape
    flat = assign.ravel()
    order = np.argsort(flat, kind="stable")
    members = np.repeat(np.arange(n), m)[order]
    return np.split(members, np.flatnonzero(np.diff(flat[order])) + 1)


def close_pairs(gx: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs (a < b) of ``gx`` within cosine ``threshold`` and their cosines, a block of rows at a time."""
    found_a, found_b, found_s = [], [], []
    for start in range(0, len(gx), DEDUP_BLOCK):
        sims = gx[start:start + DEDUP_BLOCK] @ gx.T
        a, b = np.nonzero(sims >= threshold)
        upper = b > a + start
        a, b = a[upper], b[upper]
        found_s.append(sims[a, b])
        found_a.append(a + start)
        found_b.append(b)
    return np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)


class Adjacency:
    """Each candidate's near-duplicates, as one CSR array pair rather than a small array per candidate
    (hundreds of thousands of those took longer to make than to find the pairs)."""

    def __init__(self, n: int, indptr: np.ndarray, indices: np.ndarray):
        self.n, self.indptr, self.indices = n, indptr, indices

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j: int) -> np.ndarray:
        return self.indices[self.indptr[j]:self.indptr[j + 1]]

    def __iter__(self):
        return (self[j] for j in range(self.n))


def _adjacency(n: int, rows: np.ndarray, cols: np.ndarray) -> Adjacency:
    """Per-row neighbours from (row, col) pairs, self-pairs dropped."""
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    order = np.argsort(rows, kind="stable")
    return Adjacency(n, np.searchsorted(rows[order], np.arange(n + 1)), cols[order])


def _split_cells(x: np.ndarray, nprobe: int, size: int = SUBCELL_SIZE) -> np.ndarray:
    """Each row's ``nprobe`` nearest of ~len(x)/size spherical k-means cells (trained on a sample)."""
    faiss = import_faiss()
    n, d = x.shape
    ncells = max(2, n // size)
    km = faiss.Kmeans(d, ncells, niter=8, spherical=True, seed=0, verbose=False, max_points_per_centroid=64)
    km.train(x[np.random.default_rng(0).choice(n, min(n, 40 * ncells), replace=False)])
    return km.index.search(x, nprobe)[1]


def contaminated(vectors: np.ndarray, forbidden: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of ``vectors`` within cosine ``threshold`` of any ``forbidden`` vector."""
    faiss = import_faiss()

    if len(forbidden) == 0 or len(vectors) == 0 or threshold >= 1.0:
        return np.zeros(len(vectors), dtype=bool)
    forbidden = np.ascontiguousarray(forbidden, np.float32)
    out = np.empty(len(vectors), dtype=bool)
    for s in range(0, len(vectors), CELL_BLOCK):  # float16 candidates are made float32 a block at a time
        best, _ = faiss.knn(np.ascontiguousarray(vectors[s:s + CELL_BLOCK], np.float32), forbidden, 1,
                            metric=faiss.METRIC_INNER_PRODUCT)
        out[s:s + CELL_BLOCK] = best[:, 0] >= threshold
    return out
