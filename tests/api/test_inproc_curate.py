"""POST /curate in process (FastAPI's TestClient): bodies, bounds, cancelling, retries."""
import base64
import time

import pytest

from curator.formats import Limits
from helpers import AS_WORKER, curate_json, pattern_image, png_bytes


def test_json_and_multipart_share_one_params_model_and_its_limits(client):
    limit = Limits().max_budget
    r = curate_json(client, params={"budget": limit + 1}, embeddings=[[1.0] * client.dim])
    assert r.status_code == 422 and "limit" in r.json()["detail"]
    files = [("files", ("a.png", png_bytes(pattern_image(1, 96)), "image/png"))]
    r = client.post("/curate", files=files, data={"params": f'{{"budget": {limit + 1}}}'})
    assert r.status_code == 422
    r = curate_json(client, params={"per_query": 10**22}, embeddings=[[1.0] * client.dim])
    assert r.status_code == 422


@pytest.mark.parametrize("body", [
    {"embeddings": [[0.1, 0.2], [0.1]]},                                        # ragged
    {"params": {"strategy": "nope"}, "embeddings": None},                       # unknown strategy
    {"params": {"strategy": "class-balanced"}, "embeddings": "DIM"},            # no labels for the strategy
    {"params": {"seed": -1}, "embeddings": "DIM"},
    {"embeddings": "DIM", "labels": []},                                        # labels of the wrong length
])
def test_bad_curate_bodies_are_422(client, body):
    body = {k: ([[1.0] * client.dim] if v == "DIM" else v) for k, v in body.items()}
    r = curate_json(client, **body)
    assert r.status_code == 422, r.text


def test_unknown_json_content_type_is_refused(client):
    r = client.post("/curate", content=b"{}", headers={"content-type": "application/jsonfoo"})
    assert r.status_code == 415


def test_a_curation_round_trip_in_process(client):
    data = base64.b64encode(png_bytes(pattern_image(3, 96))).decode()
    r = client.post("/curate?wait=true", json={"params": {"per_query": 3}, "images": [{"name": "q.png", "data": data}]})
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
    manifest = client.get(f"/transfer-sets/{r.json()['transfer_set_id']}/manifest").json()
    assert manifest["counts"]["emitted"] == 3 and "path" not in manifest["index"]  # a name, never a server path


@pytest.mark.parametrize("path,body", [
    ("/distill-jobs/claim", b'{"worker": "w", "lease_seconds": NaN}'),
    ("/distill-jobs/claim", b'{"worker": "w", "lease_seconds": Infinity}'),
    ("/distill-jobs/claim", b'{"worker": '),                     # malformed
    ("/distill-jobs/claim", b''),                                 # empty
    ("/curate", b'{"params": {"seed": NaN}, "embeddings": [[1.0]]}'),
    ("/curate", b'{"params": {"dedup": NaN}, "embeddings": [[1.0]]}'),
    ("/curate", b''),
])
def test_non_finite_and_malformed_json_is_422_never_500(client, path, body):
    worker = AS_WORKER if path.startswith("/distill-jobs") else {}
    r = client.post(path, content=body, headers={"content-type": "application/json", **worker})
    assert r.status_code == 422, r.text


def test_non_finite_multipart_params_are_422(client):
    files = [("files", ("a.png", png_bytes(pattern_image(1, 96)), "image/png"))]
    for params in ('{"dedup": NaN}', '{"threshold": Infinity, "strategy": "threshold"}', '{"per_query": 1e400}'):
        r = client.post("/curate", files=files, data={"params": params})
        assert r.status_code == 422, (params, r.text)


def test_declared_size_and_total_decoded_pixels_are_bounded(client):
    from helpers import png_header_only

    jpeg_bomb = png_bytes(pattern_image(1, 64), "JPEG")  # then patch its SOF to declare 50000x50000
    sof = jpeg_bomb.index(b"\xff\xc0") + 5
    jpeg_bomb = jpeg_bomb[:sof] + (50_000).to_bytes(2, "big") * 2 + jpeg_bomb[sof + 4:]
    for blob in (jpeg_bomb, png_header_only(50_000, 50_000)):
        r = client.post("/curate", files=[("files", ("bomb.jpg", blob, "image/jpeg"))])
        assert r.status_code == 413 and "too_many_pixels" in r.text


