"""Seeing a transfer set: captions beside pool images, text queries, the files a set keeps for people
(query thumbnails and embeddings, what the rules left out), the per-query view, the 2-D map, and
``curator report``'s self-contained gallery."""
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import make_image_folder
from curator.cli import main
from curator.encoders import create_encoder
from curator.errors import CuratorError
from curator.queries import class_prompts, load_queries, text_queries
from curator.retrieval import PoolIndex
from curator.setview import read_view, set_map
from index_builder import BuildConfig, build_index


@pytest.fixture(scope="module")
def pool(tiny_clip_spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    make_image_folder(root / "pool", 40, classes=4, seed=91)
    (root / "pool" / "class0" / "img0000.txt").write_text("a teal square\n")
    (root / "pool" / "class1" / "img0001.json").write_text(json.dumps({"caption": "from a json sidecar"}))
    (root / "pool" / "class2" / "img0002.json").write_text("{not json")  # a broken sidecar is no caption
    build_index([str(root / "pool")], root / "index", BuildConfig(encoder=tiny_clip_spec, workers=0, progress=False))
    make_image_folder(root / "queries", 3, classes=3, seed=92)
    return root


def curate_cli(pool, *flags) -> int:
    return main(["curate", "--index", str(pool / "index"), "--out", str(pool / "sets"), "--dedup", "1",
                 "--exclude-threshold", "1", *flags])


def test_captions_come_from_txt_and_json_sidecars(pool):
    captions = dict(zip(PoolIndex.open(pool / "index").items.column("key").to_pylist(),
                        PoolIndex.open(pool / "index").items.column("caption").to_pylist()))
    assert captions["class0/img0000.png"] == "a teal square"
    assert captions["class1/img0001.jpg"] == "from a json sidecar"
    assert captions["class2/img0002.png"] is None


def test_a_set_keeps_its_queries_and_what_was_left_out(pool):
    assert curate_cli(pool, "--queries", str(pool / "queries"), "--per-query", "4", "--set-id", "kept",
                      "--dedup", "0.99") == 0
    folder = pool / "sets" / "kept"
    queries = pq.read_table(folder / "queries.parquet").to_pylist()
    assert [q["query_id"] for q in queries] == [q.id for q in load_queries(pool / "queries")]
    assert all(q["thumbnail"][:2] == b"\xff\xd8" and len(q["vector"]) == 32 for q in queries)  # JPEG, dim 32
    samples = pq.read_table(folder / "samples.parquet").to_pylist()
    assert "caption" in samples[0]
    view = read_view(folder)
    assert [len(q.items) for q in view.queries] == [4, 4, 4]
    assert all(q.thumbnail for q in view.queries)
    for q in view.queries:
        assert [it.rank for it in q.items] == sorted(it.rank for it in q.items)
    dropped = [d for q in view.queries for d in q.dropped]
    assert len(dropped) == view.counts.deduped > 0  # --dedup 0.99 on an untrained encoder: some near-duplicates
    assert {d.reason for d in dropped} == {"near-duplicate"}
    taken = {it.pool_id for q in view.queries for it in q.items}
    assert not taken & {d.pool_id for d in dropped}


def test_the_map_places_every_query_and_item(pool):
    folder = pool / "sets" / "kept"
    m = set_map(folder, PoolIndex.open(pool / "index").vectors)
    kinds = [p.kind for p in m.points]
    assert kinds.count("query") == 3 and kinds.count("item") == 12
    xy = np.array([[p.x, p.y] for p in m.points])
    assert np.abs(xy).max() <= 1.0 + 1e-6 and xy.std(axis=0).min() > 0


def test_report_is_one_self_contained_file(pool, tmp_path, capsys):
    out = tmp_path / "gallery.html"
    assert main(["report", str(pool / "sets" / "kept"), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("data:image/jpeg;base64,") == 3 + 12  # every query and every image of the set
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing to fetch: it opens offline
    assert main(["report", str(pool / "sets"), "--out", str(tmp_path / "no.html")]) == 2
    assert "not a transfer set" in capsys.readouterr().err and not (tmp_path / "no.html").exists()


def test_curate_html_writes_the_gallery_beside_the_set(pool):
    assert curate_cli(pool, "--queries", str(pool / "queries"), "--per-query", "2", "--set-id", "g", "--html") == 0
    assert (pool / "sets" / "g.html").read_text().count("data:image/jpeg") == 3 + 6


def test_text_queries_by_class_prompts(pool, capsys):
    assert curate_cli(pool, "--text", "a photo of a {}", "--classes", "cat,sea_lion", "--per-query", "3",
                      "--set-id", "text") == 0
    view = read_view(pool / "sets" / "text")
    assert [q.id for q in view.queries] == ["text:a photo of a cat", "text:a photo of a sea lion"]
    assert [q.label for q in view.queries] == ["cat", "sea_lion"] and not any(q.thumbnail for q in view.queries)
    # class names from the sub-folders of --queries
    assert curate_cli(pool, "--text", "a {}", "--queries", str(pool / "queries"), "--per-query", "1",
                      "--set-id", "text2") == 0
    assert [q.label for q in read_view(pool / "sets" / "text2").queries] == ["class0", "class1", "class2"]
    assert curate_cli(pool, "--text", "no placeholder", "--classes", "a", "--per-query", "1") == 2
    assert "needs a '{}'" in capsys.readouterr().err
    assert curate_cli(pool, "--per-query", "1") == 2
    assert "--queries" in capsys.readouterr().err


def test_an_encoder_without_a_text_tower_says_so():
    encoder = create_encoder("packaged:efficientnet-lite0")
    with pytest.raises(CuratorError, match="no text tower"):
        text_queries(encoder, class_prompts("a photo of a {}", ["cat"]))
