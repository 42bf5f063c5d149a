"""The web UI in a real browser: Debian's chromium, headless, driven by playwright pointed at the
system binary (no browser download). Every request the page makes must stay on the server."""
import os
import shutil
from pathlib import Path

import httpx
import pytest

from helpers import CURATE, WORKER, distill_report, make_image_folder, tiny_server

pytestmark = [pytest.mark.slow, pytest.mark.network_local, pytest.mark.browser]
CHROMIUM = os.environ.get("CURATOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium binary: apt-get install chromium (CI installs it; see scripts/system-deps.sh)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
#: Chromium without its phoning home: this machine's network is closed, and a test must not depend on it.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ALL_LOADED = """sel => { const imgs = [...document.querySelectorAll(sel)];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"""


@pytest.fixture(scope="module")
def server(tiny_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    srv = tiny_server(tiny_index(40, seed=81), root, "--public-docs")
    srv.queries = make_image_folder(root / "queries", 3, classes=3, seed=82)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server, tmp_path, request):
    """A fresh tab with the API key entered. After the test: a screenshot (CURATOR_SCREENSHOTS=DIR keeps
    them), and the test fails if the page is blank, logged a console error, or asked any other host."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    foreign, errors = [], []
    tab.on("request", lambda r: foreign.append(r.url) if not r.url.startswith((server.url, "blob:", "data:")) else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    tab.goto(server.url + "/")
    tab.fill("#key", CURATE)
    tab.click("#key-form button")
    yield tab
    shots = Path(os.environ.get("CURATOR_SCREENSHOTS", tmp_path))
    tab.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
    text = tab.evaluate("document.body.innerText.trim()")
    context.close()
    assert len(text) > 40, "the page is blank"
    assert not foreign, f"the page asked other hosts: {foreign[:5]}"
    assert not errors, f"console errors: {errors}"


def test_search_by_uploaded_image_shows_thumbnails_that_load(page, server):
    page.goto(server.url + "/#search")
    page.set_input_files("#search-files", str(server.queries[0]))
    page.click("#search-image button")
    page.wait_for_function(ALL_LOADED, arg="#search-results .card img", timeout=30_000)
    cards = page.locator("#search-results .card")
    assert cards.count() == 24
    first = cards.first.get_attribute("data-id")
    cards.first.click()  # a result searches from itself
    page.wait_for_selector(f"#search-results h3:has-text('pool item #{first}')", timeout=30_000)
    page.wait_for_function(ALL_LOADED, arg="#search-results .card img", timeout=30_000)


def test_search_by_text(page, server):
    page.goto(server.url + "/#search")
    page.fill("#search-query", "a red square")
    page.click("#search-text button")
    page.wait_for_function(ALL_LOADED, arg="#search-results .card img", timeout=30_000)
    assert "a red square" in page.inner_text("#search-results h3")


def test_curation_from_the_form_finishes_and_its_set_shows_each_query(page, server):
    page.goto(server.url + "/#curate")
    page.wait_for_selector("#curate-params [name=per_query]")
    page.set_input_files("#curate-files", [str(p) for p in server.queries])
    page.fill("#curate-params [name=per_query]", "4")
    page.fill("#curate-params [name=exclude_threshold]", "1")  # an untrained encoder finds everything alike
    page.fill("#curate-params [name=dedup]", "1")
    page.click("#curate-form button[type=submit]")
    page.wait_for_selector(".open-set", timeout=60_000)
    assert "succeeded" in page.inner_text(".job-state")
    set_id = page.get_attribute(".open-set", "href").split("/")[-1]
    page.click(".open-set")
    page.wait_for_selector(".query-row", timeout=30_000)
    manifest = httpx.get(f"{server.url}/transfer-sets/{set_id}/manifest", headers={"Authorization": f"Bearer {CURATE}"})
    taken = [q["taken"] for q in manifest.json()["queries"]]
    shown = [page.locator(f"#set-queries .query-row:nth-child({i + 1}) .taken .card").count() for i in range(len(taken))]
    assert shown == taken == [4, 4, 4]
    page.wait_for_function(ALL_LOADED, arg=".query-row:first-child img", timeout=30_000)
    assert page.locator(".query-row .taken .card").count() == 12
    page.locator(".query-row").last.scroll_into_view_if_needed()  # thumbnails load as they come into view
    page.wait_for_function(ALL_LOADED, arg=".query-row img", timeout=30_000)
    assert page.locator("#map").count() == 1 and page.locator(".shard-link").count() >= 1
    page.goto(server.url + "/#jobs")
    page.wait_for_selector("#jobs-list td.state:has-text('succeeded')")


def test_api_docs_render_offline(page, server):
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    assert page.locator(".opblock").count() > 10


def test_distill_jobs_show_their_state_and_accuracy_per_stage(page, server):
    auth = {"Authorization": f"Bearer {CURATE}"}
    vector = [1.0] + [0.0] * 31
    done = httpx.post(server.url + "/curate?wait=true", headers=auth, timeout=60,
                      json={"params": {"per_query": 2}, "embeddings": [vector]}).json()
    job = httpx.post(server.url + "/distill-jobs", headers=auth,
                     json={"transfer_set_id": done["transfer_set_id"], "labelled": "/data/target"}).json()
    fleet = {"Authorization": f"Bearer {WORKER}"}
    lease = httpx.post(server.url + "/distill-jobs/claim", headers=fleet, json={"worker": "w1"}).json()
    report = distill_report(teacher_test=0.625, student_test=0.5)
    r = httpx.post(f"{server.url}/distill-jobs/{job['id']}/finish", headers=fleet,
                   json={"worker": "w1", "lease_token": lease["lease_token"], "state": "succeeded", "report": report})
    assert r.status_code == 200, r.text
    page.goto(server.url + "/#distill")
    row = page.locator(f"#distill-list tr:has-text('{job['id']}')")
    row.wait_for(timeout=30_000)
    text = row.inner_text()
    assert "succeeded" in text and "test 62.5%" in text and "test 40.0%" in text and "test 50.0%" in text
