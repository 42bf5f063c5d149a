"""Web-scale pools: precomputed embeddings, out-of-core indexes, appends and generation switches."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers import READ, REPO, Server, opts, write_embeddings
from curator.errors import CuratorError
from curator.curate import curate
from curator.formats import CurateParams
from curator.queries import Query
from curator.retrieval import PoolIndex
from index_builder import build_index
from index_builder.ondisk import peak_tree_rss

sys.path.insert(0, str(REPO / "benchmarks"))
from synthetic import ClusteredVectors  # noqa: E402


def test_clip_retrieval_embeddings_are_indexed_without_images(tmp_path, tiny_clip_spec):
    src = write_embeddings(tmp_path / "laion", [3000, 2000])
    np.save(src / "img_emb" / "img_emb_1.npy", 3 * np.load(src / "img_emb" / "img_emb_1.npy").astype(np.float32))
    report = build_index([str(src)], tmp_path / "idx", opts(tiny_clip_spec), embeddings=True)
    assert report.items == 5000 and report.skipped == 0
    pool = PoolIndex.open(tmp_path / "idx")
    assert pool.manifest.source_kind == "embeddings"
    assert (tmp_path / "idx" / "shards" / "00000.npy").is_symlink()        # float16 unit vectors: linked
    assert not (tmp_path / "idx" / "shards" / "00001.npy").is_symlink()    # float32, not unit: normalised copy
    assert np.allclose(np.linalg.norm(pool.vectors(np.array([4000])), axis=1), 1, atol=1e-2)
    _, ids = pool.search(pool.vectors(np.array([3100])), 5)
    assert ids[0][0] == 3100
    row = pool.items.slice(3100, 1).to_pylist()[0]
    assert row["source"] == "https://example.com/x/1/100.jpg" and row["caption"] == "x 1 100"
    with pytest.raises(CuratorError, match="not stored here"):
        pool.fetch(3100)
    queries = [Query(f"q{i}", b"") for i in range(2)]
    m = curate(pool, queries, CurateParams(per_query=5), tmp_path / "sets", query_vectors=pool.vectors(np.array([1, 2])))
    assert m.url_list == "urls.parquet" and not m.shardlist and m.counts.emitted == 10  # URLs, for img2dataset


def test_embeddings_of_the_wrong_dimension_name_the_encoder_flag(tmp_path, tiny_clip_spec):
    src = write_embeddings(tmp_path / "laion", [500], d=16)
    with pytest.raises(CuratorError, match="--encoder"):
        build_index([str(src)], tmp_path / "idx", opts(tiny_clip_spec), embeddings=True)
    with pytest.raises(CuratorError, match="img_emb"):
        build_index([str(tmp_path)], tmp_path / "idx2", opts(tiny_clip_spec), embeddings=True)


def test_embeddings_from_an_fsspec_url_are_downloaded_and_indexed_the_same(tmp_path, tiny_clip_spec):
    """A non-local filesystem (fsspec's in-memory one here; s3://, gs://, hf:// where their drivers are
    installed): the npy files are downloaded into shards/, not linked, and the index is the local one's."""
    import fsspec

    src = write_embeddings(tmp_path / "laion", [1500, 1000])
    np.save(src / "img_emb" / "img_emb_1.npy", 3 * np.load(src / "img_emb" / "img_emb_1.npy").astype(np.float32))
    mem = fsspec.filesystem("memory")
    for f in sorted(src.rglob("*.*")):
        mem.pipe(f"/laion-url/{f.relative_to(src)}", f.read_bytes())
    local = build_index([str(src)], tmp_path / "local", opts(tiny_clip_spec), embeddings=True)
    remote = build_index(["memory://laion-url"], tmp_path / "remote", opts(tiny_clip_spec), embeddings=True)
    assert remote.items == local.items == 2500
    assert not (tmp_path / "remote" / "shards" / "00000.npy").is_symlink()  # downloaded, then kept as it is
    assert not list((tmp_path / "remote" / "shards").glob(".*download"))
    a, b = PoolIndex.open(tmp_path / "local"), PoolIndex.open(tmp_path / "remote")
    ids = np.arange(0, 2500, 97)
    assert np.array_equal(a.vectors(ids), b.vectors(ids)) and a.items.equals(b.items)
    with pytest.raises(CuratorError, match="--embeddings nosuchscheme://"):
        build_index(["nosuchscheme://bucket/x"], tmp_path / "bad", opts(tiny_clip_spec), embeddings=True)
    assert not (tmp_path / "bad").exists()


