"""The app itself in process: dependencies, keys, header caps, docs and UI assets."""

import pytest
from fastapi.testclient import TestClient

from api import Settings, create_app
from api.deps import get_settings
from curator.formats import Limits


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


def test_headers_are_capped_and_encoded_bodies_need_a_length(client):
    assert client.get("/healthz", headers={f"x-h{i}": "1" for i in range(200)}).status_code == 431
    assert client.get("/healthz", headers={"x-big": "a" * 100_000}).status_code == 431
    chunks = iter([b'{"params": {}, ', b'"embeddings": [[1.0]]}'])
    r = client.post("/curate", content=chunks, headers={"content-type": "application/json",
                                                        "transfer-encoding": "gzip, chunked"})
    assert r.status_code == 411


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


def test_the_ui_page_and_its_assets_ship_in_the_package(client):
    page = client.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and "/ui/app.js" in page.text
    for asset in ("/ui/app.js", "/ui/style.css"):
        body = client.get(asset).text
        assert "http://" not in body and "https://" not in body  # no CDN, no other host


def test_answers_carry_security_headers_and_the_ui_a_content_security_policy(client):
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    for r in (page, client.get("/healthz"), client.get("/jobs")):
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