def test_the_decoded_pixels_of_one_request_are_bounded():
    from fastapi import HTTPException

    from api.uploads import check_images

    blob = png_bytes(pattern_image(2, 200))  # 40,000 pixels each
    check_images([("a.png", blob), ("b.png", blob)], Limits(max_request_pixels=80_000))
    with pytest.raises(HTTPException) as exc:
        check_images([("a.png", blob), ("b.png", blob), ("c.png", blob)], Limits(max_request_pixels=80_000))
    assert exc.value.status_code == 413 and "max-request-pixels" in exc.value.detail


def test_cancelling_stops_query_embedding_at_once(client):
    from curator.queries import Query, embed_queries

    queries = [Query(f"q{i}", png_bytes(pattern_image(i, 96))) for i in range(50)]
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) > 3
    with pytest.raises(InterruptedError):
        embed_queries(client.app.state.pool.current().encoder(), queries, cancelled=cancelled)
    assert len(asked) == 4  # stopped at the fourth image, not after all fifty


def test_a_refused_request_leaves_no_job_and_no_upload_and_no_server_path_is_served(client):
    import io

    import pyarrow.parquet as pq

    uploads = client.app.state.settings.uploads_dir
    before = {j["id"] for j in client.get("/jobs?limit=1000").json()}
    files = [("files", ("a.png", png_bytes(pattern_image(1, 96)), "image/png")), ("files", ("b.txt", b"hi", "text/plain"))]
    assert client.post("/curate", files=files).status_code == 415
    assert {j["id"] for j in client.get("/jobs?limit=1000").json()} == before
    assert not [p for p in uploads.iterdir() if p.name.startswith(".")]  # the staging folder went too
    job = client.post("/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]}).json()
    table = pq.read_table(io.BytesIO(client.get(f"/transfer-sets/{job['transfer_set_id']}/samples.parquet").content))
    assert table.num_rows == 2 and "source" not in table.column_names and "pool_key" in table.column_names


def test_a_retried_curate_request_returns_the_job_it_made(client):
    """The same Idempotency-Key (from the same key's owner) gives the same job, never a second one."""
    body = {"params": {"per_query": 3}, "embeddings": [[1.0] * client.dim]}
    headers = {"Idempotency-Key": "retry-0001"}
    first = client.post("/curate", json=body, headers=headers).json()
    again = client.post("/curate", json=body, headers=headers).json()
    assert again["id"] == first["id"]
    assert len([j for j in client.get("/jobs").json() if j["id"] == first["id"]]) == 1
    other = client.post("/curate", json=body | {"params": {"per_query": 4}}, headers=headers)
    assert other.status_code == 422 and "Idempotency-Key" in other.text
    assert client.post("/curate", json=body, headers={"Idempotency-Key": "bad key!"}).status_code == 422
    assert client.post("/curate", json=body, headers={"Idempotency-Key": "retry-0002"}).json()["id"] != first["id"]


def test_the_body_is_counted_as_it_arrives_whatever_the_headers_say():
    """The middleware alone: a body that keeps coming past the limit is refused at the limit."""
    import asyncio

    from api.middleware import BoundedRequests

    async def app(scope, receive, send):
        from fastapi import HTTPException
        try:
            while (await receive()).get("more_body"):
                pass
        except HTTPException as exc:
            await send({"type": "http.response.start", "status": exc.status_code, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run(chunks: int) -> int:
        messages = [{"type": "http.request", "body": b"x" * 1000, "more_body": True}] * chunks + \
                   [{"type": "http.request", "body": b"", "more_body": False}]
        feed, sent = iter(messages), []

        async def receive():
            return next(feed)

        async def send(message):
            sent.append(message)
        scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"10")]}
        await BoundedRequests(app, max_body=5000, max_headers=10, max_header_bytes=1000, body_timeout=5)(
            scope, receive, send)
        return sent[0]["status"]
    assert asyncio.run(run(3)) == 200 and asyncio.run(run(9)) == 413


