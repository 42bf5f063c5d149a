"""Resource safety on a real server (issue "Security and resource safety", section 5): uploads are
streamed to disk, not held in memory, and cancelled jobs give their workers back at once."""
import json
import resource
import signal
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers import CURATE, TINY_CLIP, Server, pattern_image, png_bytes, tiny_server
from index_builder import BuildConfig, build_index

pytestmark = [pytest.mark.slow, pytest.mark.network_local]
AUTH = {"Authorization": f"Bearer {CURATE}"}
FINAL = ("succeeded", "failed", "cancelled")


#: An untrained open_clip ViT slow enough (~8 ms a view on 2 cores) that a job of 40 queries x 17 views
#: takes seconds: long enough to cancel while it runs, as a real CLIP job would be.
MEDIUM_CLIP = {"embed_dim": 64, "vision_cfg": {"image_size": 160, "layers": 4, "width": 256, "patch_size": 16,
                                               "head_width": 64}, "text_cfg": TINY_CLIP["text_cfg"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_index):
    root = tmp_path_factory.mktemp("resources")
    (root / "medium-clip.json").write_text(json.dumps(MEDIUM_CLIP))
    srv = tiny_server(tiny_index(30, seed=71, encoder=f"open_clip:{root / 'medium-clip.json'}/none"), root)
    yield srv
    srv.stop()


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def padded_png(size: int) -> bytes:
    """A valid 64 x 64 PNG of ``size`` bytes: an unknown public ancillary chunk after IHDR (decoders skip
    it; PIL would keep a *private* one, lower-case second letter, on the image)."""
    png = png_bytes(pattern_image(7, 64))
    pad = size - len(png) - 12
    chunk = struct.pack(">I", pad) + b"uNKn" + b"\0" * pad + struct.pack(">I", zlib.crc32(b"uNKn" + b"\0" * pad))
    return png[:33] + chunk + png[33:]


def wait_state(url: str, job_id: str, states, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{job_id} still {job['state']} after {timeout} s")


def test_concurrent_large_uploads_do_not_grow_server_memory(server):
    """4 concurrent requests of 4 x 20 MB files (the reported attack used 12): held in memory they
    would add about 320 MB; streamed to disk, the server's peak RSS grows by well under 150 MB. Each
    file is a valid 64 x 64 PNG padded to 20 MB with a private chunk, so decoding costs nothing and the
    request path is what is measured."""
    body = padded_png(20_000_000)
    files = [("files", (f"f{i}.png", body, "image/png")) for i in range(4)]
    warm = httpx.post(server.url + "/curate?wait=true", headers=AUTH, files=files[:1], timeout=120,
                      data={"params": json.dumps({"per_query": 2})})  # torch and the encoder load on first use
    assert warm.json()["state"] == "succeeded", warm.text
    before = peak_rss_mb(server.proc.pid)

    def upload(_):
        return httpx.post(server.url + "/curate", headers=AUTH, files=files,
                          data={"params": json.dumps({"per_query": 2})}, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(upload, range(4)))
    assert [r.status_code for r in answers] == [202] * 4, answers[0].text
    for r in answers:
        assert wait_state(server.url, r.json()["id"], FINAL, 60)["state"] == "succeeded"
    grown = peak_rss_mb(server.proc.pid) - before
    assert grown < 150, f"peak RSS grew {grown:.0f} MB for 320 MB of uploads"


def test_cancelled_jobs_give_their_workers_back_at_once(server):
    """Two long jobs fill both workers; cancelling them frees the workers for a new job within
    seconds (before cooperative cancel, the new job waited for both to finish)."""
    files = [("files", (f"q{i}.png", png_bytes(pattern_image(i, 320)), "image/png")) for i in range(40)]
    long_jobs = [httpx.post(server.url + "/curate", headers=AUTH, files=files, timeout=120,
                            data={"params": json.dumps({"per_query": 2, "crops": 16})}).json()["id"]
                 for _ in range(2)]
    for job_id in long_jobs:
        wait_state(server.url, job_id, ("running",), 30)
    t0 = time.perf_counter()
    for job_id in long_jobs:
        assert httpx.delete(f"{server.url}/jobs/{job_id}", headers=AUTH).status_code == 200
    vector = [1.0] + [0.0] * (MEDIUM_CLIP["embed_dim"] - 1)
    r = httpx.post(server.url + "/curate?wait=true", headers=AUTH, timeout=60,
                   json={"params": {"per_query": 2}, "embeddings": [vector]})
    waited = time.perf_counter() - t0
    assert r.json()["state"] == "succeeded", r.text
    assert waited < 5, f"a new job waited {waited:.1f} s behind two cancelled ones"
    for job_id in long_jobs:
        assert wait_state(server.url, job_id, FINAL, 10)["state"] == "cancelled"


def file_size_limit(limit: int):
    """For the server process: no file may grow past ``limit`` bytes, and a write that would gets an
    error (EFBIG) instead of the default SIGXFSZ: the disk is full, as far as the server can tell."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def test_a_full_disk_fails_the_job_with_its_reason_and_the_server_stays_up(tiny_clip_spec, tmp_path):
    rng = np.random.default_rng(5)
    for i in range(16):  # noise PNGs of about 77 KB: a copied set of them outgrows the limit below
        path = tmp_path / "pool" / f"c{i % 2}" / f"n{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(path)
    build_index([str(tmp_path / "pool")], tmp_path / "index", BuildConfig(encoder=tiny_clip_spec, workers=0,
                                                                           progress=False))
    srv = Server(tmp_path / "index", tmp_path / "state", preexec=file_size_limit(1 << 20)).start()
    try:
        vector = [1.0] + [0.0] * (TINY_CLIP["embed_dim"] - 1)
        body = {"params": {"per_query": 16, "dedup": 1, "exclude_threshold": 1, "materialize": "copy"},
                "embeddings": [vector]}
        job = httpx.post(srv.url + "/curate?wait=true", headers=AUTH, json=body, timeout=60).json()
        assert job["state"] == "failed" and "disk is full" in job["error"], job
        sets = srv.data_dir / "transfer-sets"
        assert not list(sets.iterdir())  # no set, and no half-written one
        body["params"]["materialize"] = "reference"  # a few KB: fits
        job = httpx.post(srv.url + "/curate?wait=true", headers=AUTH, json=body, timeout=60).json()
        assert job["state"] == "succeeded", job
        assert httpx.get(srv.url + "/healthz").status_code == 200
    finally:
        srv.stop()