def test_item_cells_match_the_quantizer_and_find_the_same_near_duplicates(tmp_path, tiny_clip_spec, monkeypatch):
    """Cells from the list an item is stored in and that list's neighbours, not a search against every
    centroid: the same nearest cell, nearly always the same second, and the same near-duplicate pairs."""
    from curator import dedup

    src = write_embeddings(tmp_path / "emb", [20000], d=32)
    x = np.load(src / "img_emb" / "img_emb_0.npy").astype(np.float32)
    x[15000:15200] = x[:200] + 0.01 * np.random.default_rng(1).standard_normal((200, 32)).astype(np.float32)
    np.save(src / "img_emb" / "img_emb_0.npy", (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
    build_index([str(src)], tmp_path / "idx", opts(tiny_clip_spec, index_factory="IVF128,Flat"), embeddings=True)
    pool = PoolIndex.open(tmp_path / "idx")
    ids = np.arange(0, 20000, 3)
    vecs = pool.vectors(ids)
    by_search, by_list = pool.cells(vecs, 2), pool.cells(vecs, 2, ids)
    assert np.array_equal(by_search[:, 0], by_list[:, 0])
    assert np.mean((np.sort(by_search, axis=1) == np.sort(by_list, axis=1)).all(axis=1)) > 0.98
    monkeypatch.setattr(dedup, "EXACT_DEDUP_MAX", 0)
    ids = np.r_[np.arange(0, 200), np.arange(15000, 15200), np.arange(5000, 8000)]
    vecs = pool.vectors(ids)
    pairs = dedup.near_duplicate_pairs(vecs, 0.95, pool.cells, ids)
    exact = dedup.near_duplicate_pairs(vecs, 0.95, lambda v, n, _ids=None: pool.cells(v, n))
    assert sum(len(p) for p in pairs) >= 400 and all(set(a) == set(b) for a, b in zip(pairs, exact))


def test_on_disk_index_returns_the_in_memory_neighbours(tmp_path, tiny_clip_spec):
    src = write_embeddings(tmp_path / "emb", [12000, 8000])
    # the budget counts this (pytest) process, which earlier tests leave near 2 GB: room to spare, as the
    # layouts, not the budget, are what is compared (test_peak_memory_... checks a budget, in its own process)
    common = dict(index_factory="IVF64,Flat", index_workers=2, max_build_memory="6G")
    build_index([str(src)], tmp_path / "mem", opts(tiny_clip_spec, layout="memory", **common), embeddings=True)
    report = build_index([str(src)], tmp_path / "disk", opts(tiny_clip_spec, layout="on-disk", **common),
                         embeddings=True)
    assert report.layout == "on-disk"
    mem, disk = PoolIndex.open(tmp_path / "mem"), PoolIndex.open(tmp_path / "disk")
    assert disk.manifest.lists_file and (tmp_path / "disk" / disk.manifest.lists_file).exists()
    queries = ClusteredVectors(d=32, clusters=256, seed=7).sample(100, seed=999)
    s1, i1 = mem.search(queries, 10)
    s2, i2 = disk.search(queries, 10)
    assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-5)
    moved = tmp_path / "moved"
    (tmp_path / "disk").rename(moved)  # the lists are found beside the index wherever the folder goes
    assert (PoolIndex.open(moved).search(queries, 10)[1] == i1).all()


def test_a_build_killed_while_filling_keeps_the_parts_it_finished(tmp_path, tiny_clip_spec, monkeypatch):
    """At a billion vectors the fill is hours: a killed build run again fills only the parts it had not
    finished (with the part size it chose first, whatever this run would choose) and ends with the index
    an uninterrupted build makes."""
    from index_builder import ondisk, runners

    src = write_embeddings(tmp_path / "emb", [6000])
    cfg = opts(tiny_clip_spec, layout="on-disk", index_factory="IVF32,Flat", index_workers=1)
    monkeypatch.setattr(ondisk, "plan_fill", lambda *a: ondisk.FillPlan(1, 2500, 1024))
    build_index([str(src)], tmp_path / "ref", cfg, embeddings=True)
    real, filled = runners.fill_part, []

    def killed_at_the_second_part(*args, **kw):
        if filled:
            raise KeyboardInterrupt  # as a SIGINT would, between parts
        filled.append(Path(args[2]).name)
        return real(*args, **kw)
    monkeypatch.setattr(runners, "fill_part", killed_at_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        build_index([str(src)], tmp_path / "idx", cfg, embeddings=True)
    assert filled == ["part-00000.faiss"] and not (tmp_path / "idx" / "index.json").exists()
    monkeypatch.setattr(ondisk, "plan_fill", lambda *a: ondisk.FillPlan(1, 4000, 1024))  # another machine's plan
    monkeypatch.setattr(runners, "fill_part", lambda *a, **kw: filled.append(Path(a[2]).name) or real(*a, **kw))
    build_index([str(src)], tmp_path / "idx", cfg, embeddings=True)
    assert filled == ["part-00000.faiss", "part-00001.faiss", "part-00002.faiss"]
    ref, resumed = PoolIndex.open(tmp_path / "ref"), PoolIndex.open(tmp_path / "idx")
    queries = ClusteredVectors(d=32, clusters=256, seed=7).sample(50, seed=5)
    assert resumed.manifest.nprobe == ref.manifest.nprobe and resumed.ntotal == ref.ntotal == 6000
    assert (resumed.search(queries, 10)[1] == ref.search(queries, 10)[1]).all()


@pytest.mark.network_local
def test_append_adds_a_generation_that_a_running_service_switches_to(tmp_path, tiny_clip_spec):
    base = write_embeddings(tmp_path / "a", [6000], name="a")
    more = write_embeddings(tmp_path / "b", [1500], seed=5, name="b")
    cfg = dict(layout="on-disk", index_factory="IVF32,Flat")
    build_index([str(base)], tmp_path / "idx", opts(tiny_clip_spec, **cfg), embeddings=True)
    server = Server(tmp_path / "idx", tmp_path / "state").start()
    auth = {"Authorization": f"Bearer {READ}"}
    failures, done = [], threading.Event()

    def hammer():
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
            while not done.is_set():
                r = client.get("/search", params={"item_id": 10, "k": 5})
                if r.status_code != 200:
                    failures.append(r.text)
    try:
        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for t in threads:
            t.start()
        assert httpx.get(f"{server.url}/search", params={"item_id": 6100}, headers=auth).status_code == 404
        report = build_index([str(more)], tmp_path / "idx", opts(tiny_clip_spec, append=True, **cfg), embeddings=True)
        assert report.appended == 1500 and report.items == 7500 and report.generation == 1
        assert report.recall_at_10 >= 0.9
        deadline = time.time() + 10
        while time.time() < deadline:  # the service re-reads index.json within a second
            r = httpx.get(f"{server.url}/search", params={"item_id": 6100, "k": 3}, headers=auth)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert len(r.json()["hits"]) == 3
        assert httpx.get(f"{server.url}/healthz").json()["index_items"] == 7500
        done.set()
        for t in threads:
            t.join()
        assert not failures, failures[:3]
    finally:
        done.set()
        server.stop()
    pool = PoolIndex.open(tmp_path / "idx")
    assert pool.generation == 1 and pool.ntotal == 7500
    assert sorted(p.name for p in (tmp_path / "idx").glob("gen-*")) == ["gen-00000", "gen-00001"]
    again = build_index([str(more)], tmp_path / "idx", opts(tiny_clip_spec, append=True, **cfg), embeddings=True)
    assert again.generation == 1 and again.items == 7500  # the same append, re-run: resumed, nothing redone
    with pytest.raises(CuratorError, match="already in the index"):
        build_index([str(base)], tmp_path / "idx", opts(tiny_clip_spec, append=True, **cfg), embeddings=True)


def test_append_needs_an_index_and_not_overwrite(tmp_path, tiny_clip_spec):
    src = write_embeddings(tmp_path / "a", [100])
    with pytest.raises(CuratorError, match="holds no index"):
        build_index([str(src)], tmp_path / "idx", opts(tiny_clip_spec, append=True), embeddings=True)
    assert not (tmp_path / "idx").exists()
    with pytest.raises(CuratorError, match="--overwrite"):
        build_index([str(src)], tmp_path / "idx", opts(tiny_clip_spec, append=True, overwrite=True), embeddings=True)


@pytest.mark.slow
def test_peak_memory_stays_under_max_build_memory(tmp_path, tiny_clip_spec):
    """1M vectors whose index (~140 MB) and read buffers would not fit a 700 MB budget beside this
    process (~440 MB with torch and the encoder): built out of core, all processes together stay under it."""
    src = write_embeddings(tmp_path / "big", [500_000] * 2)
    budget = 700 << 20
    cmd = [sys.executable, "-m", "curator.cli", "build-index", "--embeddings", str(src), "--out", str(tmp_path / "idx"),
           "--encoder", tiny_clip_spec, "--max-build-memory", str(budget), "--index-workers", "2", "--recall-queries",
           "200", "--keep-duplicates", "--dedup-links", "off", "--quiet"]  # the index build's own memory
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    peak = peak_tree_rss(proc)
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    pool = PoolIndex.open(tmp_path / "idx")
    assert pool.manifest.layout == "on-disk" and pool.ntotal == 1_000_000
    assert pool.manifest.recall_at_10 >= 0.9
    assert 0 < peak < budget, f"peak {peak:,} over --max-build-memory {budget:,}"


def test_published_vectors_index_with_their_encoders_config_and_no_weights(tmp_path, monkeypatch):
    """LAION's ViT-L/14 vectors on a CPU box with no hub access: the index records the encoder's spec and
    preprocessing from its config; its weights are never loaded (offline, they could not be)."""
    from curator.encoders import registry

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(registry._FACTORIES, "open_clip", lambda *a, **kw: pytest.fail("the model was loaded"))
    src = write_embeddings(tmp_path / "laion", [300], d=768)
    report = build_index([str(src)], tmp_path / "idx", opts("open_clip:ViT-L-14/openai"), embeddings=True)
    assert report.items == 300
    manifest = PoolIndex.open(tmp_path / "idx").manifest
    assert manifest.encoder.dim == 768 and manifest.encoder.preprocess["mean"][0] == pytest.approx(0.4815, abs=1e-4)
    with pytest.raises(CuratorError, match="768"):  # vectors of another width are refused, naming both
        build_index([str(write_embeddings(tmp_path / "b", [50], d=32))], tmp_path / "idx2",
                    opts("open_clip:ViT-L-14/openai"), embeddings=True)


def test_append_works_on_the_flat_index_a_small_pool_gets(tmp_path, tiny_clip_spec):
    base = write_embeddings(tmp_path / "a", [300], name="a")
    more = write_embeddings(tmp_path / "b", [100], seed=5, name="b")
    build_index([str(base)], tmp_path / "idx", opts(tiny_clip_spec), embeddings=True)
    assert PoolIndex.open(tmp_path / "idx").manifest.index_factory.startswith("Flat")
    report = build_index([str(more)], tmp_path / "idx", opts(tiny_clip_spec, append=True), embeddings=True)
    pool = PoolIndex.open(tmp_path / "idx")
    assert report.appended == 100 and pool.ntotal == 400
    _, ids = pool.search(pool.vectors(np.array([350])), 1)
    assert ids[0][0] == 350 and pool.items.slice(350, 1).to_pylist()[0]["source"].startswith("https://example.com/b/")
