"""Distillation jobs: submitted with a validated config, claimed by workers under a lease."""
from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from curator.formats import MACHINE_FIELDS, DistillConfig, describe_errors

from ..deps import CurateKey, ReadKey, SettingsDep, StoreDep, WorkerKey, check_owner, owner_filter, readable, reject
from curator.formats.protocol import ClaimOut, DistillJobIn, DistillJobOut, FinishIn, HeartbeatIn, LeaseIn

from ..schemas import ERRORS, OkOut, distill_job_out
from .transfer_sets import set_folder

router = APIRouter(tags=["distillation"], responses=ERRORS)
#: Free-form fields are bounded: a job's config, and the report every listing of jobs shows.
MAX_CONFIG_BYTES, MAX_REPORT_BYTES = 64 << 10, 1 << 20


def validate_config(body: DistillJobIn) -> dict:
    """The job's config as a worker will run it, checked now: a typo is a 422 naming the key."""
    if len(json.dumps(body.config)) > MAX_CONFIG_BYTES:
        raise reject(413, f"config exceeds {MAX_CONFIG_BYTES} bytes")
    forbidden = MACHINE_FIELDS & set(body.config)  # the worker's own: its files, hardware, credentials
    if forbidden:
        raise reject(422, f"config may not set {sorted(forbidden)}: the worker fills them in")
    try:
        DistillConfig(**body.config, labelled=body.labelled, transfer="job", out="job")
    except ValidationError as exc:
        raise reject(422, f"invalid distill config: {describe_errors(exc)}")
    return dict(body.config, labelled=body.labelled)


@router.post("/distill-jobs", status_code=201, response_model=DistillJobOut)
def post_distill_job(body: DistillJobIn, key: CurateKey, store: StoreDep, settings: SettingsDep) -> DistillJobOut:
    config = validate_config(body)
    set_folder(body.transfer_set_id, store, settings, key)  # 404 unless the set exists and is the caller's
    job_id = store.create_distill_job(config, body.transfer_set_id, key.name if key else None)
    return distill_job_out(store.get_distill_job(job_id))


@router.get("/distill-jobs/{job_id}", response_model=DistillJobOut)
def get_distill_job(job_id: str, key: ReadKey, store: StoreDep) -> DistillJobOut:
    return distill_job_out(readable(key, store.get_distill_job(job_id), f"distillation job {job_id!r}"))


@router.delete("/distill-jobs/{job_id}", response_model=DistillJobOut)
def cancel_distill_job(job_id: str, key: CurateKey, store: StoreDep) -> DistillJobOut:
    """Cancel a queued or running job: its worker's next heartbeat is refused, and it stops."""
    check_owner(key, readable(key, store.get_distill_job(job_id), f"distillation job {job_id!r}"),
                f"distillation job {job_id!r}")
    store.cancel_distill_job(job_id)
    return distill_job_out(store.get_distill_job(job_id))


@router.get("/distill-jobs", response_model=list[DistillJobOut])
def list_distill_jobs(key: ReadKey, store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DistillJobOut]:
    return [distill_job_out(j) for j in store.list_distill_jobs(limit, owner_filter(key))]


@router.post("/distill-jobs/claim", response_model=ClaimOut, responses={204: {"description": "queue empty"}})
def claim_distill_job(body: LeaseIn, key: WorkerKey, store: StoreDep) -> Response:
    """The next job whose config a worker can run; a stored config that no longer validates (saved by an
    older server) fails with the reason instead of blocking the queue."""
    while claimed := store.claim_distill_job(body.worker, body.lease_seconds, key.name if key else None):
        job = claimed.job
        try:
            if not isinstance(job.config, dict):
                raise TypeError(f"the stored config is a {type(job.config).__name__}, not an object")
            DistillConfig(**{k: v for k, v in job.config.items() if k != "labelled"}, labelled="job",
                          transfer="job", out="job")
        except (ValidationError, TypeError) as exc:
            reason = describe_errors(exc) if isinstance(exc, ValidationError) else str(exc)
            store.fail_distill_job(job.id, f"invalid distill config: {reason}")
            continue
        return JSONResponse(distill_job_out(job, claimed.lease_token).model_dump(mode="json"), status_code=200)
    return Response(status_code=204)


@router.post("/distill-jobs/{job_id}/heartbeat", response_model=OkOut)
def heartbeat(job_id: str, body: HeartbeatIn, key: WorkerKey, store: StoreDep) -> OkOut:
    if not store.heartbeat_distill_job(job_id, body.lease_token, key.name if key else None, body.lease_seconds):
        raise reject(409, f"this caller no longer holds {job_id!r} (lease lost, expired or never held): stop "
                          f"working on it")
    return OkOut()


@router.post("/distill-jobs/{job_id}/finish", response_model=DistillJobOut)
def finish(job_id: str, body: FinishIn, key: WorkerKey, store: StoreDep) -> DistillJobOut:
    report = body.report.model_dump(mode="json", by_alias=True) if body.report else None
    if report is not None and len(json.dumps(report)) > MAX_REPORT_BYTES:
        raise reject(413, f"report exceeds {MAX_REPORT_BYTES} bytes: every listing shows it")
    ok = store.finish_distill_job(job_id, body.lease_token, key.name if key else None, body.state,
                                  report=report,
                                  student_url=body.student_url, error=body.error)
    if not ok:
        raise reject(409, f"this caller does not hold a live lease on {job_id!r}; its result was not recorded")
    return distill_job_out(store.get_distill_job(job_id))
