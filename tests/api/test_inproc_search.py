"""Search and thumbnails in process."""


def test_search_from_an_item_leaves_the_item_out_and_scores_are_cosines(client):
    hits = client.get("/search?item_id=4&k=5").json()["hits"]
    assert len(hits) == 5 and 4 not in [h["id"] for h in hits]
    assert not any("source" in h or "/" == h["key"][:1] for h in hits)  # no server path in a result
    assert all(-1.0 <= h["score"] <= 1.0 for h in hits)


def test_item_thumbnails_are_bounded_cached_and_need_a_key(client):
    r = client.get("/items/3/thumbnail?size=64")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    import io

    from PIL import Image
    assert max(Image.open(io.BytesIO(r.content)).size) <= 64
    assert (client.app.state.settings.data_dir / "thumbnails" / "64" / "3.jpg").read_bytes() == r.content
    assert client.get("/items/3/thumbnail?size=4096").status_code == 422
    assert client.get("/items/3/thumbnail?size=0").status_code == 422
    assert client.get("/items/99999/thumbnail").status_code == 404
    assert client.get("/items/-1/thumbnail").status_code == 422  # never an id
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
