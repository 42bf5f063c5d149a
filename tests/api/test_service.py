"""The service over real HTTP: a uvicorn process on 127.0.0.1, restarted mid-test."""
import base64
import json
import os
import signal
import sqlite3
import time
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from curator.client import CuratorClient, ServiceError
from curator.retrieval import PoolIndex
from helpers import (ADMIN, CURATE, READ, REAL_ENCODER, REPO, Server, free_port, make_image_folder, pattern_image,
                     png_bytes, png_header_only)
from index_builder import BuildConfig, build_index

pytestmark = pytest.mark.network_local  # starts a loopback HTTP server


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    make_image_folder(root / "pool", 150, classes=3, seed=2)
    build_index([str(root / "pool")], root / "index", BuildConfig(encoder=REAL_ENCODER, workers=0, batch_size=64,
                                                                   progress=False))
    return root / "index"


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    srv = Server(index_dir, tmp_path_factory.mktemp("data") / "state", "--max-files", "4",
                 "--max-file-bytes", "300000", "--max-pixels", "4000000").start()
    yield srv
    srv.stop()


def query_files(tmp_path, seeds):
    paths = []
    for s in seeds:
        p = tmp_path / f"q{s}.png"
        pattern_image(s).save(p)
        paths.append(p)
    return paths


def healthy(server):
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def test_auth(server, tmp_path):
    r = httpx.post(server.url + "/curate", files={"files": ("a.png", b"x")})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    r = httpx.get(server.url + "/jobs", headers={"Authorization": "Bearer not-a-key"})
    assert r.status_code == 401
    with CuratorClient(server.url, READ) as reader:
        assert reader.jobs() is not None  # read scope may read
        with pytest.raises(ServiceError) as exc:
            reader.curate(query_files(tmp_path, [1]), {"per_query": 2})
        assert exc.value.status == 403 and "curate" in str(exc.value.detail)


def test_upload_job_manifest_download(server, tmp_path):
    with CuratorClient(server.url, CURATE) as client:
        job = client.curate(query_files(tmp_path, [11, 12, 13]), {"per_query": 5, "shard_size": 4},
                            labels=["a", "b", "a"])
        assert job.state in ("queued", "running", "succeeded")
        job = client.wait(job.id, timeout=60)
        assert job.counts.emitted == 15 and job.transfer_set_url.endswith(job.transfer_set_id)
        folder = client.download_transfer_set(job.transfer_set_id, tmp_path / "sets")
        manifest = json.loads((folder / "manifest.json").read_text())
        assert [q["label"] for q in manifest["queries"]] == ["a", "b", "a"]
        n = 0
        for shard in manifest["shardlist"]:
            with tarfile.open(folder / shard["url"]) as tar:
                n += sum(name.endswith(".json") for name in tar.getnames())
        assert n == 15
        # HTTP Range on shards (resumable downloads)
        url = f"{server.url}/transfer-sets/{job.transfer_set_id}/shards/{manifest['shardlist'][0]['url']}"
        r = httpx.get(url, headers={"Authorization": f"Bearer {CURATE}", "Range": "bytes=0-99"})
        assert r.status_code == 206 and len(r.content) == 100
        # the set is by reference (the default): its shards are assembled from the pool, any byte range
        assert not list((server.data_dir / "transfer-sets" / job.transfer_set_id).glob("*.tar"))
        whole = (folder / manifest["shardlist"][0]["url"]).read_bytes()
        for spec, want in [("bytes=0-99", whole[:100]), ("bytes=1000-2999", whole[1000:3000]),
                           ("bytes=-700", whole[-700:]), (f"bytes={len(whole) - 5}-", whole[-5:])]:
            r = httpx.get(url, headers={"Authorization": f"Bearer {CURATE}", "Range": spec})
            assert r.status_code == 206 and r.content == want, spec
            assert r.headers["content-range"].endswith(f"/{len(whole)}")
        r = httpx.get(url, headers={"Authorization": f"Bearer {CURATE}", "Range": f"bytes={len(whole)}-"})
        assert r.status_code == 416
        assert job.transfer_set_id in [s.id for s in client.transfer_sets()]


