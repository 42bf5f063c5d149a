"""Curation jobs: their state, and cancelling them."""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Query

from curator.formats.protocol import ACTIVE_STATES

from ..deps import CurateKey, ReadKey, RunnerDep, StoreDep, check_owner, owner_filter, readable
from ..schemas import ERRORS, JobOut, job_out

router = APIRouter(tags=["jobs"], responses=ERRORS)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, key: ReadKey, store: StoreDep) -> JobOut:
    return job_out(readable(key, store.get_job(job_id), f"job {job_id!r}"))


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(key: ReadKey, store: StoreDep, state: Annotated[Optional[str], Query()] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobOut]:
    return [job_out(j) for j in store.list_jobs(state, limit, owner_filter(key))]


@router.delete("/jobs/{job_id}", response_model=JobOut)
def cancel_job(job_id: str, key: CurateKey, store: StoreDep, runner: RunnerDep) -> JobOut:
    job = readable(key, store.get_job(job_id), f"job {job_id!r}")
    check_owner(key, job, f"job {job_id!r}")
    if job.state in ACTIVE_STATES:
        runner.cancel(job_id)
    return job_out(store.get_job(job_id))
