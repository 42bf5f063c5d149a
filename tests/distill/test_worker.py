"""Distillation jobs over the service: a worker dies mid-job, its lease runs out, another retakes it."""
import os
import signal
import subprocess
import sys
import time

import pytest

from curator.client import CuratorClient, ServiceError
from helpers import CURATE, REPO, WORKER, Server, make_image_folder

pytestmark = pytest.mark.network_local  # starts a loopback HTTP server


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_index):
    root = tmp_path_factory.mktemp("work")
    make_image_folder(root / "labelled", 30, classes=3, seed=8)
    tiny_index(60, classes=3, seed=9, into=root)
    srv = Server(root / "index", root / "state").start()
    yield root, srv
    srv.stop()


def job_config(tiny_clip_spec, steps_b=6):
    return {"teacher": tiny_clip_spec, "student": "resnet18", "student_size": 32, "labels_per_class": 5,
            "val_per_class": 2, "steps_a": 4, "steps_b": steps_b, "steps_c": 4, "batch_size": 8, "ckpt_every": 2}


def lease_runs_out(srv, job_id: str) -> None:
    """The test's clock: the job's lease is made to have run out now, rather than waited for (a
    5-second lease, renewed every 1.7 s, ran out 5.5 s after its worker was killed)."""
    from api.database import open_database

    db = open_database(None, srv.data_dir / "curator.sqlite3")
    try:
        db.execute("UPDATE distill_jobs SET lease_expires = ? WHERE id = ?", (time.time() - 1, job_id))
    finally:
        db.close()


def worker_cmd(srv, work, *extra):
    return [sys.executable, "-m", "curator.cli", "worker", "--api", srv.url, "--token", WORKER, "--work-dir",
            str(work), "--lease", "5", "--poll", "0.2", *extra]


def test_dead_worker_loses_its_lease_and_the_job_is_retaken(setup, tiny_clip_spec):
    root, srv = setup
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with CuratorClient(srv.url, CURATE) as client, CuratorClient(srv.url, WORKER) as fleet:
        images = sorted((root / "labelled" / "class0").glob("*"))[:3]
        ts = client.wait(client.curate(images, {"per_query": 6, "dedup": 1.0, "exclude_threshold": 1.0}).id)
        job = client.submit_distill_job(ts.transfer_set_id, str(root / "labelled"),
                                        job_config(tiny_clip_spec, steps_b=3000))
        assert job.state == "queued"
        first = subprocess.Popen(worker_cmd(srv, root / "w1", "--name", "w1"), cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and client.distill_job(job.id).state != "running":
            time.sleep(0.1)
        assert client.distill_job(job.id).worker == "w1"
        assert fleet.claim_distill_job("w-other", 5) is None  # never two workers on one job
        first.send_signal(signal.SIGKILL)
        first.wait()
        lease_runs_out(srv, job.id)
        retake = fleet.claim_distill_job("w2", 5)
        assert retake.id == job.id and retake.attempts == 2
        with pytest.raises(ServiceError) as exc:  # the dead worker's name is no credential: its lease is gone
            fleet.finish_distill_job(job.id, "w1", "succeeded", "a-forged-or-stale-token")
        assert exc.value.status == 409
        fleet.finish_distill_job(job.id, "w2", "failed", retake.lease_token, error="the test is over")


def test_worker_runs_a_job_to_completion(setup, tiny_clip_spec):
    root, srv = setup
    with CuratorClient(srv.url, CURATE) as client, CuratorClient(srv.url, WORKER) as fleet:
        images = sorted((root / "labelled" / "class1").glob("*"))[:3]
        ts = client.wait(client.curate(images, {"per_query": 6, "dedup": 1.0, "exclude_threshold": 1.0}).id)
        while fleet.claim_distill_job("drain", 3600):  # earlier tests' jobs must not be picked up here
            pass
        job = client.submit_distill_job(ts.transfer_set_id, str(root / "labelled"), job_config(tiny_clip_spec))
        done = subprocess.run(worker_cmd(srv, root / "w3", "--once", "--name", "w3"), cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        final = client.distill_job(job.id)
        assert final.state == "succeeded" and final.worker == "w3", final.error
        assert final.report.stages["b"].steps == 6 and os.path.exists(final.student_url)
        for hostile in ({"out": "/etc"}, {"cache_dir": "/etc"}, {"device": "cuda"}):  # the worker's own
            with pytest.raises(ServiceError) as exc:
                client.submit_distill_job(ts.transfer_set_id, "x", hostile)
            assert exc.value.status == 422


def test_a_failed_job_makes_a_once_worker_exit_non_zero_with_the_reason(setup, tiny_clip_spec):
    root, srv = setup
    with CuratorClient(srv.url, CURATE) as client:
        images = sorted((root / "labelled" / "class2").glob("*"))[:2]
        ts = client.wait(client.curate(images, {"per_query": 4, "dedup": 1.0, "exclude_threshold": 1.0}).id)
        job = client.submit_distill_job(ts.transfer_set_id, str(root / "no-such-folder"), job_config(tiny_clip_spec))
        done = subprocess.run(worker_cmd(srv, root / "w4", "--once", "--name", "w4"), cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
        assert done.returncode == 1 and job.id in done.stderr and "no-such-folder" in done.stderr
        assert client.distill_job(job.id).state == "failed"
