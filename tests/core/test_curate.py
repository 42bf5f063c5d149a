"""The curation engine on a real (tiny-encoder) index: quotas, dedup, exclusion, output format."""
import hashlib
import io
import json
import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import make_image_folder, pattern_image, png_header_only
from curator.cli import main
from curator.curate import curate as curate_set
from curator.errors import CuratorError
from curator.formats import CurateParams, dump_doc
from curator.queries import Query, embed_queries, load_queries
from curator.retrieval import PoolIndex
from index_builder import BuildConfig, build_index


def curate(*args, **kwargs) -> dict:
    """The manifest in its JSON form, as manifest.json holds it."""
    return dump_doc(curate_set(*args, **kwargs))

# real ImageNet features: an untrained model maps these images to nearly one direction
REAL_ENCODER = "packaged:efficientnet-lite0"


@pytest.fixture(scope="module")
def pool_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    make_image_folder(root / "images", 200, classes=4, seed=1)
    # near-duplicates: the same picture with a 2x2 pixel edit (different bytes, cosine ~0.99)
    for i in range(5):
        img = Image.open(root / "images" / "class0" / f"img{4 * i:04d}.png").convert("RGB")
        img.paste((255, 255, 255), (0, 0, 2, 2))
        img.save(root / "images" / "class0" / f"nd{i}.png", compress_level=1)
    out = root / "index"
    build_index([str(root / "images")], out, BuildConfig(encoder=REAL_ENCODER, workers=0, batch_size=64,
                                                          shard_size=64, progress=False))
    return PoolIndex.open(out), root / "images"


def queries_from_seeds(seeds, label=None):
    out = []
    for s in seeds:
        buf = io.BytesIO()
        pattern_image(s).save(buf, format="PNG")
        out.append(Query(f"q{s}.png", buf.getvalue(), label))
    return out


