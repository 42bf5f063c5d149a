"""``--dedup-links``: every pool item's near-duplicates, found once after the index is built.

Items are grouped as a curation groups its candidates: each into its 2 nearest IVF cells. Within a
cell, pairs are compared by dense products; a cell is first split into small sub-cells (each item
in its 3 nearest), because at build time every cell is full (~5,000 items at 20M over 8,192
lists) and comparing whole cells would cost an hour of 2 cores. The work goes in parts of cells,
each saved when done, so a killed build resumes; the parts are merged into one CSR table
(``curator.link_table``) recorded in ``index.json`` last. The share of pairs the sub-cells keep against
comparing whole cells is measured on a sample and recorded (``LinksInfo.recall``).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from curator import atomic
from curator.errors import CuratorError
from curator.formats import INDEX_MANIFEST_NAME, IndexManifest, load_doc, save_doc
from curator.link_table import write_links
from curator.processes import spawn_pool
from curator.progress import progress_bar
from curator.retrieval import PoolIndex
from curator.dedup import CELL_BLOCK, EXACT_DEDUP_MAX, cell_groups, cell_pairs, close_pairs, coarse_cells

log = logging.getLogger(__name__)
#: Sub-cells at build time: cells over SPLIT_ABOVE items are split into sub-cells of about SIZE, each
#: item in its PROBE nearest. The cost is ~ items x PROBE^2 x SIZE against items x cell size whole.
SPLIT_ABOVE, SIZE, PROBE = 1024, 128, 3
#: Cells per saved part: a killed build loses at most one part's work.
PART_CELLS = 128
#: Cells whose pairs are also found by comparing them whole, to measure what the sub-cells keep.
RECALL_CELLS = 32


def build_links(out: Path, threshold: float, *, workers: int = 1, progress: bool = True) -> IndexManifest:
    """Find the current generation's near-duplicate links at ``threshold`` (kept when already there)."""
    manifest = load_doc(out / INDEX_MANIFEST_NAME, IndexManifest)
    if manifest.links is not None and manifest.links.threshold == threshold:
        return manifest
    t0 = time.perf_counter()
    pool = PoolIndex.open(out)
    gdir = out / Path(manifest.index_file).parent
    if pool.ntotal <= EXACT_DEDUP_MAX:
        i, j, cos = close_pairs(pool.vectors(np.arange(pool.ntotal)), threshold)
        recall = 1.0
    else:
        groups = cell_groups(_assign(pool, progress))
        parts = gdir / f"links-{threshold:g}.parts"
        i, j, cos = _merge(_parts(out, groups, threshold, parts, workers, progress))
        recall = _recall(pool, groups, threshold, i, j)
    info = write_links(gdir, out, pool.ntotal, i, j, cos, threshold, time.perf_counter() - t0)
    if load_doc(out / INDEX_MANIFEST_NAME, IndexManifest).generation != manifest.generation:
        raise CuratorError(f"{out}: a new index generation was switched in while its links were found; run the "
                           f"build again with --dedup-links to find the new generation's")
    manifest = manifest.model_copy(update={"links": info.model_copy(update={"recall": recall})})
    save_doc(out / INDEX_MANIFEST_NAME, manifest)
    if pool.ntotal > EXACT_DEDUP_MAX:
        shutil.rmtree(gdir / f"links-{threshold:g}.parts", ignore_errors=True)
    log.info("near-duplicate links at %g: %d in %.1f s", threshold, info.links, info.seconds)
    return manifest


def _assign(pool: PoolIndex, progress: bool) -> np.ndarray:
    """Every item's 2 nearest coarse cells: the index's own. Items go in the order of the lists they are
    stored in, so each list's items are compared with its neighbouring centroids in one product (in
    id order a list's items come a few at a time, and the products are too small to be fast)."""
    lists = pool.stored_lists()
    order = np.argsort(lists, kind="stable") if lists is not None else np.arange(pool.ntotal)
    assign = np.empty((pool.ntotal, 2), dtype=np.int64)
    with progress_bar(total=pool.ntotal, desc="links: cells", unit="item", enabled=progress) as bar:
        for start in range(0, pool.ntotal, CELL_BLOCK):
            ids = order[start:start + CELL_BLOCK]
            part = pool.cells(pool.vectors(ids), 2, ids)
            if part is None:  # a flat index has no cells: it is small enough to hold, so cluster it whole
                return coarse_cells(pool.vectors(np.arange(pool.ntotal)), None, None)
            assign[ids] = part
            bar.update(len(ids))
    return assign


