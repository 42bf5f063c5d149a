"""Transfer sets in process: owners, deletion, retention, views."""
import json

from fastapi.testclient import TestClient

from api import Settings, create_app
from api.retention import folder_bytes, prune
from helpers import INPROC_OTHER as OTHER
from helpers import INPROC_ROOT as ROOT
from helpers import pattern_image, png_bytes


def test_jobs_and_sets_have_owners(client):
    """Only a job's owner or an admin may cancel it (to anyone else it does not exist: 404); listings show a
    caller their own; admins see all;
    /metrics is an admin's; /docs is off unless --public-docs."""
    other, root = {"Authorization": f"Bearer {OTHER}"}, {"Authorization": f"Bearer {ROOT}"}
    mine = client.post("/curate", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]}).json()
    theirs = client.post("/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]},
                         headers=other).json()
    assert client.delete(f"/jobs/{theirs['id']}").status_code == 404
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


def test_sets_can_be_deleted_by_their_owner_and_expire(client):
    other, root = {"Authorization": f"Bearer {OTHER}"}, {"Authorization": f"Bearer {ROOT}"}
    job = client.post("/curate?wait=true", json={"params": {"per_query": 2}, "embeddings": [[1.0] * client.dim]}).json()
    set_id, sets_dir = job["transfer_set_id"], client.app.state.settings.sets_dir
    assert client.delete(f"/transfer-sets/{set_id}", headers=other).status_code == 404
    assert client.delete(f"/transfer-sets/{set_id}").status_code == 200
    assert client.get(f"/transfer-sets/{set_id}").status_code == 404 and not (sets_dir / set_id).exists()
    after = client.get(f"/jobs/{job['id']}").json()
    assert after["transfer_set_id"] == set_id and after["transfer_set_url"] is None  # no link to a deleted set
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