def test_wait_true_and_json_bodies(server, tmp_path, index_dir):
    auth = {"Authorization": f"Bearer {CURATE}"}
    imgs = [{"name": "a.png", "data": base64.b64encode(png_bytes(pattern_image(21))).decode(), "label": "x"}]
    r = httpx.post(server.url + "/curate?wait=true", json={"params": {"per_query": 3}, "images": imgs},
                   headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["state"] == "succeeded"
    vecs = PoolIndex.open(index_dir).vectors(np.array([0, 1]))
    r = httpx.post(server.url + "/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": vecs.tolist()},
                   headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["counts"]["emitted"] == 4


BOMB = png_header_only(50_000, 50_000)


@pytest.mark.parametrize("files,data,status,words", [
    ([("files", ("notes.txt", b"hello", "text/plain"))], {}, 415, ["notes.txt", "not_an_image"]),
    ([("files", ("cut.jpg", png_bytes(pattern_image(3, 200), "JPEG")[:900], "image/jpeg"))], {}, 422, ["cut.jpg"]),
    ([("files", ("bomb.png", BOMB, "image/png"))], {}, 413, ["bomb.png", "too_many_pixels"]),
    ([("files", (f"{i}.png", png_bytes(pattern_image(i)), "image/png")) for i in range(5)], {}, 413, ["limit of 4"]),
    ([("files", ("big.png", b"\x89PNG" + os.urandom(400_000), "image/png"))], {}, 413, ["big.png", "300000"]),
    ([("files", ("a.png", png_bytes(pattern_image(1)), "image/png"))], {"params": "{not json"}, 422, []),
    ([("files", ("a.png", png_bytes(pattern_image(1)), "image/png"))], {"params": '{"budget": 5, "per_query": 2}'},
     422, ["not both"]),
    ([("files", ("a.png", png_bytes(pattern_image(1)), "image/png"))], {"params": '{"per_query": -3}'}, 422, []),
    ([("files", ("a.png", png_bytes(pattern_image(1)), "image/png"))], {"labels": '["x", "y"]'}, 422, ["labels"]),
    ([("params", (None, "{}"))], {}, 422, ["no query images"]),
    # every other image format, and nothing at all
    ([("files", ("a.ico", png_bytes(pattern_image(2, 96), "ICO"), "image/x-icon"))], {}, 415, ["unsupported"]),
    ([("files", ("empty.png", b"", "image/png"))], {}, 422, ["empty.png", "empty"]),
    # huge, negative and non-finite parameters
    *[([("files", ("a.png", png_bytes(pattern_image(1, 96)), "image/png"))], {"params": p}, 422, [])
      for p in ('{"per_query": 10000000000000000000000}', '{"budget": -1}', '{"crops": 99}', '{"shard_size": 0}',
                '{"dedup": 2}', '{"dedup": NaN}', '{"threshold": Infinity, "strategy": "threshold"}',
                '{"seed": -5}', '{"strategy": "../../etc"}')],
])
def test_bad_input_matrix(server, files, data, status, words):
    r = httpx.post(server.url + "/curate", files=files, data=data, headers={"Authorization": f"Bearer {CURATE}"})
    assert r.status_code == status, r.text
    for w in words:
        assert w in json.dumps(r.json()["detail"])
    healthy(server)


@pytest.mark.parametrize("body", [{"embeddings": [[float("nan")] * 1280]}, {"embeddings": [[1e400] * 1280]},
                                  {"embeddings": [[0.0] * 1280]}, {"embeddings": [[0.1, 0.2], [0.1]]},
                                  {"embeddings": [[0.1] * 7]}, {"images": [{"name": "a", "data": "%%%"}]}])
def test_bad_embeddings_and_base64_are_422(server, body):
    r = httpx.post(server.url + "/curate", content=json.dumps(body).replace("Infinity", "1e400"),
                   headers={"Authorization": f"Bearer {CURATE}", "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    healthy(server)


@pytest.mark.parametrize("path", ["/jobs/..%2F..%2Fcurator.sqlite3", "/distill-jobs/..%2Fx", "/transfer-sets/%2E%2E",
                                  "/transfer-sets/%2E%2E%2Fuploads/samples.parquet", "/jobs/%00",
                                  "/transfer-sets/ts-x/shards/..%2F..%2F..%2Fetc%2Fpasswd"])
def test_traversal_in_every_path_parameter_is_refused(server, path):
    r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {READ}"})
    assert r.status_code in (400, 404), (path, r.status_code)
    assert "curator.sqlite3" not in r.text or r.status_code == 404
    healthy(server)


def test_a_token_in_the_query_string_is_not_a_credential(server):
    for url in (f"/jobs?token={READ}", f"/jobs?access_token={READ}", f"/jobs?api_key={READ}"):
        assert httpx.get(server.url + url).status_code == 401


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_image_format_is_accepted(server, fmt):
    files = [("files", (f"a.{fmt.lower()}", png_bytes(pattern_image(5, 96), fmt), "application/octet-stream"))]
    r = httpx.post(server.url + "/curate?wait=true", files=files, data={"params": '{"per_query": 2}'},
                   headers={"Authorization": f"Bearer {CURATE}"}, timeout=60)
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text


def test_malformed_multipart_is_a_400(server):
    r = httpx.post(server.url + "/curate", content=b"--y\r\nnonsense", headers={
        "Authorization": f"Bearer {CURATE}", "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "multipart" in r.json()["detail"]
    healthy(server)


def test_paths_and_types_that_are_refused(server):
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for path, status in [("/transfer-sets/..%2F..%2Fcurator.sqlite3/manifest", 404),
                         ("/transfer-sets/nope/manifest", 404),
                         ("/jobs/job-nope", 404)]:
        assert httpx.get(server.url + path, headers=auth).status_code == status
    sets = httpx.get(server.url + "/transfer-sets", headers=auth).json()
    if sets:
        sid = sets[0]["id"]
        for name in ["..%2F..%2Fcurator.sqlite3", "manifest.json", "%2E%2E", "x.tar", "%2Fetc%2Fpasswd"]:
            r = httpx.get(f"{server.url}/transfer-sets/{sid}/shards/{name}", headers=auth)
            assert r.status_code in (400, 404), name
    r = httpx.post(server.url + "/curate", content=b"raw", headers={"Authorization": f"Bearer {CURATE}",
                                                                   "Content-Type": "text/plain"})
    assert r.status_code == 415
    healthy(server)


def test_concurrent_jobs_and_search_and_metrics(server, tmp_path):
    with CuratorClient(server.url, CURATE) as client:
        with ThreadPoolExecutor(2) as pool:
            jobs = list(pool.map(lambda s: client.curate(query_files(tmp_path, [s]), {"per_query": 20}), [31, 32]))
        done = [client.wait(j.id, timeout=60) for j in jobs]
        assert all(d.state == "succeeded" for d in done)
        assert done[0].transfer_set_id != done[1].transfer_set_id
        hits = client.search(query_files(tmp_path, [33])[0], k=5)["hits"]
        assert len(hits) == 5 and hits[0]["score"] >= hits[-1]["score"]
    r = httpx.get(server.url + "/search?item_id=7&k=3", headers={"Authorization": f"Bearer {READ}"})
    hits = r.json()["hits"]
    assert len(hits) == 3 and 7 not in [h["id"] for h in hits]  # the item is not its own neighbour
    assert httpx.get(server.url + "/metrics").status_code == 401  # an admin's, unless --public-metrics
    assert httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {CURATE}"}).status_code == 403
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert "curator_http_request_duration_seconds_bucket" in text and 'curator_jobs{state="succeeded"}' in text
    assert httpx.get(server.url + "/openapi.json").status_code == 401  # a read key's, unless --public-docs
    assert httpx.get(server.url + "/openapi.json", headers={"Authorization": f"Bearer {READ}"}).json()["paths"]["/curate"]


def test_restart_keeps_state_and_reruns_interrupted_jobs(index_dir, tmp_path):
    srv = Server(index_dir, tmp_path / "state").start()
    try:
        with CuratorClient(srv.url, CURATE) as client:
            job = client.wait(client.curate(query_files(tmp_path, [41]), {"per_query": 4}).id, timeout=60)
        srv.stop(signal.SIGKILL)
        db = sqlite3.connect(tmp_path / "state" / "curator.sqlite3")  # a job that was mid-run when it died
        db.execute("INSERT INTO jobs (id, kind, state, owner, params, created_at, updated_at) "
                   "VALUES ('job-interrupted', 'curate', 'running', 'alice', '{}', 0, 0)")
        db.commit()
        db.close()
        srv.start()
        with CuratorClient(srv.url, CURATE) as client:
            again = client.job(job.id)
            assert again.state == "succeeded" and again.transfer_set_id == job.transfer_set_id
            deadline = time.time() + 30  # claimed again at once; its inputs never arrived
            while (lost := client.job("job-interrupted")).state in ("queued", "running") and time.time() < deadline:
                time.sleep(0.1)
            assert lost.state == "failed" and "inputs were lost" in lost.error, lost
            folder = client.download_transfer_set(job.transfer_set_id, tmp_path / "dl")
            assert (folder / "samples.parquet").exists()
    finally:
        srv.stop()


def test_server_refuses_to_start_without_keys(index_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "curator.cli", "serve", "--index", str(index_dir), "--data",
                           str(tmp_path / "d"), "--port", str(free_port())], cwd=REPO, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "CURATOR_API_KEYS"} | {"PYTHONPATH": str(REPO)},
                          timeout=60)
    assert proc.returncode == 2 and "--no-auth" in proc.stderr


def test_downloads_report_a_missing_shard_and_a_changed_manifest(server, tmp_path):
    """A shard gone on the server is a ServiceError (the streamed error is read, then reported); a
    manifest that no longer matches its recorded sha256 is refused, never rewritten."""
    from curator.errors import CuratorError

    with CuratorClient(server.url, CURATE) as client:
        job = client.wait(client.curate(query_files(tmp_path, [51]), {"per_query": 3, "materialize": "copy"}).id,
                          timeout=60)
        folder = server.data_dir / "transfer-sets" / job.transfer_set_id
        shard = next(folder.glob("*.tar"))
        shard.rename(shard.with_suffix(".gone"))
        try:
            with pytest.raises(ServiceError) as exc:
                client.download_transfer_set(job.transfer_set_id, tmp_path / "dl")
            assert exc.value.status == 404 and shard.name in str(exc.value.detail)
        finally:
            shard.with_suffix(".gone").rename(shard)
        manifest = folder / "manifest.json"
        original = manifest.read_bytes()
        manifest.write_bytes(original.replace(b'"emitted": 3', b'"emitted": 4'))
        try:
            with pytest.raises(CuratorError, match="does not match the sha256"):
                client.download_transfer_set(job.transfer_set_id, tmp_path / "dl2")
        finally:
            manifest.write_bytes(original)
        assert client.download_transfer_set(job.transfer_set_id, tmp_path / "dl3").is_dir()