def _parts(out: Path, groups: list[np.ndarray], threshold: float, parts: Path, workers: int,
           progress: bool) -> list[Path]:
    """Each part's pairs file, found now (in ``workers`` spawned processes) or by an earlier, killed run."""
    parts.mkdir(exist_ok=True)
    paths = [parts / f"part-{p:05d}.npz" for p in range(-(-len(groups) // PART_CELLS))]
    todo = [p for p, path in enumerate(paths) if not path.exists()]
    with progress_bar(total=len(groups), desc="links: pairs", unit="cell", enabled=progress) as bar:
        bar.update(len(groups) - sum(len(_part(groups, p)) for p in todo))
        if workers <= 1:
            for p in todo:
                bar.update(find_part(str(out), _part(groups, p), threshold, str(paths[p])))
            return paths
        with spawn_pool(min(workers, len(todo) or 1)) as pool:
            with _blas_threads(max(1, (os.cpu_count() or 1) // workers)):  # the workers start at the first submit
                futures = [pool.submit(find_part, str(out), _part(groups, p), threshold, str(paths[p])) for p in todo]
            for future in as_completed(futures):
                bar.update(future.result())
    return paths


def _part(groups: list[np.ndarray], p: int) -> list[np.ndarray]:
    return groups[p * PART_CELLS:(p + 1) * PART_CELLS]


@contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    """Threads of each spawned worker's BLAS and OpenMP: read from the environment when they start, so
    two workers on two cores do not run four threads."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(n) for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


_OPEN: dict[str, PoolIndex] = {}


def find_part(root: str, groups: list[np.ndarray], threshold: float, path: str) -> int:
    """One part's pairs, saved atomically (a worker opens the pool once); returns the cells done."""
    if root not in _OPEN:
        _OPEN[root] = PoolIndex.open(root)
    pool = _OPEN[root]
    ids = np.unique(np.concatenate(groups)) if groups else np.empty(0, np.int64)
    vecs = pool.vectors(ids, dtype=np.float16)  # one gather per part: a pool of many small shards is slow per cell
    found = [_pairs(vecs[np.searchsorted(ids, g)], g, threshold) for g in groups if len(g) > 1]
    i, j, cos = (np.concatenate(x) for x in zip(*found)) if found else _empty()
    atomic.write_with(Path(path), lambda tmp: _save(tmp, i, j, cos))
    return len(groups)


def _pairs(x: np.ndarray, group: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of one cell, whose items ``group`` have the vectors ``x``, as pool ids."""
    a, b, cos = cell_pairs(np.asarray(x, dtype=np.float32), threshold, SPLIT_ABOVE, SIZE, PROBE)
    return group[a], group[b], cos


def _save(tmp: Path, i: np.ndarray, j: np.ndarray, cos: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a handle: np.savez would add ".npz" to a path that lacks it
        np.savez(f, i=i, j=j, cos=cos)


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)


def _merge(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    loaded = []
    for path in paths:
        with np.load(path) as z:
            loaded.append((z["i"], z["j"], z["cos"]))
    return tuple(np.concatenate(x) for x in zip(*loaded)) if loaded else _empty()


def _recall(pool: PoolIndex, groups: list[np.ndarray], threshold: float, i: np.ndarray, j: np.ndarray) -> float:
    """In a sample of cells, the share of pairs found by comparing each whole cell (as a curation does)
    that the links hold."""
    rng = np.random.default_rng(0)
    sample = [groups[c] for c in rng.choice(len(groups), min(RECALL_CELLS, len(groups)), replace=False)]
    whole, held = 0, 0
    for g in sample:
        a, b, _ = close_pairs(pool.vectors(g), threshold)
        if not len(a):
            continue
        ours = np.isin(i, g) & np.isin(j, g)
        linked = set(zip(i[ours].tolist(), j[ours].tolist())) | set(zip(j[ours].tolist(), i[ours].tolist()))
        whole += len(a)
        held += sum((x, y) in linked for x, y in zip(g[a].tolist(), g[b].tolist()))
    return 1.0 if not whole else held / whole
