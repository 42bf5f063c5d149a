"""The readers users already run, against a served set with keys on: wids and webdataset fetch shards
with curl and send no header, so they read through the signed URLs the service issues per request.
Every sample's bytes are checked against the set's recorded sha256."""
import hashlib
import io
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pyarrow.parquet as pq
import pytest

from curator.client import CuratorClient
from helpers import CURATE, READ, Server, make_image_folder

pytestmark = pytest.mark.network_local


@pytest.fixture(scope="module")
def served(tiny_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    srv = Server(tiny_index(40, classes=2, seed=17), root / "state").start()
    queries = make_image_folder(root / "queries", 2, classes=2, seed=18)
    with CuratorClient(srv.url, CURATE) as client:
        job = client.wait(client.curate(queries, {"per_query": 5, "shard_size": 3, "dedup": 1.0,
                                                  "exclude_threshold": 1.0}).id)
        summary = client.transfer_set(job.transfer_set_id)
        samples = pq.read_table(io.BytesIO(httpx.get(
            f"{srv.url}/transfer-sets/{job.transfer_set_id}/samples.parquet",
            headers={"Authorization": f"Bearer {CURATE}"}).content)).to_pylist()
    yield srv, summary, {r["key"]: r["sha256"] for r in samples}, root
    srv.stop()


def check_samples(samples, expected):
    """Each sample's image is the pool's bytes, as recorded; every recorded sample is there once."""
    seen = {}
    for sample in samples:
        image = next(v for k, v in sample.items() if k.lstrip(".") in ("png", "jpg", "jpeg", "webp"))
        image = image.read() if hasattr(image, "read") else bytes(image)
        seen[sample["__key__"]] = hashlib.sha256(image).hexdigest()
    assert seen == expected


def test_wids_reads_a_served_set_through_its_signed_index(served, tmp_path):
    import wids

    srv, summary, expected, _ = served
    assert summary.wids_url.startswith(srv.url) and "sig=" in summary.wids_url
    dataset = wids.ShardListDataset(summary.wids_url, cache_dir=str(tmp_path / "cache"), transformations=[])
    assert len(dataset) == len(expected) == 10
    check_samples((dataset[i] for i in range(len(dataset))), expected)


def test_webdataset_reads_the_signed_shard_urls(served):
    import webdataset as wds

    srv, summary, expected, _ = served
    index = httpx.get(summary.wids_url).json()  # no header: the URL is the credential
    urls = [shard["url"] for shard in index["shardlist"]]
    assert all(url.startswith(srv.url) for url in urls) and len(urls) == 4
    check_samples(wds.WebDataset(urls, shardshuffle=False), expected)


def test_a_signed_url_is_bound_to_its_file_its_expiry_and_its_issuer(served):
    srv, summary, _, _ = served
    index = httpx.get(summary.wids_url).json()
    url = urlparse(index["shardlist"][0]["url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    base = f"{srv.url}{url.path}"
    assert httpx.get(f"{base}?{urlencode(query)}").status_code == 200
    other_shard = base.replace("transfer-00000.tar", "transfer-00001.tar")
    for forged in ({**query, "sig": query["sig"][:-2] + "AA"}, {**query, "expires": str(int(query["expires"]) + 60)},
                   {**query, "key": "mallory"}):
        assert httpx.get(f"{base}?{urlencode(forged)}").status_code == 403
    assert httpx.get(f"{other_shard}?{urlencode(query)}").status_code == 403  # a URL opens its own file only
    assert httpx.get(f"{base}?{urlencode({**query, 'expires': '1'})}").status_code == 403
    assert httpx.get(base).status_code == 401  # neither a key nor a signature


def test_another_tenants_key_reads_nothing_of_a_set_by_id(served):
    srv, summary, _, _ = served
    sid = summary.id
    for path in (f"/transfer-sets/{sid}", f"/transfer-sets/{sid}/manifest", f"/transfer-sets/{sid}/wids.json",
                 f"/transfer-sets/{sid}/shards/transfer-00000.tar", f"/transfer-sets/{sid}/samples.parquet",
                 f"/transfer-sets/{sid}/view", f"/jobs/{summary.job_id}"):
        r = httpx.get(srv.url + path, headers={"Authorization": f"Bearer {READ}"})
        assert r.status_code == 404, (path, r.status_code)
        assert httpx.get(srv.url + path, headers={"Authorization": f"Bearer {CURATE}"}).status_code == 200, path


def test_the_served_manifests_relative_shard_urls_resolve(served):
    """The manifest as stored names shards relatively: beside it is where a reader looks."""
    srv, summary, _, _ = served
    auth = {"Authorization": f"Bearer {CURATE}"}
    manifest = httpx.get(f"{srv.url}/transfer-sets/{summary.id}/manifest", headers=auth).json()
    first = manifest["shardlist"][0]
    r = httpx.get(f"{srv.url}/transfer-sets/{summary.id}/{first['url']}", headers=auth)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == first["sha256"]


def test_wids_reads_a_local_set_once_materialized(tiny_index, tmp_path, capsys):
    """A local by-reference set holds no tar: curate says so and names curator materialize, whose output
    wids reads as it is."""
    import wids

    from curator.cli import main

    index = tiny_index(40, classes=2, seed=17)
    queries = make_image_folder(tmp_path / "queries", 2, classes=2, seed=18)[0].parent.parent
    assert main(["curate", "--index", str(index), "--queries", str(queries), "--out", str(tmp_path / "sets"),
                 "--per-query", "4", "--set-id", "s", "--dedup", "1", "--exclude-threshold", "1"]) == 0
    assert f"curator materialize {tmp_path / 'sets' / 's'} --out DIR" in capsys.readouterr().out
    assert main(["materialize", str(tmp_path / "sets" / "s"), "--out", str(tmp_path / "wds")]) == 0
    expected = {r["key"]: r["sha256"] for r in pq.read_table(tmp_path / "sets" / "s" / "samples.parquet").to_pylist()}
    dataset = wids.ShardListDataset(str(tmp_path / "wds" / "s" / "manifest.json"), transformations=[],
                                    cache_dir=str(tmp_path / "cache"))
    check_samples((dataset[i] for i in range(len(dataset))), expected)


def test_a_url_only_pool_curates_to_a_url_list_through_the_service(tmp_path, tiny_clip_spec):
    """POST /curate on an index of published embeddings: the set is a URL list the caller downloads (the
    service fetches no URL); the Python client brings it home with the manifest."""
    from helpers import opts, write_embeddings
    from index_builder import build_index

    src = write_embeddings(tmp_path / "laion", [200], d=32)
    build_index([str(src)], tmp_path / "idx", opts(tiny_clip_spec), embeddings=True)
    srv = Server(tmp_path / "idx", tmp_path / "state").start()
    try:
        import numpy as np

        vectors = np.load(src / "img_emb" / "img_emb_0.npy")[:2].astype(float).tolist()
        with CuratorClient(srv.url, CURATE) as client:
            job = client.wait(client.curate_embeddings(vectors, {"per_query": 5, "dedup": 1.0}).id)
            assert job.counts.emitted == 10
            folder = client.download_transfer_set(job.transfer_set_id, tmp_path / "dl")
        urls = pq.read_table(folder / "urls.parquet").to_pylist()
        assert len(urls) == 10 and all(u["url"].startswith("https://example.com/") for u in urls)
        other = httpx.get(f"{srv.url}/transfer-sets/{job.transfer_set_id}/urls.parquet",
                          headers={"Authorization": f"Bearer {READ}"})
        assert other.status_code == 404  # another tenant's list is not theirs to read
    finally:
        srv.stop()