def read_set(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    samples = pq.read_table(folder / "samples.parquet").to_pylist()
    return manifest, samples


def test_balanced_gives_every_query_the_same_number_of_unique_images(pool_index, tmp_path):
    index, _ = pool_index
    queries = queries_from_seeds([500, 501, 502, 503])
    manifest = curate(index, queries, CurateParams(per_query=12), tmp_path, set_id="s1")
    m, samples = read_set(tmp_path / "s1")
    assert m == manifest and m["format"] == "curator.transfer-set/1" and m["__kind__"] == "wids-shard-index-v1"
    assert [q["taken"] for q in m["queries"]] == [12, 12, 12, 12] and m["counts"]["emitted"] == 48
    ids = [s["pool_id"] for s in samples]
    assert len(set(ids)) == 48
    for q in queries:  # each query's picks are in its own ranked order
        sims = [s["similarity"] for s in samples if s["query_id"] == q.id]
        ranks = [s["rank"] for s in samples if s["query_id"] == q.id]
        assert ranks == sorted(ranks) and sims == sorted(sims, reverse=True)
    assert set(m["timings"]) == {"embed", "search", "select", "write"}


def test_shards_hold_the_original_bytes_and_match_the_manifest(pool_index, tmp_path):
    index, _ = pool_index
    curate(index, queries_from_seeds([600, 601]), CurateParams(per_query=15, shard_size=7, materialize="copy"), tmp_path,
           set_id="s")
    m, samples = read_set(tmp_path / "s")
    assert [s["nsamples"] for s in m["shardlist"]] == [7, 7, 7, 7, 2]
    total = 0
    for shard in m["shardlist"]:
        path = tmp_path / "s" / shard["url"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        assert path.stat().st_size == shard["filesize"]
        with tarfile.open(path) as tar:
            names = tar.getnames()
            for name in names:
                if name.endswith(".json"):
                    meta = json.loads(tar.extractfile(name).read())
                    key = name[:-5]
                    image = next(n for n in names if n.startswith(key + ".") and not n.endswith(".json"))
                    data = tar.extractfile(image).read()
                    assert data == index.fetch(meta["pool_id"])  # byte for byte, not re-encoded
                    total += 1
    assert total == len(samples) == 30
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_near_duplicates_collapse_and_excluded_images_never_leak(pool_index, tmp_path):
    index, images = pool_index
    # query = a pool image that has a re-encoded near-duplicate; both must be excluded (contamination)
    query = Query("q.png", (images / "class0" / "img0000.png").read_bytes())
    exclude = load_queries(images / "class1")[:10]
    m = curate(index, [query], CurateParams(per_query=60), tmp_path, exclude=exclude, set_id="x")
    _, samples = read_set(tmp_path / "x")
    keys = {s["pool_key"] for s in samples}
    assert "class0/img0000.png" not in keys and "class0/nd0.png" not in keys
    assert not keys & {f"class1/{q.id}" for q in exclude}
    assert m["counts"]["excluded"] >= 2
    vecs = index.vectors(np.array([s["pool_id"] for s in samples]))
    sims = vecs @ vecs.T - 2 * np.eye(len(vecs))
    assert sims.max() < 0.95  # no near-duplicate pair survived


def test_dedup_counts_collapsed_pairs(pool_index, tmp_path):
    index, _ = pool_index
    # 5 queries x 40 of a 205-image pool walk through nearly all of it, re-encoded pairs included
    qs = queries_from_seeds([1100, 1101, 1102, 1103, 1104])
    off = curate(index, qs, CurateParams(per_query=40, dedup=1.0), tmp_path, set_id="off")
    on = curate(index, qs, CurateParams(per_query=40, dedup=0.95), tmp_path, set_id="on")
    assert off["counts"]["deduped"] == 0 and on["counts"]["deduped"] >= 1


def test_deeper_search_meets_quotas_when_neighbour_lists_overlap(pool_index, tmp_path):
    index, _ = pool_index
    data = queries_from_seeds([700])[0].data
    queries = [Query(f"copy{i}", data) for i in range(8)]  # identical queries: identical lists
    m = curate(index, queries, CurateParams(per_query=10), tmp_path, set_id="deep")
    assert m["counts"]["emitted"] == 80 and m["counts"]["search_depth"] > 2 * 10 + 16
    assert not m["dry_queries"]


def test_queries_run_dry_on_a_small_pool(pool_index, tmp_path):
    index, _ = pool_index
    m = curate(index, queries_from_seeds([800, 801]), CurateParams(per_query=150), tmp_path, set_id="dry")
    assert m["dry_queries"] and m["counts"]["emitted"] < 300
    assert m["counts"]["search_depth"] == index.ntotal


def test_class_balanced_and_threshold(pool_index, tmp_path):
    index, _ = pool_index
    queries = queries_from_seeds([900, 901, 902], "a") + queries_from_seeds([903], "b")
    m = curate(index, queries, CurateParams(strategy="class-balanced", budget=24), tmp_path, set_id="cb")
    taken = {q["id"]: q["taken"] for q in m["queries"]}
    assert sum(taken[q.id] for q in queries if q.label == "a") == sum(taken[q.id] for q in queries if q.label == "b")
    t = curate(index, queries[:2], CurateParams(strategy="threshold", threshold=0.5, budget=30), tmp_path, set_id="th")
    _, samples = read_set(tmp_path / "th")
    assert samples and all(s["similarity"] >= 0.5 for s in samples) and t["counts"]["emitted"] <= 30
    with pytest.raises(CuratorError, match="needs a label"):
        curate(index, queries_from_seeds([1]), CurateParams(strategy="class-balanced", budget=5), tmp_path)


def test_random_strategy_is_a_seeded_uniform_draw_under_the_same_rules(pool_index, tmp_path):
    """The paper's control: a random pool subset of the budget's size, contamination excluded,
    near-duplicates collapsed, the same for the same seed and different for another."""
    index, images = pool_index
    query = Query("q.png", (images / "class0" / "img0000.png").read_bytes())
    exclude = load_queries(images / "class1")
    a = curate(index, [query], CurateParams(strategy="random", budget=60, seed=1), tmp_path, exclude=exclude,
               set_id="r1")
    b = curate(index, [query], CurateParams(strategy="random", budget=60, seed=1), tmp_path, exclude=exclude,
               set_id="r2")
    c = curate(index, [query], CurateParams(strategy="random", budget=60, seed=2), tmp_path, exclude=exclude,
               set_id="r3")
    assert c["counts"]["emitted"] == 60
    _, samples = read_set(tmp_path / "r1")
    keys = {s["pool_key"] for s in samples}
    assert a["counts"]["emitted"] == len(samples) == 60
    assert not any(k.startswith("class1/") for k in keys) and "class0/img0000.png" not in keys
    assert len({k.split("/")[0] for k in keys}) == 3  # spread over the three classes left, unlike retrieval
    assert [s["sha256"] for s in a["shardlist"]] == [s["sha256"] for s in b["shardlist"]]
    assert {s["pool_key"] for s in read_set(tmp_path / "r3")[1]} != keys
    vecs = index.vectors(np.array([s["pool_id"] for s in samples]))
    assert (vecs @ vecs.T - 2 * np.eye(len(vecs))).max() < 0.95


def test_same_inputs_same_set(pool_index, tmp_path):
    index, _ = pool_index
    q = queries_from_seeds([1000, 1001, 1002])
    a = curate(index, q, CurateParams(per_query=9, crops=2, seed=3), tmp_path, set_id="a")
    b = curate(index, q, CurateParams(per_query=9, crops=2, seed=3), tmp_path, set_id="b")
    assert [s["sha256"] for s in a["shardlist"]] == [s["sha256"] for s in b["shardlist"]]
    assert a["counts"]["query_views"] == 9


def test_precomputed_crop_views_with_their_owners_make_the_same_set(pool_index, tmp_path):
    """bench kt embeds its crop queries once for two sets: the views and their owners passed in must
    select what curate selects embedding them itself; views without owners are a clear error."""
    index, _ = pool_index
    q = queries_from_seeds([1000, 1001, 1002])
    params = CurateParams(per_query=9, crops=2, seed=3)
    itself = curate(index, q, params, tmp_path, set_id="itself")
    vecs, owner, _, _ = embed_queries(index.encoder(), q, crops=2, seed=3)
    given = curate(index, q, params, tmp_path, set_id="given", query_vectors=vecs, query_owner=owner)
    assert [s["sha256"] for s in given["shardlist"]] == [s["sha256"] for s in itself["shardlist"]]
    with pytest.raises(CuratorError, match="one row per query"):
        curate(index, q, params, tmp_path, set_id="bad", query_vectors=vecs)
    assert not (tmp_path / "bad").exists()


def test_params_validation():
    with pytest.raises(ValueError, match="not both"):
        CurateParams(budget=10, per_query=2)
    with pytest.raises(ValueError, match="needs 'threshold'"):
        CurateParams(strategy="threshold")
    assert CurateParams().per_query == 100


def test_cli_curate(pool_index, tmp_path, capsys):
    index, images = pool_index
    queries = tmp_path / "q"
    shutil.copytree(images / "class2", queries / "c2")
    (queries / "c2" / "zz-bomb.png").write_bytes(png_header_only(50_000, 50_000))  # one bad image in the folder
    rc = main(["curate", "--index", str(index.root), "--queries", str(queries), "--out", str(tmp_path / "sets"),
               "--budget", "100", "--set-id", "cli", "--json"])
    manifest = json.loads(capsys.readouterr().out)
    assert rc == 0 and manifest["id"] == "cli" and manifest["params"]["budget"] == 100
    assert manifest["counts"]["queries"] == 50 and manifest["queries"][0]["label"] == "c2"
    assert [(s["key"], s["reason"]) for s in manifest["skipped_queries"]] == [("c2/zz-bomb.png", "too_many_pixels")]
    (queries / "c2" / "zz-bomb.png").unlink()
    np.save(tmp_path / "q.npy", index.vectors(np.array([3, 40])))
    rc = main(["curate", "--index", str(index.root), "--queries", str(tmp_path / "q.npy"), "--out",
               str(tmp_path / "sets"), "--per-query", "5", "--set-id", "npy", "--json"])
    manifest = json.loads(capsys.readouterr().out)
    assert rc == 0 and manifest["counts"]["emitted"] == 10 and manifest["queries"][0]["id"] == "embedding-0"
    with pytest.raises(SystemExit) as exc:
        main(["curate", "--index", str(index.root), "--queries", str(queries), "--out", str(tmp_path / "sets"),
              "--budget", "10", "--per-query", "3"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_cell_bucketed_dedup_matches_exact(monkeypatch):
    """Above EXACT_DEDUP_MAX, near-duplicates are found within coarse cells: same pairs as exact."""
    from curator import dedup

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x[1000:1100] = x[:100] + 0.02 * rng.standard_normal((100, 32)).astype(np.float32)  # planted pairs
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = dedup.near_duplicate_pairs(x, 0.95)
    monkeypatch.setattr(dedup, "EXACT_DEDUP_MAX", 0)
    bucketed = dedup.near_duplicate_pairs(x, 0.95)
    assert sum(len(a) for a in exact) >= 200
    assert all(set(a) == set(b) for a, b in zip(exact, bucketed))


def test_crowded_cells_are_split_and_still_find_every_pair(monkeypatch):
    """A deep curation crowds thousands of candidates into one coarse cell; such a cell is split again by
    k-means (each candidate in its 3 nearest sub-cells) and must find the same pairs as exact search,
    from float16 candidates as the pool stores them."""
    from curator import dedup

    rng = np.random.default_rng(3)
    centre = rng.standard_normal(64).astype(np.float32)
    x = centre + 0.8 * rng.standard_normal((4000, 64)).astype(np.float32)  # one cluster (cosine ~0.6 within)
    x[2000:2150] = x[:150] + 0.03 * rng.standard_normal((150, 64)).astype(np.float32)  # planted pairs
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    exact = dedup.near_duplicate_pairs(x, 0.95)
    monkeypatch.setattr(dedup, "EXACT_DEDUP_MAX", 0)
    monkeypatch.setattr(dedup, "SPLIT_ABOVE", 300)  # 8,000 memberships in one cell: ~31 sub-cells of 256
    one_cell = lambda v, n, ids=None: np.zeros((len(v), n), dtype=np.int64)  # noqa: E731 (every row in cell 0)
    split = dedup.near_duplicate_pairs(x, 0.95, one_cell)
    assert sum(len(a) for a in exact) >= 300
    assert all(set(a) == set(b) for a, b in zip(exact, split))


def test_cancel_is_honoured_between_search_blocks(pool_index, tmp_path):
    """A cancel that arrives while searching stops the job before the next block of query views is
    searched (one FAISS call over every view would hold the worker to the end), and leaves no set."""
    pool = PoolIndex.open(pool_index[0].root)
    vectors = np.repeat(pool.vectors(np.arange(2)), 400, axis=0)  # 800 views: several search blocks
    searched, search = [], pool.search
    pool.search = lambda v, k: searched.append(len(v)) or search(v, k)
    with pytest.raises(InterruptedError):
        curate_set(pool, [Query(f"e{i}") for i in range(len(vectors))], CurateParams(per_query=1), tmp_path,
                   query_vectors=vectors, cancelled=lambda: bool(searched))
    assert 0 < sum(searched) < len(vectors)
    assert not any(tmp_path.iterdir())


def test_only_queries_that_ran_dry_are_searched_deeper_and_the_walk_is_unchanged():
    """Twenty queries crowd one neighbourhood (they run dry at the first depth), ten point elsewhere.
    Searching deeper for the dry ones alone gives the walk searching every query deeper gave, on an
    exact index (where a shallow top-k is a prefix of a deep one)."""
    import faiss

    from curator.select import select_balanced

    rng = np.random.default_rng(5)
    pool = rng.normal(size=(3000, 16)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(16)
    index.add(pool)
    crowd = pool[0] + 0.01 * rng.normal(size=(20, 16))
    queries = np.concatenate([crowd, rng.normal(size=(10, 16))]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    asked: list[int] = []

    def search(k, rows=None):
        asked.append(len(queries) if rows is None else len(rows))
        return index.search(queries if rows is None else queries[rows], k)

    def search_all(k, rows=None):  # the old way: every query again
        deep = index.search(queries, k)
        return (deep[0][rows], deep[1][rows]) if rows is not None else deep

    rules = dict(vectors_of=lambda ids: pool[ids], forbidden=np.zeros((0, 16), np.float32), ntotal=len(pool),
                 dedup=1.0, exclude_threshold=1.0)
    owner, quotas = np.arange(30), np.full(30, 40)
    got = select_balanced(search, owner, 30, quotas, **rules)
    want = select_balanced(search_all, owner, 30, quotas, **rules)
    assert asked[0] == 30 and 0 < asked[1] < 30, asked  # the second search: the dry queries only
    assert not got.dry_queries and len(got.ids) == 30 * 40
    for field in ("ids", "query", "rank", "score"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field


def test_a_query_image_in_the_pool_is_dropped_as_a_query_not_as_contamination(pool_index, tmp_path):
    """The pool holds the query images themselves and an --exclude image: the first are dropped as "query"
    (what they are), the other as "contamination"."""
    import os

    import pyarrow.parquet as pq

    index, images = pool_index
    queries = load_queries(images / "class2")[:2]
    first = curate(index, queries, CurateParams(per_query=5), tmp_path, set_id="a")
    taken = pq.read_table(tmp_path / "a" / "samples.parquet").to_pylist()[0]["pool_key"]  # a neighbour they pull in
    exclude = [q for q in load_queries(images) if q.id == taken]
    m = curate(index, queries, CurateParams(per_query=5), tmp_path, set_id="b", exclude=exclude)
    reason = {os.path.basename(r["pool_key"]): r["reason"]
              for r in pq.read_table(tmp_path / "b" / "dropped.parquet").to_pylist()}
    assert [reason.get(os.path.basename(q.id)) for q in queries] == ["query", "query"], reason
    assert reason.get(os.path.basename(taken)) == "contamination", reason
    assert m["counts"]["excluded"] == sum(r in ("query", "contamination") for r in reason.values())
    assert m["counts"]["excluded"] == first["counts"]["excluded"] + 1
