"""A URL list downloaded with img2dataset from a loopback server, one URL a 404."""
import contextlib
import csv
import http.server
import threading
from functools import partial

import pytest

from helpers import pattern_image
from curator.retrieval import PoolIndex
from index_builder import BuildConfig, build_index

pytestmark = pytest.mark.network_local  # starts a loopback HTTP server

pytest.importorskip("img2dataset")


@contextlib.contextmanager
def serve(folder):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_list_is_downloaded_then_indexed(tmp_path, tiny_clip_spec):
    www = tmp_path / "www"
    www.mkdir()
    for i in range(6):
        pattern_image(i, size=64).save(www / f"{i}.jpg")
    with serve(www) as base:
        urls = tmp_path / "urls.csv"
        with open(urls, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["url", "caption"])
            for i in range(6):
                writer.writerow([f"{base}/{i}.jpg", f"picture {i}"])
            writer.writerow([f"{base}/missing.jpg", "gone"])
        out = tmp_path / "idx"
        report = build_index([str(urls)], out, BuildConfig(encoder=tiny_clip_spec, workers=0, progress=False,
                                                            download={"processes": 1, "threads": 4}))
    assert report.items == 6
    index = PoolIndex.open(out)
    assert sorted(index.items.column("caption").to_pylist()) == [f"picture {i}" for i in range(6)]
    import pyarrow.parquet as pq
    status = pq.read_table(next((out / "download").glob("*/*.parquet"))).to_pydict()
    assert status["status"].count("success") == 6 and status["status"].count("failed_to_download") == 1
    # the failed URL is in the report, as a skipped item with img2dataset's reason
    assert report.skipped == 1 and report.skipped_by_reason == {"download_failed": 1}
    assert report.skipped_items[0].key.endswith("/missing.jpg") and "404" in report.skipped_items[0].detail


def test_remote_tar_shards_from_a_server_without_ranges_are_read_whole(tmp_path, tiny_clip_spec, capsys):
    """python's http.server offers no byte ranges: each shard is fetched whole, once, and indexed; a URL
    that is not there is one line naming it."""
    from curator.cli import main
    from helpers import write_tar

    www = tmp_path / "www"
    www.mkdir()
    for i in range(2):
        write_tar(www / f"pool-{i:05d}.tar", 5, start=5 * i)
    with serve(www) as base:
        report = build_index([f"{base}/pool-{{00000..00001}}.tar"], tmp_path / "idx",
                             BuildConfig(encoder=tiny_clip_spec, workers=0, progress=False))
        assert report.items == 10 and report.skipped == 0
        index = PoolIndex.open(tmp_path / "idx")
        assert index.fetch(7) == (www / "pool-00001.tar").read_bytes()[index.items.column("offset")[7].as_py():][
            :index.items.column("size")[7].as_py()]
        assert main(["build-index", "--input", f"{base}/gone-00000.tar", "--out", str(tmp_path / "x"),
                     "--encoder", tiny_clip_spec, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone-00000.tar: not found" in err[0], err


def test_published_embeddings_with_urls_curate_to_a_url_list_that_materializes_into_shards(tmp_path, tiny_clip_spec,
                                                                                          capsys):
    """The LAION case end to end: vectors with URLs -> index -> curate -> urls.parquet (img2dataset's input
    as it is) -> curator materialize (img2dataset) -> verified shards -> wids reads them."""
    import hashlib
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import wids

    from curator.cli import main

    www, emb = tmp_path / "www", tmp_path / "emb"
    www.mkdir()
    (emb / "img_emb").mkdir(parents=True)
    (emb / "metadata").mkdir()
    for i in range(12):
        pattern_image(i, size=64).save(www / f"{i}.jpg")
    x = np.random.default_rng(0).normal(size=(12, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(emb / "img_emb" / "img_emb_0.npy", x.astype(np.float16))
    (www / "3.jpg").unlink()  # gone from the web since it was indexed
    with serve(www) as base:
        pq.write_table(pa.table({"url": [f"{base}/{i}.jpg" for i in range(12)],
                                 "caption": [f"picture {i}" for i in range(12)]}), emb / "metadata" / "metadata_0.parquet")
        assert main(["build-index", "--embeddings", str(emb), "--out", str(tmp_path / "idx"), "--encoder",
                     tiny_clip_spec, "-q"]) == 0
        np.save(tmp_path / "q.npy", x[[3, 7]])
        assert main(["curate", "--index", str(tmp_path / "idx"), "--queries", str(tmp_path / "q.npy"), "--out",
                     str(tmp_path / "sets"), "--set-id", "s", "--per-query", "3", "--dedup", "1",
                     "--exclude-threshold", "1"]) == 0
        folder = tmp_path / "sets" / "s"
        manifest = json.loads((folder / "manifest.json").read_text())
        urls = pq.read_table(folder / "urls.parquet").to_pylist()
        assert manifest["url_list"] == "urls.parquet" and not manifest["shardlist"] and len(urls) == 6
        assert {"url", "caption", "similarity", "query", "rank"} <= set(urls[0])
        capsys.readouterr()
        assert main(["materialize", str(folder), "--out", str(tmp_path / "wds")]) == 0
        said = capsys.readouterr().out
    done = json.loads((tmp_path / "wds" / "s" / "manifest.json").read_text())
    wanted = sum(u["url"].endswith("/3.jpg") for u in urls)
    assert done["counts"]["emitted"] == 6 - wanted and done["counts"]["unreadable"] == wanted, said
    for shard in done["shardlist"]:
        assert hashlib.sha256((tmp_path / "wds" / "s" / shard["url"]).read_bytes()).hexdigest() == shard["sha256"]
    samples = {r["key"]: r for r in pq.read_table(tmp_path / "wds" / "s" / "samples.parquet").to_pylist()}
    dataset = wids.ShardListDataset(str(tmp_path / "wds" / "s" / "manifest.json"), transformations=[],
                                    cache_dir=str(tmp_path / "cache"))
    assert len(dataset) == len(samples) == 6 - wanted
    for i in range(len(dataset)):
        sample = dataset[i]
        image = member(sample, "jpg", "jpeg", "png", "webp")
        assert hashlib.sha256(image).hexdigest() == samples[sample["__key__"]]["sha256"]
        meta = json.loads(member(sample, "json"))
        assert meta["caption"].startswith("picture ") and meta["query_id"] in ("embedding-0", "embedding-1")


def member(sample: dict, *exts: str) -> bytes:
    """A wids sample's member of one of these extensions, as bytes."""
    value = next(v for k, v in sample.items() if k.lstrip(".") in exts)
    return value.read() if hasattr(value, "read") else bytes(value)
