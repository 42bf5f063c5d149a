"""Transfer-set selection: which pool items each query image contributes.

The strategies themselves are registered in ``curator.strategies``; this module is their machinery.
``balanced`` is the paper's query-balanced retrieval: every query image gets the same
number of *unique* pool images, found by walking its ranked neighbour list and skipping
items already taken. Queries take turns one item at a time (round-robin), so no query's
position in the list decides who gets a contested neighbour. ``class-balanced`` gives each
class an equal share, split evenly over its queries; ``threshold`` takes everything above
a similarity, best first, up to the budget. ``random`` is the paper's control: a uniform
draw from the pool of the same size, under the same dedup and contamination rules (each
item is credited to its nearest query, for the record only).

Near-duplicates never enter twice: once an item is taken, every candidate within cosine
``dedup`` of it is blocked. Candidates within ``exclude_threshold`` of a query image or of
any ``--exclude`` image (e.g. the target test set) are dropped as contamination. A pool built with
``--dedup-links`` has every item's near-duplicates already (``curator.links``): they are looked up.
Searches deepen (k x 4) until every quota is met or a query's list covers the whole pool.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .faiss_support import import_faiss

log = logging.getLogger(__name__)
#: The pool's precomputed near-duplicate links (``PoolIndex.links``): the candidates' adjacency at a
#: threshold, or None where the pool has none that cover it.
Links = Optional[Callable[[np.ndarray, float], Optional["Adjacency"]]]
#: Pool ids within a cosine of any of some vectors, checked exactly (``PoolIndex.near``): contamination
#: found from the forbidden side, without the candidates' vectors.
Near = Optional[Callable[[np.ndarray, float], np.ndarray]]
#: ``search(k)``: every query view's top k (scores, ids); ``search(k, rows)``: only those views'.
Search = Callable[..., tuple[np.ndarray, np.ndarray]]
#: Above this many candidates, near-duplicate search uses an IVF index instead of exact.
EXACT_DEDUP_MAX = 20_000


@dataclass
class Selection:
    ids: np.ndarray          # pool ids, in the order they were taken
    query: np.ndarray        # index of the query image each came from
    rank: np.ndarray         # 0-based rank in that query's merged neighbour list
    score: np.ndarray        # cosine similarity to that query (best view)
    quotas: np.ndarray       # per-query quota that was asked for
    counts: dict = field(default_factory=dict)
    dry_queries: list[int] = field(default_factory=list)
    #: what the rules kept out, for people to look at: (pool id, query, rank, score, reason), reason
    #: "near-duplicate" or "contamination"; each item once, where a query's walk first met it
    dropped: list[tuple] = field(default_factory=list)


def merge_views(scores: np.ndarray, ids: np.ndarray, owner: np.ndarray, n_queries: int) -> list[tuple]:
    """Per query: unique ids ranked by their best score over the query's views."""
    lists = []
    for q in range(n_queries):
        rows = np.flatnonzero(owner == q)
        s, i = scores[rows].ravel(), ids[rows].ravel()
        keep = i >= 0
        s, i = s[keep], i[keep]
        order = np.lexsort((i, -s))            # best score first, ties by id: deterministic
        s, i = s[order], i[order]
        _, first = np.unique(i, return_index=True)
        first.sort()
        lists.append((i[first], s[first]))
    return lists


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


def apply_rules(candidates: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray], forbidden: np.ndarray,
                dedup: float, exclude_threshold: float, cells: Optional[Callable[..., np.ndarray]] = None,
                links: Links = None, near: Near = None) -> tuple[np.ndarray, Adjacency]:
    """(contaminated mask, near-duplicates) of sorted pool ids ``candidates``.

    With the pool's precomputed links covering ``dedup`` and a ``near`` search for the forbidden
    vectors, the candidates' own vectors are never read: a deep curation's millions of candidate
    rows, scattered over a pool larger than memory, were most of its time once near-duplicates were
    looked up. Otherwise each candidate is compared with every forbidden vector and its cells."""
    dups = _adjacency(len(candidates), np.empty(0, np.int64), np.empty(0, np.int64)) if dedup >= 1.0 else (
        links(candidates, dedup) if links is not None else None)
    if dups is not None and near is not None:
        return np.isin(candidates, near(forbidden, exclude_threshold)), dups
    vecs = _working(vectors_of(candidates))
    excluded = contaminated(vecs, forbidden, exclude_threshold)
    return excluded, dups if dups is not None else near_duplicate_pairs(vecs, dedup, cells, candidates)


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


