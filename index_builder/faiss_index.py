"""Choose, train, fill and tune the FAISS index for a pool of unit embeddings.

The choice is made by memory first (the codec that fits ``--max-index-memory``), then
``nprobe`` is raised until recall@10 against exact search reaches ``--target-recall`` on
held-out pool vectors. Unlike autofaiss, the knob is recall, not latency, and the
coarse quantizer is sized so that k-means training stays minutes, not hours, on CPU.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from curator.errors import CuratorError, DeviceUnavailableError
from curator.faiss_support import import_faiss
from curator.formats import parse_bytes  # noqa: F401  (re-exported for benchmarks)

log = logging.getLogger(__name__)

#: Pools up to this size get exact search: it is fast enough and needs no training.
FLAT_MAX_ITEMS = 50_000
#: Training points per IVF centroid (faiss warns below 39).
TRAIN_POINTS_PER_CENTROID = 40
NPROBE_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)
#: IVF lists from which the coarse quantizer is an HNSW graph rather than exhaustive.
HNSW_COARSE_FROM = 8192
#: Bytes per stored vector beyond its code: the 8-byte id in the inverted list.
ID_BYTES = 8

VectorSource = Callable[[], Iterator[np.ndarray]]


@dataclass
class IndexChoice:
    factory: str
    nlist: int
    bytes_estimate: int


def choose_index(n: int, d: int, max_bytes: int) -> IndexChoice:
    """The most faithful index for ``n`` vectors of dim ``d`` that fits ``max_bytes``.

    Codecs, best first: exact floats (4d B/vector), 8-bit scalar quantisation (d B), then
    product quantisation at d/4, d/8, d/16 bytes. IVF lists are ~2*sqrt(n) centroids,
    rounded to a power of two: on 1M x 512 this trained and filled in 60 s on 2 cores,
    against 13 s for sqrt(n) and 89 s for 4*sqrt(n), while searching 3.5x faster than
    sqrt(n) at recall@10 0.95 (docs/benchmarks.md). Past 65k lists an HNSW coarse quantizer
    keeps centroid search from dominating.
    """
    if n <= FLAT_MAX_ITEMS:
        need = 4 * d * n
        if need <= max_bytes:
            return IndexChoice("Flat", 0, need)
    nlist = 2 ** round(math.log2(max(16.0, 2 * math.sqrt(n))))
    nlist = max(16, min(nlist, 1 << 18, 2 ** int(math.log2(max(16, n // TRAIN_POINTS_PER_CENTROID)))))
    hnsw = nlist >= HNSW_COARSE_FROM
    coarse = f"IVF{nlist}_HNSW32" if hnsw else f"IVF{nlist}"
    overhead = 4 * d * nlist * (2 if hnsw else 1)
    codecs = [("Flat", 4 * d), ("SQ8", d)] + [(f"PQ{m}", m) for m in (d // 4, d // 8, d // 16) if m >= 4 and d % m == 0]
    for codec, code_bytes in codecs:
        need = n * (code_bytes + ID_BYTES) + overhead
        if need <= max_bytes:
            return IndexChoice(f"{coarse},{codec}", nlist, need)
    smallest = n * (codecs[-1][1] + ID_BYTES) + overhead
    raise CuratorError(f"no index of {n:,} x {d} vectors fits --max-index-memory {max_bytes:,} bytes; "
                       f"the smallest ({coarse},{codecs[-1][0]}) needs about {smallest:,}")


def new_index(factory: str, d: int, device: str):
    faiss = import_faiss()

    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise CuratorError(f"faiss cannot build index_factory({d}, {factory!r}): {str(exc).splitlines()[-1]}") from None
    if device.startswith("cuda"):
        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
            raise DeviceUnavailableError(
                "--device cuda for the index needs faiss with GPU support and a visible GPU "
                "(pip install 'curator[gpu]' on a CUDA 12 host); use --device cpu otherwise")
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:  # k-means on the GPU is where the time goes; the index stays CPU
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(d))
    return index


def train_size_for(index, n: int) -> int:
    """Training points: 40 per IVF list, at least 10k (PQ's 256-centroid k-means), at most n."""
    faiss = import_faiss()

    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    lists = ivf.nlist if ivf is not None else 0
    return min(n, max(TRAIN_POINTS_PER_CENTROID * lists, 10_000))


def train_index(index, train: np.ndarray):
    """Train the quantizer and codec on ``train`` (a sample of the pool); a no-op if already trained."""
    if not index.is_trained:
        log.info("training on %d vectors", len(train))
        ivf_lists = getattr(_ivf(index), "nlist", 0)
        if len(train) < ivf_lists:
            raise CuratorError(f"{len(train)} vectors cannot train {ivf_lists} IVF lists; use fewer lists "
                               f"(or let curator choose the index)")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    return index


def add_chunks(index, chunks: VectorSource, progress: Optional[Callable[[int], None]] = None):
    """Add every chunk in order (ids are the running row count)."""
    for chunk in chunks():
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
        if progress:
            progress(len(chunk))
    return index


def fill_index(index, train: np.ndarray, chunks: VectorSource,
               progress: Optional[Callable[[int], None]] = None):
    """Train on ``train`` then add every chunk."""
    return add_chunks(train_index(index, train), chunks, progress)


def _ivf(index):
    faiss = import_faiss()

    return faiss.try_extract_index_ivf(index)


def exact_knn(queries: np.ndarray, chunks: VectorSource, k: int) -> np.ndarray:
    """Exact top-k ids by inner product, streaming over chunks (memory stays one chunk)."""
    faiss = import_faiss()

    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    base = 0
    q = np.ascontiguousarray(queries, dtype=np.float32)
    for chunk in chunks():
        dist, ids = faiss.knn(q, np.ascontiguousarray(chunk, dtype=np.float32), min(k, len(chunk)),
                              metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(dist, np.where(ids >= 0, ids + base, -1))
        base += len(chunk)
    heap.finalize()
    return heap.I


def recall_at(approx: np.ndarray, exact: np.ndarray, self_ids: np.ndarray, k: int = 10) -> float:
    """Mean |approx@k ∩ exact@k| / k, with each query's own id removed from both lists."""
    hits = 0
    for a, e, me in zip(approx, exact, self_ids):
        a = [i for i in a if i != me and i >= 0][:k]
        e = [i for i in e if i != me and i >= 0][:k]
        hits += len(set(a) & set(e)) / max(1, len(e))
    return hits / max(1, len(approx))


def tune_nprobe(index, queries: np.ndarray, exact: np.ndarray, self_ids: np.ndarray,
                target: float, k: int = 10) -> tuple[Optional[int], float]:
    """Smallest nprobe whose recall@k reaches ``target`` (or the best seen, with a warning)."""
    faiss = import_faiss()

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        got = recall_at(index.search(queries, k + 1)[1], exact, self_ids, k)
        return None, got
    best = (1, -1.0)
    history: list[float] = []
    for nprobe in [p for p in NPROBE_STEPS if p <= ivf.nlist] or [ivf.nlist]:
        ivf.nprobe = nprobe
        t0 = time.perf_counter()
        got = recall_at(index.search(queries, k + 1)[1], exact, self_ids, k)
        log.info("nprobe=%d recall@%d=%.4f (%.1f ms/query)", nprobe, k, got,
                 1000 * (time.perf_counter() - t0) / len(queries))
        if got > best[1] + 1e-9:
            best = (nprobe, got)
        if got >= target:
            return nprobe, got
        history.append(got)
        if len(history) >= 3 and history[-1] - history[-3] < 0.002:
            break  # the codec, not nprobe, caps recall: probing more only costs time
    log.warning("recall@%d target %.3f not reached; best %.4f at nprobe=%d: raise --max-index-memory "
                "for a finer codec", k, target, best[1], best[0])
    ivf.nprobe = best[0]
    return best
