"""The service in process (FastAPI's TestClient): request validation, without a socket."""
import base64
import json

import pytest
from fastapi.testclient import TestClient

from api import Settings, create_app
from api.deps import get_settings
from api.retention import folder_bytes, prune
from curator.formats import Limits
from helpers import distill_report, pattern_image, png_bytes, tiny_index

KEY = "inproc-key-0123456789abcdef"
OTHER = "other-key-0123456789abcdef"
ROOT = "root-key-0123456789abcdefgh"


@pytest.fixture(scope="module")
def client(tiny_clip_spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("inproc")
    tiny_index(root, tiny_clip_spec, 40, classes=2, seed=5)
    (root / "keys.txt").write_text(f"carol:curate:{KEY}\nmallory:curate:{OTHER}\nroot:admin:{ROOT}\n")
    app = create_app(Settings(index_dir=root / "index", data_dir=root / "data", api_keys_file=root / "keys.txt"))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as c:
        c.dim = app.state.pool.current().manifest.dim
        yield c


def curate_json(client, **body):
    return client.post("/curate", json=body)


def test_distill_job_config_is_validated_at_submit_naming_the_key(client):
    r = client.post("/distill-jobs", json={"transfer_set_id": "ts-x", "labelled": "/data/l",
                                           "config": {"labels_per_clas": 5}})
    assert r.status_code == 422 and "labels_per_clas" in r.json()["detail"]
    r = client.post("/distill-jobs", json={"transfer_set_id": "ts-x", "labelled": "/data/l",
                                           "config": {"steps_b": -1}})
    assert r.status_code == 422 and "steps_b" in r.json()["detail"]
    r = client.post("/distill-jobs", content=b'{"transfer_set_id": "ts-x", "labelled": "/d", '
                                             b'"config": {"temperature": NaN}}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "temperature" in r.text  # never stored, so never blocks the queue
    r = client.post("/distill-jobs", json={"transfer_set_id": "ts-x", "labelled": "/d", "config": {"device": "cuda"}})
    assert r.status_code == 422 and "worker fills them in" in r.json()["detail"]
    # a valid config reaches the next check: the set must exist
    r = client.post("/distill-jobs", json={"transfer_set_id": "ts-x", "labelled": "/d", "config": {"steps_b": 5}})
    assert r.status_code == 404


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


def test_dependencies_can_be_overridden(client):
    """Routes take typed dependencies from app.state, so a test can swap one (here: tighter limits)."""
    app = client.app
    tight = app.state.settings.model_copy(update={"limits": Limits(max_k=3)})
    app.dependency_overrides[get_settings] = lambda: tight
    try:
        assert client.get("/search?item_id=0&k=5").status_code == 422
        assert client.get("/search?item_id=0&k=3").status_code == 200
    finally:
        app.dependency_overrides.clear()


def test_api_key_file_errors_name_the_right_line(tmp_path):
    from api.auth import KeyRing
    from curator.errors import CuratorError

    keys = tmp_path / "keys.txt"
    keys.write_text("broken-entry\n")
    with pytest.raises(CuratorError, match=f"on line 1 of {keys}"):
        KeyRing.load(keys)


def test_search_from_an_item_leaves_the_item_out_and_scores_are_cosines(client):
    hits = client.get("/search?item_id=4&k=5").json()["hits"]
    assert len(hits) == 5 and 4 not in [h["id"] for h in hits]
    assert not any("source" in h or "/" == h["key"][:1] for h in hits)  # no server path in a result
    assert all(-1.0 <= h["score"] <= 1.0 for h in hits)


def test_times_are_iso_8601_and_distill_jobs_can_be_cancelled(client):
    data = base64.b64encode(png_bytes(pattern_image(4, 96))).decode()
    job = client.post("/curate?wait=true", json={"params": {"per_query": 2},
                                                 "images": [{"name": "q.png", "data": data}]}).json()
    assert job["created_at"].endswith("+00:00") and "T" in job["created_at"]
    sets = client.get("/transfer-sets").json()
    assert sets and sets[0]["created_at"].endswith("+00:00")
    dj = client.post("/distill-jobs", json={"transfer_set_id": job["transfer_set_id"], "labelled": "/d",
                                            "config": {"steps_b": 5}}).json()
    claimed = client.post("/distill-jobs/claim", json={"worker": "w", "lease_seconds": 60}).json()
    assert claimed["id"] == dj["id"] and claimed["lease_expires"].endswith("+00:00")
    r = client.delete(f"/distill-jobs/{dj['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    beat = client.post(f"/distill-jobs/{dj['id']}/heartbeat", json={"worker": "w", "lease_seconds": 60,
                                                                     "lease_token": claimed["lease_token"]})
    assert beat.status_code == 409  # the worker learns at its next beat, and stops


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
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_non_finite_multipart_params_are_422(client):
    files = [("files", ("a.png", png_bytes(pattern_image(1, 96)), "image/png"))]
    for params in ('{"dedup": NaN}', '{"threshold": Infinity, "strategy": "threshold"}', '{"per_query": 1e400}'):
        r = client.post("/curate", files=files, data={"params": params})
        assert r.status_code == 422, (params, r.text)


def test_a_lease_is_a_secret_bound_to_the_claiming_key_and_expired_means_refused(client):
    data = base64.b64encode(png_bytes(pattern_image(6, 96))).decode()
    job = client.post("/curate?wait=true", json={"params": {"per_query": 2},
                                                 "images": [{"name": "q.png", "data": data}]}).json()
    client.post("/distill-jobs", json={"transfer_set_id": job["transfer_set_id"], "labelled": "/d", "config": {}})
    claimed = client.post("/distill-jobs/claim", json={"worker": "w", "lease_seconds": 60}).json()
    token, job_id = claimed["lease_token"], claimed["id"]
    assert "lease_token" not in client.get(f"/distill-jobs/{job_id}").json()  # shown to the claimant only
    finish = {"worker": "w", "state": "succeeded", "report": distill_report()}
    other = {"Authorization": f"Bearer {OTHER}"}
    assert client.post(f"/distill-jobs/{job_id}/finish", json=finish | {"lease_token": "x" * 32}).status_code == 409
    assert client.post(f"/distill-jobs/{job_id}/finish", json=finish | {"lease_token": token},
                       headers=other).status_code == 409  # another key, even with the token
    client.app.state.store.db.execute("UPDATE distill_jobs SET lease_expires = 0 WHERE id = ?", (job_id,))
    late = client.post(f"/distill-jobs/{job_id}/finish", json=finish | {"lease_token": token})
    assert late.status_code == 409  # expired is refused, as the heartbeat is
    assert client.get(f"/distill-jobs/{job_id}").json()["state"] == "running"


def test_headers_are_capped_and_encoded_bodies_need_a_length(client):
    assert client.get("/healthz", headers={f"x-h{i}": "1" for i in range(200)}).status_code == 431
    assert client.get("/healthz", headers={"x-big": "a" * 100_000}).status_code == 431
    chunks = iter([b'{"params": {}, ', b'"embeddings": [[1.0]]}'])
    r = client.post("/curate", content=chunks, headers={"content-type": "application/json",
                                                        "transfer-encoding": "gzip, chunked"})
    assert r.status_code == 411


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


def test_jobs_and_sets_have_owners(client):
    """Only a job's owner or an admin may cancel it; listings show a caller their own; admins see all;
    /metrics is an admin's; /docs is off unless --public-docs."""
    other, root = {"Authorization": f"Bearer {OTHER}"}, {"Authorization": f"Bearer {ROOT}"}
    mine = client.post("/curate", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]}).json()
    theirs = client.post("/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]},
                         headers=other).json()
    assert client.delete(f"/jobs/{theirs['id']}").status_code == 403
    assert client.delete(f"/jobs/{mine['id']}").status_code == 200
    assert client.delete(f"/jobs/{theirs['id']}", headers=root).status_code == 200
    listed = {j["id"] for j in client.get("/jobs?limit=1000").json()}
    assert mine["id"] in listed and theirs["id"] not in listed
    assert {mine["id"], theirs["id"]} <= {j["id"] for j in client.get("/jobs?limit=1000", headers=root).json()}
    sets = {s["id"] for s in client.get("/transfer-sets?limit=1000", headers=other).json()}
    assert theirs["transfer_set_id"] in sets
    assert theirs["transfer_set_id"] not in {s["id"] for s in client.get("/transfer-sets?limit=1000").json()}
    assert client.get("/metrics").status_code == 403 and client.get("/metrics", headers=root).status_code == 200
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 200
    assert client.get("/openapi.json", headers={"Authorization": ""}).status_code == 401


