"""Distillation jobs in process: configs checked at submit, leases, cancelling."""
import base64
from helpers import INPROC_OTHER as OTHER
from helpers import distill_report, pattern_image, png_bytes



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