def candidate_positions(lists: list[tuple]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted unique ids of all lists, and each list's ids as positions in them: one sort of the
    concatenation, instead of a unique and then a search per list into the result (seconds each at
    100 x 40,000 ids, the search missing cache on every lookup)."""
    ids = np.concatenate([lst[0] for lst in lists]) if lists else np.empty(0, np.int64)
    order = np.argsort(ids, kind="stable")
    ranked = ids[order]
    new = np.ones(len(ranked), dtype=bool)
    new[1:] = ranked[1:] != ranked[:-1]
    inverse = np.empty(len(ids), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ranked[new], np.split(inverse, np.cumsum([len(lst[0]) for lst in lists])[:-1])


def walk(lists: list[tuple], quotas: np.ndarray, candidates: np.ndarray, positions: list[np.ndarray],
         excluded: np.ndarray, dups: Adjacency,
         cancelled: Callable[[], bool] = lambda: False) -> tuple[tuple, dict, list[int]]:
    """Round-robin quota filling. Returns ((ids, queries, ranks, scores) taken, counts, queries whose list
    ran out).

    ``positions`` are each list's ids as positions in ``candidates`` (``candidate_positions``); the loop
    runs on plain Python lists and a bytearray, a few times faster per step than numpy scalars, which
    matters at thousands of neighbours per query."""
    positions = [pos.tolist() for pos in positions]
    blocked, bounds = excluded.tolist(), dups.indptr.tolist()
    state = bytearray(len(candidates))                   # 0 free, 1 taken, 2 dup-blocked
    ptr, got, want = [0] * len(lists), [0] * len(lists), [int(q) for q in quotas]
    taken_q, taken_r, dry = [], [], set()   # the query and rank of each take: ids and scores are looked up after
    seen_excluded, seen_dup, dropped = set(), set(), []
    active = [q for q in range(len(lists)) if want[q] > 0]
    while active:
        if cancelled():
            raise InterruptedError("cancelled")
        still = []
        for q in active:
            pos, r = positions[q], ptr[q]
            while r < len(pos):
                j = pos[r]
                r += 1
                if blocked[j] or state[j] == 2:
                    seen = seen_excluded if blocked[j] else seen_dup
                    if j not in seen:
                        seen.add(j)
                        dropped.append((int(lists[q][0][r - 1]), q, r - 1, float(lists[q][1][r - 1]),
                                        "contamination" if blocked[j] else "near-duplicate"))
                elif state[j] == 0:
                    state[j] = 1
                    if bounds[j + 1] > bounds[j]:
                        for other in dups.indices[bounds[j]:bounds[j + 1]].tolist():
                            if state[other] == 0:
                                state[other] = 2
                    taken_q.append(q)
                    taken_r.append(r - 1)
                    got[q] += 1
                    break
            else:
                ptr[q] = r
                dry.add(q)
                continue
            ptr[q] = r
            if got[q] < want[q]:
                still.append(q)
        active = still
    counts = {"candidates": int(len(candidates)), "excluded": len(seen_excluded), "deduped": len(seen_dup),
              "dropped": dropped}
    return _taken_columns(lists, taken_q, taken_r), counts, sorted(dry)


def _taken_columns(lists: list[tuple], taken_q: list[int], taken_r: list[int]) -> tuple[np.ndarray, ...]:
    """(ids, queries, ranks, scores) of the takes, looked up in the lists at once."""
    q, r = np.asarray(taken_q, np.int64), np.asarray(taken_r, np.int64)
    starts = np.cumsum([0] + [len(ids) for ids, _ in lists])[:-1].astype(np.int64)
    at = starts[q] + r if len(q) else q
    ids = np.concatenate([ids for ids, _ in lists])[at] if lists else q
    scores = np.concatenate([scores for _, scores in lists])[at] if lists else q
    return ids, q, r, scores


def select_balanced(search: Search, owner: np.ndarray, n_queries: int,
                    quotas: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray], forbidden: np.ndarray,
                    ntotal: int, dedup: float, exclude_threshold: float,
                    cancelled: Callable[[], bool] = lambda: False,
                    cells: Optional[Callable[..., np.ndarray]] = None, links: Links = None,
                  near: Near = None) -> Selection:
    """Search deep enough for every quota, then walk; search deeper for the queries that ran dry
    only (the others' lists held their quotas), and walk again, until none runs dry.

    A query takes from its list in order, so one that never reached its list's end took what a deeper
    list would have given it: on an exact index the walk is the one deepening every query gives. On
    an IVF index a query's list is then searched only as deep, and through as many lists, as it
    needed. Deepening every query searched 1,000 queries again at 4x the depth when some ran dry."""
    k = min(ntotal, int(2 * quotas.max() + 16))
    lists = merge_views(*search(k), owner, n_queries)
    near = _asked_once(near)
    while True:
        candidates, positions = candidate_positions(lists)
        excluded, dups = apply_rules(candidates, vectors_of, forbidden, dedup, exclude_threshold, cells, links, near)
        taken, counts, dry = walk(lists, quotas, candidates, positions, excluded, dups, cancelled)
        if not dry or k >= ntotal:
            break
        log.info("%d queries ran out of neighbours at k=%d; searching deeper", len(dry), k)
        k = min(ntotal, k * 4)
        rows = np.flatnonzero(np.isin(owner, dry))
        deeper = merge_views(*search(k, rows), owner[rows], n_queries)
        for q in dry:
            lists[q] = deeper[q]
    return _selection(taken, quotas, counts, dry, k)


def _asked_once(near: Near) -> Near:
    """``near`` remembering its answer: the forbidden vectors are the same in every round of
    deepening, and their range search was half of a 1,000-query curation's selection."""
    if near is None:
        return None
    answers: dict = {}

    def once(vectors: np.ndarray, threshold: float) -> np.ndarray:
        key = (id(vectors), threshold)
        if key not in answers:
            answers[key] = near(vectors, threshold)
        return answers[key]
    return once


def select_threshold(search: Search, owner: np.ndarray, n_queries: int,
                     threshold: float, budget: Optional[int], vectors_of: Callable[[np.ndarray], np.ndarray],
                     forbidden: np.ndarray, ntotal: int, dedup: float, exclude_threshold: float,
                     cells: Optional[Callable[..., np.ndarray]] = None, links: Links = None,
                  near: Near = None) -> Selection:
    """Every item above ``threshold`` for any query, best first, up to ``budget``."""
    k = min(ntotal, max(64, 2 * (budget or 0) // max(1, n_queries)))
    while True:
        scores, ids = search(k)
        if k >= ntotal or scores[:, -1].max() < threshold:
            break
        k = min(ntotal, k * 4)
    lists = merge_views(scores, ids, owner, n_queries)
    best: dict[int, tuple] = {}
    for q, (qids, qscores) in enumerate(lists):
        for r, (pid, s) in enumerate(zip(qids, qscores)):
            if s >= threshold and (pid not in best or s > best[pid][2]):
                best[int(pid)] = (q, r, float(s))
    order = sorted(best, key=lambda pid: (-best[pid][2], pid))
    candidates = np.array(sorted(best), dtype=np.int64)
    pos = {pid: j for j, pid in enumerate(candidates)}
    excluded, dups = apply_rules(candidates, vectors_of, forbidden, dedup, exclude_threshold, cells, links, near)
    picked, dropped = _take_in_order([pos[pid] for pid in order], excluded, dups, budget)
    taken = [(int(candidates[j]), *best[int(candidates[j])]) for j in picked]
    counts = {"candidates": int(len(candidates)), **_drop_counts(dropped),
              "dropped": [(int(candidates[j]), *best[int(candidates[j])], why) for j, why in dropped]}
    return _selection(taken, np.zeros(n_queries, dtype=np.int64), counts, [], k)


def _take_in_order(order: list[int], excluded: np.ndarray, dups: Adjacency,
                   budget: Optional[int]) -> tuple[list[int], list[tuple[int, str]]]:
    """Walk candidate positions in ``order``, skipping contamination and near-duplicates of
    what was taken, up to ``budget``. Returns (taken positions, [(dropped position, reason)])."""
    state = np.zeros(len(excluded), dtype=np.int8)     # 0 free, 1 taken, 2 dup-blocked
    picked, dropped = [], []
    for j in order:
        if budget is not None and len(picked) >= budget:
            break
        if excluded[j] or state[j] == 2:
            dropped.append((j, "contamination" if excluded[j] else "near-duplicate"))
        else:
            state[j] = 1
            state[dups[j][state[dups[j]] == 0]] = 2
            picked.append(j)
    return picked, dropped


def select_random(query_vecs: np.ndarray, owner: np.ndarray, budget: int, seed: int,
                  vectors_of: Callable[[np.ndarray], np.ndarray], forbidden: np.ndarray, ntotal: int,
                  dedup: float, exclude_threshold: float,
                  cells: Optional[Callable[..., np.ndarray]] = None, links: Links = None,
                  near: Near = None) -> Selection:
    """A seeded uniform draw of ``budget`` pool items (fewer only if the pool runs out)."""
    faiss = import_faiss()
    order = np.random.default_rng(seed).permutation(ntotal)
    n = min(ntotal, 2 * budget + 64)
    while True:
        candidates = np.sort(order[:n])
        excluded, dups = apply_rules(candidates, vectors_of, forbidden, dedup, exclude_threshold, cells, links, near)
        pos = {int(pid): j for j, pid in enumerate(candidates)}
        picked, dropped = _take_in_order([pos[int(pid)] for pid in order[:n]], excluded, dups, budget)
        if len(picked) >= budget or n >= ntotal:
            break
        n = min(ntotal, n * 2)
    picked_arr = np.asarray(picked, dtype=np.int64)
    sims, nearest = faiss.knn(np.ascontiguousarray(vectors_of(candidates[picked_arr]), np.float32),
                              np.ascontiguousarray(query_vecs, np.float32), 1, metric=faiss.METRIC_INNER_PRODUCT)
    taken = [(int(candidates[j]), int(owner[v]), -1, float(s)) for j, v, s in zip(picked_arr, nearest[:, 0],
                                                                                   sims[:, 0])]
    counts = {"candidates": int(n), **_drop_counts(dropped),
              "dropped": [(int(candidates[j]), -1, -1, float("nan"), why) for j, why in dropped]}
    return _selection(taken, np.zeros(int(owner.max()) + 1 if len(owner) else 0, dtype=np.int64), counts, [], n)


def _drop_counts(dropped: list[tuple[int, str]]) -> dict:
    reasons = [why for _, why in dropped]
    return {"excluded": reasons.count("contamination"), "deduped": reasons.count("near-duplicate")}


def _selection(taken, quotas: np.ndarray, counts: dict, dry: list[int], depth: int) -> Selection:
    """``taken``: (id, query, rank, score) per take, as rows or as four columns already."""
    arr = taken if isinstance(taken, tuple) else (list(zip(*taken)) if taken else [[], [], [], []])
    counts = dict(counts)
    dropped = counts.pop("dropped", [])
    counts = dict(counts, emitted=len(arr[0]), search_depth=int(depth))
    return Selection(np.asarray(arr[0], np.int64), np.asarray(arr[1], np.int64), np.asarray(arr[2], np.int64),
                     np.asarray(arr[3], np.float32), quotas, counts, dry, dropped)