def test_a_stored_config_that_no_longer_validates_fails_instead_of_blocking_the_queue(client):
    import json as _json

    store = client.app.state.store
    while client.post("/distill-jobs/claim", json={"worker": "drain", "lease_seconds": 3600}).status_code == 200:
        pass  # earlier tests' jobs
    bad = store.create_distill_job({"labelled": "/d", "temperature": "NaN"}, "ts-x", "carol")
    store.db.execute("UPDATE distill_jobs SET config = ? WHERE id = ?",
                          (_json.dumps({"labelled": "/d", "steps_b": -3}), bad))
    good = store.create_distill_job({"labelled": "/d", "steps_b": 4}, "ts-x", "carol")
    claimed = client.post("/distill-jobs/claim", json={"worker": "w", "lease_seconds": 60})
    assert claimed.status_code == 200 and claimed.json()["id"] == good
    failed = client.get(f"/distill-jobs/{bad}").json()
    assert failed["state"] == "failed" and "steps_b" in failed["error"]


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


def test_sets_can_be_deleted_by_their_owner_and_expire(client):
    other, root = {"Authorization": f"Bearer {OTHER}"}, {"Authorization": f"Bearer {ROOT}"}
    job = client.post("/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]}).json()
    set_id, sets_dir = job["transfer_set_id"], client.app.state.settings.sets_dir
    assert client.delete(f"/transfer-sets/{set_id}", headers=other).status_code == 403
    assert client.delete(f"/transfer-sets/{set_id}").status_code == 200
    assert client.get(f"/transfer-sets/{set_id}").status_code == 404 and not (sets_dir / set_id).exists()
    old = client.post("/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]},
                      headers=root).json()["transfer_set_id"]
    settings = client.app.state.settings
    client.app.state.store.db.execute("UPDATE transfer_sets SET created_at = 0 WHERE id = ?", (old,))
    store = client.app.state.store
    store.db.execute("UPDATE jobs SET updated_at = 0 WHERE transfer_set_id = ?", (old,))
    settings.keep_sets_days = 30
    try:
        assert old in prune(settings, store)
    finally:
        settings.keep_sets_days = None
    assert client.get(f"/transfer-sets/{old}").status_code == 404 and not (sets_dir / old).exists()
    assert not [j for j in client.get("/jobs?limit=1000", headers=root).json() if j["transfer_set_id"] == old]


def test_the_data_directory_is_kept_under_its_size_cap_oldest_sets_first(client, tmp_path):
    settings = client.app.state.settings
    app = create_app(Settings(index_dir=settings.index_dir, data_dir=tmp_path / "data", no_auth=True))
    with TestClient(app) as c:
        ids = [c.post("/curate?wait=true", json={"params": {"per_query": 3, "materialize": "copy"},
                                                 "embeddings": [[float(i == j) for j in range(client.dim)]]}
                      ).json()["transfer_set_id"] for i in range(3)]
        for n, set_id in enumerate(ids):  # distinct, ordered creation times
            app.state.store.db.execute("UPDATE transfer_sets SET created_at = ? WHERE id = ?", (n + 1, set_id))
        used, first = folder_bytes(tmp_path / "data"), folder_bytes(app.state.settings.sets_dir / ids[0])
        app.state.settings.max_data_bytes = used - first // 2  # one set too many
        assert prune(app.state.settings, app.state.store) == [ids[0]]
        assert folder_bytes(tmp_path / "data") <= app.state.settings.max_data_bytes
        assert [c.get(f"/transfer-sets/{i}").status_code for i in ids] == [404, 200, 200]


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


def test_public_docs_serve_every_asset_from_the_package(client, tmp_path):
    """/docs with --public-docs: the page names no other host, and its script and style load from here."""
    settings = client.app.state.settings
    app = create_app(Settings(index_dir=settings.index_dir, data_dir=tmp_path / "data", no_auth=True,
                              public_docs=True))
    with TestClient(app) as docs:
        page = docs.get("/docs")
        assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
        assert "cdn" not in page.text.lower() and "https://" not in page.text.replace("https://fastapi", "")
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            assert docs.get(asset).status_code == 200 and len(docs.get(asset).content) > 10_000
        assert docs.get("/openapi.json").json()["paths"]["/curate"]


def test_item_thumbnails_are_bounded_cached_and_need_a_key(client):
    r = client.get("/items/3/thumbnail?size=64")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    from PIL import Image
    import io
    assert max(Image.open(io.BytesIO(r.content)).size) <= 64
    assert (client.app.state.settings.data_dir / "thumbnails" / "64" / "3.jpg").read_bytes() == r.content
    assert client.get("/items/3/thumbnail?size=4096").status_code == 422
    assert client.get("/items/3/thumbnail?size=0").status_code == 422
    assert client.get("/items/99999/thumbnail").status_code == 404
    assert client.get("/items/-1/thumbnail").status_code == 404
    assert client.get("/items/3/thumbnail", headers={"Authorization": ""}).status_code == 401


def test_search_and_curate_by_text(client):
    r = client.post("/search?k=3", json={"text": "a photo of a red square"})
    assert r.status_code == 200 and len(r.json()["hits"]) == 3
    assert client.post("/search", json={"text": ""}).status_code == 422
    assert client.post("/search", json={"txt": "x"}).status_code == 422
    r = client.post("/curate?wait=true", json={"params": {"per_query": 2, "dedup": 1, "exclude_threshold": 1},
                                               "texts": ["a photo of a cat", "a photo of a dog"],
                                               "labels": ["cat", "dog"]})
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
    view = client.get(f"/transfer-sets/{r.json()['transfer_set_id']}/view").json()
    assert [q["id"] for q in view["queries"]] == ["text:a photo of a cat", "text:a photo of a dog"]
    r = client.post("/curate", json={"texts": ["a"], "embeddings": [[1.0] * client.dim]})
    assert r.status_code == 422 and "exactly one" in r.json()["detail"]


def test_a_set_view_map_and_query_thumbnails(client):
    files = [("files", (f"q{i}.png", png_bytes(pattern_image(200 + i, 96)), "image/png")) for i in range(2)]
    r = client.post("/curate?wait=true", files=files,
                    data={"params": '{"per_query": 3, "dedup": 1, "exclude_threshold": 1}'})
    set_id = r.json()["transfer_set_id"]
    view = client.get(f"/transfer-sets/{set_id}/view").json()
    assert [len(q["items"]) for q in view["queries"]] == [3, 3] and all(q["thumbnail"] for q in view["queries"])
    assert "source" not in json.dumps(view)  # no server path in what a caller sees
    points = client.get(f"/transfer-sets/{set_id}/map").json()["points"]
    assert len(points) == 2 + 6
    thumb = client.get(f"/transfer-sets/{set_id}/queries/1/thumbnail")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert client.get(f"/transfer-sets/{set_id}/queries/9/thumbnail").status_code == 404
    assert client.get("/transfer-sets/ts-nope/view").status_code == 404


def test_the_ui_page_and_its_assets_ship_in_the_package(client):
    page = client.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and "/ui/app.js" in page.text
    for asset in ("/ui/app.js", "/ui/style.css"):
        body = client.get(asset).text
        assert "http://" not in body and "https://" not in body  # no CDN, no other host


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
