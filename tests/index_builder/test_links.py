"""Near-duplicate links found at build time (``--dedup-links``): the same selection as searching for
them at curation time (contamination then found from the forbidden vectors' side, ``PoolIndex.near``),
a build that resumes, and curations below the links' threshold that search."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from curator.curate import select_items
from curator.formats import CurateParams
from curator.retrieval import PoolIndex
from index_builder import build_index
from index_builder import dedup_links as links_mod

from helpers import opts, write_embeddings


@pytest.fixture
def pool_dir(tmp_path, tiny_clip_spec):
    """20,000 clustered 32-d items with 200 planted near-duplicates, in 32 IVF cells (so cells of over
    1,024 items are split into sub-cells at build time)."""
    src = write_embeddings(tmp_path / "emb", [20000], d=32)
    x = np.load(src / "img_emb" / "img_emb_0.npy").astype(np.float32)
    x[15000:15200] = x[:200] + 0.01 * np.random.default_rng(1).standard_normal((200, 32)).astype(np.float32)
    np.save(src / "img_emb" / "img_emb_0.npy", (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
    build_index([str(src)], tmp_path / "idx", opts(tiny_clip_spec, index_factory="IVF32,Flat"), embeddings=True)
    return tmp_path / "idx", src


def _select(pool: PoolIndex, dedup: float, *, use_links: bool):
    queries = pool.vectors(np.arange(0, 2000, 50))
    if not use_links:
        pool.links = lambda candidates, threshold: None
    params = CurateParams(per_query=200, dedup=dedup)
    return select_items(pool, queries, np.arange(len(queries)), [None] * len(queries), queries, params, {})


def test_links_give_the_selection_that_searching_gives(pool_dir, tiny_clip_spec, monkeypatch):
    monkeypatch.setattr(links_mod, "EXACT_DEDUP_MAX", 0)  # the cell path, as on a large pool
    monkeypatch.setattr(links_mod, "PART_CELLS", 8)
    idx, src = pool_dir
    build_index([str(src)], idx, opts(tiny_clip_spec, index_factory="IVF32,Flat", dedup_links=0.95), embeddings=True)
    info = PoolIndex.open(idx).manifest.links
    assert info is not None and info.threshold == 0.95 and info.links >= 400 and info.recall > 0.99
    assert not list(idx.glob("gen-*/links-*.parts"))
    with_links, searched = _select(PoolIndex.open(idx), 0.95, use_links=True), _select(PoolIndex.open(idx), 0.95,
                                                                                       use_links=False)
    assert with_links.counts["deduped"] > 0
    assert with_links.counts["excluded"] >= 40 + 4  # each query's own item, and the planted copies of 4 of them
    assert np.array_equal(with_links.ids, searched.ids) and with_links.dropped == searched.dropped
    pool = PoolIndex.open(idx)
    candidates = np.arange(0, 20000, 7)
    assert pool.links(candidates, 0.9) is None  # below the links' threshold: they would miss pairs
    strict = pool.links(candidates, 0.999)
    assert sum(len(r) for r in strict) < sum(len(r) for r in pool.links(candidates, 0.95))


def test_contamination_from_approximate_codes_is_checked_exactly(pool_dir, tiny_clip_spec, tmp_path):
    """On SQ8 codes the forbidden side's range search is approximate: hits near the threshold are checked
    on the stored vectors, so the selection is the searched one."""
    _, src = pool_dir
    idx = tmp_path / "sq8"
    build_index([str(src)], idx, opts(tiny_clip_spec, index_factory="IVF32,SQ8", dedup_links=0.95), embeddings=True)
    with_links, searched = _select(PoolIndex.open(idx), 0.95, use_links=True), _select(PoolIndex.open(idx), 0.95,
                                                                                       use_links=False)
    assert with_links.counts["excluded"] >= 44
    assert np.array_equal(with_links.ids, searched.ids) and with_links.dropped == searched.dropped


def test_a_killed_links_pass_resumes_from_its_saved_parts(pool_dir, tiny_clip_spec, monkeypatch):
    monkeypatch.setattr(links_mod, "EXACT_DEDUP_MAX", 0)
    monkeypatch.setattr(links_mod, "PART_CELLS", 8)
    idx, src = pool_dir
    real, calls, killed = links_mod._pairs, [], []

    def dies_in_part_two(pool, group, threshold):
        calls.append(1)
        if len(calls) == 12 and not killed:
            killed.append(1)
            raise KeyboardInterrupt
        return real(pool, group, threshold)

    monkeypatch.setattr(links_mod, "_pairs", dies_in_part_two)
    with pytest.raises(KeyboardInterrupt):
        links_mod.build_links(idx, 0.95, progress=False)
    assert PoolIndex.open(idx).manifest.links is None
    assert len(list(idx.glob("gen-*/links-0.95.parts/part-*.npz"))) == 1
    calls.clear()
    links_mod.build_links(idx, 0.95, progress=False)
    assert len(calls) == 32 - 8  # the saved part's cells were not compared again
    assert PoolIndex.open(idx).manifest.links.links >= 400


def test_a_bad_dedup_links_value_names_the_flag(tmp_path):
    run = subprocess.run([sys.executable, "-m", "curator.cli", "build-index", "--embeddings", str(tmp_path),
                          "--out", str(tmp_path / "idx"), "--dedup-links", "1.5"], capture_output=True, text=True)
    assert run.returncode == 2 and "--dedup-links: '1.5': use auto, off, or a cosine between 0 and 1" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "idx").exists()


def test_links_found_by_worker_processes_are_the_same(pool_dir, tiny_clip_spec, monkeypatch):
    """Parts found in 2 spawned processes: the same table as one process finds."""
    monkeypatch.setattr(links_mod, "EXACT_DEDUP_MAX", 0)
    monkeypatch.setattr(links_mod, "PART_CELLS", 8)
    idx, _ = pool_dir
    tables = []
    for workers in (1, 2):
        links_mod.build_links(idx, 0.95 if workers == 1 else 0.96, workers=workers, progress=False)
        pool = PoolIndex.open(idx)
        tables.append(pool.links(np.arange(20000), 0.96))
    assert [list(r) for r in tables[0]] == [list(r) for r in tables[1]] and sum(len(r) for r in tables[1]) >= 400
