"""Several `curator serve` replicas on one real PostgreSQL: a job is claimed once, and a killed
replica's job is finished by another, exactly once."""
from __future__ import annotations

import hashlib
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from api import Settings, create_app
from api.database import open_database
from api.store import Store
from curator.errors import CuratorError
from curator.retrieval import PoolIndex
from helpers import CURATE, Server

pytestmark = [pytest.mark.slow, pytest.mark.network_local]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite3'}"
    return request.getfixturevalue("postgres").database()


def test_concurrent_claims_hand_each_job_out_once(database_url, tmp_path):
    """Two stores (two replicas' connections), six threads each, racing for 120 jobs of each kind."""
    stores = [Store(open_database(database_url, tmp_path / "unused")) for _ in range(2)]
    jobs = {stores[0].create_job("curate", {}, None)[0] for _ in range(120)}
    distill = {stores[1].create_distill_job({}, "ts-x", None) for _ in range(120)}
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(n: int) -> None:
        store = stores[n % 2]
        while True:
            row = store.claim_job(f"r{n}", 60) or store.claim_distill_job(f"r{n}", 60, None)
            if row is None:
                return
            with lock:
                claimed.append(getattr(row, "job", row).id)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(drain, range(12)))
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert set(claimed) == jobs | distill


def test_a_job_whose_lease_lapsed_while_it_ran_here_is_not_run_twice(tmp_path):
    """A stall past the lease (a loaded machine) lets this replica claim its own running job again:
    that claim renews the lease and must not start a second run, whose resume step would delete the
    first run's half-written set and fail it."""
    from api.jobs import JobRunner

    settings = Settings(index_dir=tmp_path / "index", data_dir=tmp_path, replica="r1", job_workers=2)
    store = Store(open_database(f"sqlite:///{tmp_path / 'state.sqlite3'}", tmp_path))
    job_id = store.create_job("curate", {}, None)[0]
    runner = JobRunner(settings, store, pool=None)
    started: list[str] = []
    runner.executor = type("Record", (), {"submit": lambda self, fn, job: started.append(job.id)})()
    assert runner._claim(30.0) and started == [job_id]
    store.db.execute("UPDATE jobs SET lease_expires = 0 WHERE id = ?", (job_id,))  # the stall
    assert runner._claim(30.0)
    assert started == [job_id], "the job was started a second time"
    job = store.get_job(job_id)
    assert job.state == "running" and job.worker == "r1" and job.lease_expires > time.time()


def test_a_bad_database_url_is_a_clear_error_that_hides_the_password(tiny_index, tmp_path):
    settings = Settings(index_dir=tiny_index(40, classes=2, seed=7), data_dir=tmp_path / "data", no_auth=True,
                        database="postgresql://curator:s3cret@127.0.0.1:1/nowhere")
    with pytest.raises(CuratorError, match="--database") as err:
        create_app(settings)
    assert "s3cret" not in str(err.value)
    with pytest.raises(CuratorError, match="--database"):
        open_database("mysql://x", tmp_path / "db")


def test_replicas_share_the_queue_and_a_killed_replicas_job_completes_elsewhere(postgres, tiny_index, tmp_path):
    import psycopg

    url = postgres.database()
    index = tiny_index(40, classes=2, seed=7)
    vectors = PoolIndex.open(index).vectors(np.arange(10)).tolist()
    flags = ("--database", url, "--job-workers", "1", "--job-lease-seconds", "2")
    replicas = [Server(index, tmp_path / "state", *flags, "--replica", name) for name in ("a", "b")]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(Server.start, replicas))
    a, b = replicas
    db = psycopg.connect(url, autocommit=True)
    try:
        submitted = _submit(replicas, vectors, 16)
        assert {_final(replicas[0], j)["state"] for j in submitted} == {"succeeded"}
        # a job caught running on replica a: freeze a there (it cannot finish), then kill it
        for attempt in range(20):
            job_id = _submit([a], vectors, 1, per_query=30)[0]
            if _caught_running(db, job_id, "a"):
                a.proc.send_signal(signal.SIGSTOP)
                if _row(db, job_id)[:2] == ("running", "a"):
                    break
                a.proc.send_signal(signal.SIGCONT)
        else:
            pytest.fail("never caught a job running on replica a")
        a.stop(signal.SIGKILL)
        done = _final(b, job_id, timeout=60)
        assert done["state"] == "succeeded", done
        state, worker, attempts = _row(db, job_id)
        assert (worker, attempts) == ("b", 2)
        sets = db.execute("SELECT id, manifest_sha256 FROM transfer_sets WHERE job_id = %s", (job_id,)).fetchall()
        assert len(sets) == 1  # made once
        folder = tmp_path / "state" / "transfer-sets" / sets[0][0]
        assert hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest() == sets[0][1]
        assert not list(folder.parent.glob(f".{sets[0][0]}.tmp-*"))  # a's half-written set is gone
        total = db.execute("SELECT COUNT(*), COUNT(DISTINCT transfer_set_id) FROM jobs WHERE state = 'succeeded'"
                           ).fetchone()
        assert total[0] == total[1] == len(submitted) + attempt + 1  # every job once: none lost or repeated
    finally:
        db.close()
        for server in replicas:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)
            server.stop()


def _submit(replicas: list[Server], vectors: list, n: int, per_query: int = 6) -> list[str]:
    """``n`` jobs from 4 concurrent clients, round-robin over the replicas (one address in front of them)."""
    def one(i: int) -> str:
        server = replicas[i % len(replicas)]
        body = {"params": {"per_query": per_query, "seed": i}, "embeddings": [vectors[i % 10], vectors[(i + 3) % 10]]}
        r = httpx.post(server.url + "/curate", json=body, headers={"Authorization": f"Bearer {CURATE}"}, timeout=30)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def _final(server: Server, job_id: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{server.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {CURATE}"}).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"{job_id} still {job['state']} after {timeout} s")


def _row(db, job_id: str) -> tuple:
    return db.execute("SELECT state, worker, attempts FROM jobs WHERE id = %s", (job_id,)).fetchone()


def _caught_running(db, job_id: str, worker: str, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state, owner, _ = _row(db, job_id)
        if (state, owner) == ("running", worker):
            return True
        if state not in ("queued", "running"):
            return False
    return False


def test_start_up_cleanup_keeps_young_inputs_whose_job_is_not_queued_yet(tmp_path):
    """A request puts its inputs under the job's id before it queues the job (a queued job can be claimed
    at once), so a folder without a job may be another replica's request in flight: only a stale one goes."""
    import os

    from api.jobs import STALE_SECONDS, clean_uploads
    from api.store import new_job_id

    store = Store(open_database(f"sqlite:///{tmp_path / 'state.sqlite3'}", tmp_path))
    uploads = tmp_path / "uploads"
    queued = store.create_job("curate", {}, None, job_id=new_job_id())[0]
    over = store.create_job("curate", {}, None)[0]
    store.finish_job(over, "succeeded")
    young, old, staging = new_job_id(), new_job_id(), ".tmp-abc"
    for name in (queued, over, young, old, staging):
        (uploads / name).mkdir(parents=True)
    for name in (old, staging):
        past = time.time() - STALE_SECONDS - 60
        os.utime(uploads / name, (past, past))
    assert clean_uploads(uploads, store) == 3
    assert sorted(p.name for p in uploads.iterdir()) == sorted([queued, young])
