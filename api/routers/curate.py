"""POST /curate: start a curation job from target images or embeddings."""
from __future__ import annotations

import asyncio
import os
import shutil
import uuid

from typing import Annotated, Optional

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from curator.queries import text_queries
from curator.retrieval import PoolIndex

from ..deps import CurateKey, EncoderLockDep, PoolDep, RunnerDep, SettingsDep, StoreDep
from ..jobs import save_inputs
from ..schemas import ERRORS, CurateForm, CurateRequest, JobOut, job_out
from ..store import new_job_id
from ..uploads import read_curate_request

router = APIRouter(tags=["curation"], responses=ERRORS)
#: A retried request carrying the same key gets the job the first one made, never a second job.
IdempotencyKey = Annotated[Optional[str], Header(alias="Idempotency-Key", min_length=1, max_length=128,
                                                 pattern=r"^[A-Za-z0-9._:-]+$",
                                                 description="any unique string per request, e.g. a UUID: a retry "
                                                             "with the same key returns the same job")]
BODIES = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": CurateForm.model_json_schema()},
    "application/json": {"schema": CurateRequest.model_json_schema()}}}}


@router.post("/curate", status_code=202, response_model=JobOut, openapi_extra=BODIES,
             summary="Curate a transfer set from target images (multipart or JSON)")
async def post_curate(request: Request, key: CurateKey, settings: SettingsDep, store: StoreDep, pool: PoolDep,
                      runner: RunnerDep, lock: EncoderLockDep, wait: bool = False,
                      idempotency_key: IdempotencyKey = None) -> JSONResponse:
    # the inputs are stored and put in place first, the job row second: a queued job can be claimed at
    # once, and a crash in between leaves no job whose inputs never arrived (only a folder without a
    # job, removed at start-up once stale)
    staging = settings.uploads_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        queries, vectors, params, files = await read_curate_request(request, settings.limits, pool.manifest.dim,
                                                                    staging, texts_embedder(pool, lock))
        await asyncio.to_thread(save_inputs, staging, queries, vectors, files)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a refused request leaves nothing behind
        raise
    inputs = settings.uploads_dir / new_job_id()
    os.replace(staging, inputs)
    try:
        job_id, new = store.create_job("curate", params.model_dump(), key.name if key else None, idempotency_key,
                                       job_id=inputs.name)
    except BaseException:
        shutil.rmtree(inputs, ignore_errors=True)
        raise
    if new:
        runner.submit(job_id)
    else:  # a retry of a request already taken: its job stands, these inputs are not needed
        shutil.rmtree(inputs, ignore_errors=True)
        if store.get_job(job_id).params != params.model_dump():
            raise HTTPException(422, "Idempotency-Key was already used for a request with other params")
    if wait:
        await runner.wait(job_id, settings.wait_seconds)
    job = job_out(store.get_job(job_id))
    return JSONResponse(job.model_dump(mode="json"), status_code=202 if job.active else 200,
                        headers={"Location": f"/jobs/{job_id}"})


def texts_embedder(pool: PoolIndex, lock):
    """Text queries embedded at submit (a text tower is cheap): the job then runs on vectors."""
    def embed(texts: list[str], labels: list):
        with lock:
            return text_queries(pool.encoder(), texts, labels)
    return embed
