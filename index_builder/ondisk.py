"""Fill an IVF index that never has to fit in RAM.

The recipe is faiss's own (contrib/ondisk.py): train the quantizer and codec once, on a
sample; fill *parts*, each an empty copy of the trained index given a slice of the pool;
merge the parts' inverted lists into one ``OnDiskInvertedLists`` file. Search then maps
that file, so a process touches only the lists it probes. Here each step is one function,
parts are sized from ``--max-build-memory``, and they run in parallel (processes or Ray).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curator import atomic
from curator.errors import CuratorError
from curator.faiss_support import import_faiss, native_stdout_to_stderr
from curator.retrieval import read_faiss_index

log = logging.getLogger(__name__)

#: Private memory of one fill process before it holds any codes: python, numpy, faiss and curator's
#: formats measure 35 MB of RssAnon (their libraries are shared, file-backed pages); twice that here.
WORKER_BASE_BYTES = 64 << 20
LISTS_NAME = "lists.ivfdata"


@dataclass
class Part:
    """A slice of the pool for one fill process: rows of shard ``.npy`` files, ids from ``first_id``."""
    pieces: list[tuple[str, np.ndarray]]
    first_id: int
    n: int


@dataclass
class FillPlan:
    workers: int
    part_rows: int
    chunk_rows: int


def chunk_rows_for(budget: int, d: int) -> int:
    """Rows read at a time: 1/32 of the budget as float32, within 4k..200k."""
    return int(min(200_000, max(4096, budget // 32 // (4 * d))))


def plan_fill(n: int, d: int, code_bytes: int, budget: int, workers: int, used: int) -> FillPlan:
    """Processes and part size so that ``used`` (this process) plus every fill process stays
    within ``budget``; fewer processes rather than parts too small to be worth a process."""
    chunk = chunk_rows_for(budget, d)
    fixed = WORKER_BASE_BYTES + 3 * chunk * 4 * d          # the chunk, its float32 copy, faiss's buffers
    free = budget - used
    if free < fixed + (64 << 20):
        raise CuratorError(f"--max-build-memory {budget:,} bytes leaves {max(0, free):,} for filling the index after "
                           f"this process's {used:,}; each fill process needs at least {fixed + (64 << 20):,}")
    workers = max(1, min(workers, free // (fixed + (64 << 20)), math.ceil(n / chunk)))
    per_code = 2 * (code_bytes + 8)  # inverted lists grow by doubling: up to twice their contents
    part_rows = int((free / workers - fixed) // per_code)
    part_rows = max(chunk, min(part_rows, math.ceil(n / workers)))
    return FillPlan(int(workers), part_rows, chunk)


def split_parts(files: list[str], rows: list[np.ndarray], part_rows: int, first_id: int = 0) -> list[Part]:
    """Consecutive slices of at most ``part_rows`` kept rows; ids follow file order."""
    parts: list[Part] = []
    pieces: list[tuple[str, np.ndarray]] = []
    start, size = first_id, 0
    for path, kept in zip(files, rows):
        at = 0
        while at < len(kept):
            take = min(part_rows - size, len(kept) - at)
            pieces.append((path, kept[at:at + take]))
            size, at = size + take, at + take
            if size == part_rows:
                parts.append(Part(pieces, start, size))
                pieces, start, size = [], start + size, 0
    if size:
        parts.append(Part(pieces, start, size))
    return parts


def fill_part(trained: str, part: Part, dest: str, chunk_rows: int, threads: int) -> int:
    """Add one part's vectors to a copy of the trained index and save it (a fill process's job)."""
    faiss = import_faiss()
    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.read_index(trained)
    next_id = part.first_id
    for path, rows in part.pieces:
        mapped = np.load(path, mmap_mode="r")
        for s in range(0, len(rows), chunk_rows):
            sel = rows[s:s + chunk_rows]
            block = mapped[sel[0]:sel[-1] + 1] if sel[-1] - sel[0] + 1 == len(sel) else mapped[sel]
            x = np.ascontiguousarray(block, dtype=np.float32)
            index.add_with_ids(x, np.arange(next_id, next_id + len(x), dtype=np.int64))
            next_id += len(x)
    atomic.write_with(dest, lambda p: faiss.write_index(index, str(p)))
    return next_id - part.first_id


def merge_parts(trained: str, parts: list[str], dest: Path, base: tuple[str, str] | None = None) -> int:
    """Merge the parts' lists (after those of ``base``, an existing index as (path, layout)) into
    ``dest/lists.ivfdata`` and write ``dest/index.faiss`` referring to it. Everything is mapped, not
    loaded. Returns ntotal."""
    faiss = import_faiss()
    index = faiss.read_index(trained)
    ivf = faiss.extract_index_ivf(index)
    sources = [faiss.read_index(p, faiss.IO_FLAG_MMAP) for p in parts]
    if base:
        sources.insert(0, read_faiss_index(base[0], base[1]))
    (dest / LISTS_NAME).unlink(missing_ok=True)  # half-merged by a killed run: merged again from the parts
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(dest / LISTS_NAME))
    pointers = faiss.InvertedListsPtrVector()
    for src in sources:
        pointers.push_back(faiss.extract_index_ivf(src).invlists)
    with native_stdout_to_stderr():
        ntotal = int(lists.merge_from_multiple(pointers.data(), pointers.size(), False, False))
    ivf.replace_invlists(lists, True)
    lists.this.disown()
    ivf.ntotal = index.ntotal = ntotal
    atomic.write_with(dest / "index.faiss", lambda p: faiss.write_index(index, str(p)))
    del sources
    return ntotal


def rss_bytes(pid: int | None = None) -> int:
    """Private resident memory of a process (RssAnon: what the budget bounds; mapped pool files are
    page cache the kernel can drop, so they do not count)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """RssAnon of ``pid`` and all its descendants: what a build with fill processes really holds
    (how the tests and benchmarks check --max-build-memory from outside)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss_bytes(p)
        stack.extend(children.get(p, []))
    return total


def peak_tree_rss(proc, interval: float = 0.05) -> int:
    """Sample :func:`tree_rss_bytes` of a running ``subprocess.Popen`` until it exits; the peak seen."""
    import time

    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(interval)
    return peak
