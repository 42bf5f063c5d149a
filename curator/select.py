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
any ``--exclude`` image (e.g. the target test set) are dropped as contamination. Both rules are
found in ``curator.dedup``.
Searches deepen (k x 4) until every quota is met or a query's list covers the whole pool.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .dedup import REASONS, Adjacency, Links, Near, apply_rules
from .faiss_support import import_faiss

log = logging.getLogger(__name__)
#: ``search(k)``: every query view's top k (scores, ids); ``search(k, rows)``: only those views'.
Search = Callable[..., tuple[np.ndarray, np.ndarray]]
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
    #: "near-duplicate", "query" or "contamination"; each item once, where a query's walk first met it
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
                                        REASONS.get(blocked[j], "near-duplicate")))
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
                  near: Near = None, query_rows: int = 0) -> Selection:
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
        excluded, dups = apply_rules(candidates, vectors_of, forbidden, dedup, exclude_threshold, cells, links, near,
                                     query_rows)
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
        key = (vectors.__array_interface__["data"][0], vectors.shape, threshold)  # the same rows, asked again
        if key not in answers:
            answers[key] = near(vectors, threshold)
        return answers[key]
    return once


def select_threshold(search: Search, owner: np.ndarray, n_queries: int,
                     threshold: float, budget: Optional[int], vectors_of: Callable[[np.ndarray], np.ndarray],
                     forbidden: np.ndarray, ntotal: int, dedup: float, exclude_threshold: float,
                     cells: Optional[Callable[..., np.ndarray]] = None, links: Links = None,
                  near: Near = None, query_rows: int = 0) -> Selection:
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
    excluded, dups = apply_rules(candidates, vectors_of, forbidden, dedup, exclude_threshold, cells, links, near,
                                 query_rows)
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
            dropped.append((j, REASONS.get(int(excluded[j]), "near-duplicate")))
        else:
            state[j] = 1
            state[dups[j][state[dups[j]] == 0]] = 2
            picked.append(j)
    return picked, dropped


def select_random(query_vecs: np.ndarray, owner: np.ndarray, budget: int, seed: int,
                  vectors_of: Callable[[np.ndarray], np.ndarray], forbidden: np.ndarray, ntotal: int,
                  dedup: float, exclude_threshold: float,
                  cells: Optional[Callable[..., np.ndarray]] = None, links: Links = None,
                  near: Near = None, query_rows: int = 0) -> Selection:
    """A seeded uniform draw of ``budget`` pool items (fewer only if the pool runs out)."""
    faiss = import_faiss()
    order = np.random.default_rng(seed).permutation(ntotal)
    n = min(ntotal, 2 * budget + 64)
    while True:
        candidates = np.sort(order[:n])
        excluded, dups = apply_rules(candidates, vectors_of, forbidden, dedup, exclude_threshold, cells, links, near,
                                     query_rows)
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
    return {"excluded": reasons.count("contamination") + reasons.count("query"),
            "deduped": reasons.count("near-duplicate")}


def _selection(taken, quotas: np.ndarray, counts: dict, dry: list[int], depth: int) -> Selection:
    """``taken``: (id, query, rank, score) per take, as rows or as four columns already."""
    arr = taken if isinstance(taken, tuple) else (list(zip(*taken)) if taken else [[], [], [], []])
    counts = dict(counts)
    dropped = counts.pop("dropped", [])
    counts = dict(counts, emitted=len(arr[0]), search_depth=int(depth))
    return Selection(np.asarray(arr[0], np.int64), np.asarray(arr[1], np.int64), np.asarray(arr[2], np.int64),
                     np.asarray(arr[3], np.float32), quotas, counts, dry, dropped)
