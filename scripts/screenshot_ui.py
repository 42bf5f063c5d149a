"""Screenshots of the web UI on real images (Debian's Tux Paint stamps, real ImageNet weights), as a
person would see it: the search page, a curation, and the set view. Writes PNGs to --out.

    .venv/bin/python scripts/screenshot_ui.py --out docs/img

Needs Debian's chromium (scripts/system-deps.sh) and the test extra (playwright)."""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CURATOR = [sys.executable, "-m", "curator.cli"]
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
CATEGORIES = ("animals", "food", "vehicles")


def samples() -> Path:
    out = subprocess.run(CURATOR + ["samples", "fetch"], check=True, capture_output=True, text=True).stdout
    return Path(out.strip().split()[-1])


def serve(work: Path, key: str, port: int) -> subprocess.Popen:
    (work / "keys.txt").write_text(f"shots:curate:{key}\n")
    proc = subprocess.Popen(CURATOR + ["serve", "--index", str(work / "index"), "--data", str(work / "data"),
                                       "--api-keys", str(work / "keys.txt"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not come up")


def shoot(url: str, key: str, pool: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    queries = [str(pool / "animals" / "amphibians__frog.png"), str(pool / "food" / "dessert__cartoon__pink_cake.png"),
               str(pool / "vehicles" / "auto__beetle.png")]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.fill("#key", key)
        page.click("#key-form button")
        page.set_input_files("#search-files", queries[0])
        page.fill("#search-k", "12")
        page.click("#search-image button")
        page.wait_for_selector("#search-results .card img[src^='blob:']")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "ui-search.png"))
        page.goto(url + "/#curate")
        page.wait_for_selector("#curate-params [name=per_query]")
        page.set_input_files("#curate-files", queries)
        page.fill("#curate-labels", "animals, food, vehicles")
        page.fill("#curate-params [name=per_query]", "8")
        page.click("#curate-form button[type=submit]")
        page.wait_for_selector(".open-set", timeout=120_000)
        page.screenshot(path=str(out / "ui-curate.png"))
        page.click(".open-set")
        page.wait_for_selector("#set-queries .query-row")
        page.wait_for_timeout(1000)
        page.locator("#set-queries").scroll_into_view_if_needed()
        page.wait_for_timeout(2500)
        page.screenshot(path=str(out / "ui-set.png"))
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "ui-set-top.png"))
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/img", help="folder for the PNGs (default: %(default)s)")
    ap.add_argument("--port", type=int, default=8767, help="loopback port for the server (default: %(default)s)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = samples()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(CURATOR + ["build-index", "--input", *[str(pool / c) for c in CATEGORIES], "--out",
                                  str(work / "index"), "--encoder", "packaged:efficientnet-lite0", "-q"], check=True)
        key = secrets.token_hex(16)
        server = serve(work, key, args.port)
        try:
            shoot(f"http://127.0.0.1:{args.port}", key, pool, out)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('ui-*.png')))} to {out}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