def test_every_path_respects_the_limits(client):
    """A threshold without a budget stops at --max-budget; a vector whose norm overflows float32 is refused
    at submit; integers beyond any id in a path are a 422, never a 500."""
    from api.deps import get_settings

    app = client.app
    tight = app.state.settings.model_copy(update={"limits": Limits(max_budget=5)})
    app.dependency_overrides[get_settings] = lambda: tight
    try:
        vector = [1.0] + [0.0] * (client.dim - 1)
        r = curate_json(client, params={"strategy": "threshold", "threshold": -1, "dedup": 1.0,
                                        "exclude_threshold": 1.0}, embeddings=[vector])
        assert r.status_code == 202, r.text
        assert r.json()["params"]["budget"] == 5
    finally:
        app.dependency_overrides.clear()
    huge = curate_json(client, params={"per_query": 2}, embeddings=[[1e38] * client.dim])
    assert huge.status_code == 422 and "norm" in huge.text
    done = client.post("/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": [vector]}).json()
    for n in (2 ** 63, -(2 ** 63) - 1, 10 ** 30, -(10 ** 30)):
        r = client.get(f"/transfer-sets/{done['transfer_set_id']}/queries/{n}/thumbnail")
        assert r.status_code == 422, (n, r.status_code)
        assert client.get(f"/items/{n}/thumbnail").status_code == 422
        assert client.get(f"/search?item_id={n}").status_code == 422


def test_waiting_requests_hold_no_thread_that_others_need(tiny_index, tmp_path):
    """Ten ?wait=true requests on jobs that never start: search still answers at once (waiters sleep on
    the event loop, not on the threads that searches, uploads and thumbnails share)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from api import Settings, create_app

    app = create_app(Settings(index_dir=tiny_index(40, classes=2, seed=5), data_dir=tmp_path / "data", no_auth=True,
                              wait_seconds=3))
    with TestClient(app) as c:
        c.app.state.store.claim_job = lambda *args, **kw: None  # the queue stands still
        body = {"params": {"per_query": 2}, "embeddings": [[1.0] + [0.0] * (c.app.state.pool.current().manifest.dim - 1)]}
        with ThreadPoolExecutor(10) as pool:
            waiting = [pool.submit(c.post, "/curate?wait=true", json=body) for _ in range(10)]
            time.sleep(0.5)
            t0 = time.monotonic()
            r = c.get("/search?item_id=3&k=3")
            assert r.status_code == 200 and time.monotonic() - t0 < 1.0
            assert [f.result().status_code for f in waiting] == [202] * 10


def test_a_cancelled_queued_jobs_uploads_and_an_abandoned_jobs_leftovers_are_freed(tiny_index, tmp_path):
    from fastapi.testclient import TestClient

    from api import Settings, create_app

    app = create_app(Settings(index_dir=tiny_index(40, classes=2, seed=5), data_dir=tmp_path / "data", no_auth=True))
    with TestClient(app) as c:
        store, uploads = c.app.state.store, c.app.state.settings.uploads_dir
        claim = store.claim_job
        store.claim_job = lambda *args, **kw: None  # the queue stands still
        files = [("files", ("a.png", png_bytes(pattern_image(1, 96)), "image/png"))]
        job = c.post("/curate", files=files, data={"params": '{"per_query": 2}'}).json()
        assert (uploads / job["id"]).is_dir()
        assert c.delete(f"/jobs/{job['id']}").json()["state"] == "cancelled"
        assert not (uploads / job["id"]).exists()  # not kept until a restart
        # a job whose replicas died three times is failed, and its inputs and half-written set go with it
        dead = c.post("/curate", files=files, data={"params": '{"per_query": 2}'}).json()["id"]
        partial = c.app.state.settings.sets_dir / f".ts-{dead.removeprefix('job-')}.tmp-x"
        partial.mkdir()
        store.db.execute("UPDATE jobs SET state = 'running', attempts = 3, lease_expires = 0 WHERE id = ?", (dead,))
        store.claim_job = claim
        c.app.state.runner.submit(dead)
        for _ in range(100):
            if c.get(f"/jobs/{dead}").json()["state"] == "failed":
                break
            time.sleep(0.05)
        assert "stopped 3 times" in c.get(f"/jobs/{dead}").json()["error"]
        assert not (uploads / dead).exists() and not partial.exists()
