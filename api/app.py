"""The FastAPI service: typed endpoints over the curation engine and the SQLite store."""

import asyncio
import base64
import binascii
import json
import logging
import re
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query as Q, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError

from curator.errors import BadImageError, CuratorError
from curator.formats import CurateParams
from curator.images import decode_image
from curator.queries import Query
from curator.retrieval import PoolIndex

from .auth import ApiKey, KeyRing
from .jobs import JobRunner, save_inputs
from .metrics import Metrics
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)
SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ImageIn(BaseModel):
    name: str = Field(max_length=256)
    data: str = Field(description="base64-encoded image bytes")
    label: Optional[str] = Field(None, max_length=256)


class CurateRequest(BaseModel):
    """JSON form of POST /curate: base64 images, or precomputed embeddings (one per query)."""
    params: CurateParams = Field(default_factory=CurateParams)
    images: Optional[list[ImageIn]] = None
    embeddings: Optional[list[list[float]]] = None
    labels: Optional[list[Optional[str]]] = None


class DistillJobIn(BaseModel):
    """A distillation job: which transfer set, where the labelled set is (as the worker sees it),
    and any ``curator distill`` options (DistillConfig fields except labelled/transfer/out)."""
    transfer_set_id: str = Field(max_length=128)
    labelled: str = Field(max_length=4096)
    config: dict = Field(default_factory=dict)


class ClaimIn(BaseModel):
    worker: str = Field(min_length=1, max_length=128)
    lease_seconds: float = Field(60.0, ge=5.0, le=3600.0)


class FinishIn(BaseModel):
    worker: str = Field(min_length=1, max_length=128)
    state: str = Field(pattern="^(succeeded|failed)$")
    report: Optional[dict] = None
    student_url: Optional[str] = Field(None, max_length=4096)
    error: Optional[str] = Field(None, max_length=8192)


class JobOut(BaseModel):
    id: str
    kind: str
    state: str
    phase: Optional[str] = None
    progress: float = 0.0
    params: dict
    counts: Optional[dict] = None
    error: Optional[str] = None
    transfer_set_id: Optional[str] = None
    transfer_set_url: Optional[str] = None
    created_at: float
    updated_at: float


def _job_out(job: dict) -> JobOut:
    url = f"/transfer-sets/{job['transfer_set_id']}" if job.get("transfer_set_id") else None
    return JobOut(**{k: job[k] for k in JobOut.model_fields if k in job}, transfer_set_url=url)


def reject(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def create_app(settings: Settings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.sets_dir.mkdir(parents=True, exist_ok=True)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    keys = KeyRing.load(settings.api_keys_file)
    if not settings.no_auth and len(keys) == 0:
        raise CuratorError("no API keys configured: pass --api-keys FILE or set CURATOR_API_KEYS "
                           "(name:scopes:secret), or --no-auth for local development")
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = PoolIndex.open(settings.index_dir)
        store = Store(settings.db_path)
        runner = JobRunner(settings, store, pool)
        failed, queued = store.recover()
        if failed:
            log.warning("marked %d interrupted job(s) failed: %s", len(failed), ", ".join(failed))
        for job_id in queued:
            runner.submit(job_id)
        state.update(pool=pool, store=store, runner=runner, encoder_lock=threading.Lock())
        metrics.index_items.set(pool.ntotal)
        yield
        runner.shutdown()

    metrics = Metrics()
    app = FastAPI(title="curator", version="0.1.0", lifespan=lifespan,
                  description="Retrieval-augmented transfer sets for task-oriented knowledge transfer.")

    @app.middleware("http")
    async def bound_and_measure(request: Request, call_next):
        t0 = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.limits.max_request_bytes):
            response = JSONResponse({"detail": f"request body exceeds {settings.limits.max_request_bytes} bytes "
                                               f"(--max-request-bytes)"}, status_code=413)
        elif length is None and request.method in ("POST", "PUT", "PATCH") and \
                request.headers.get("transfer-encoding", "").lower() == "chunked":
            response = JSONResponse({"detail": "chunked uploads are not accepted; send Content-Length"},
                                    status_code=411)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code,
                        time.perf_counter() - t0)
        return response

    def caller(scope: str):
        def check(request: Request) -> Optional[ApiKey]:
            if settings.no_auth:
                return None
            header = request.headers.get("authorization", "")
            if not header.lower().startswith("bearer "):
                raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                                    headers={"WWW-Authenticate": "Bearer"})
            key = keys.lookup(header[7:].strip())
            if key is None:
                raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
            if not key.allows(scope):
                raise HTTPException(403, f"API key {key.name!r} lacks the '{scope}' scope")
            return key
        return check

    Reader = Annotated[Optional[ApiKey], Depends(caller("read"))]
    Curator = Annotated[Optional[ApiKey], Depends(caller("curate"))]

    # -- curation -----------------------------------------------------------------------
    @app.post("/curate", status_code=202, response_model=JobOut,
              summary="Curate a transfer set from target images (multipart or JSON)")
    async def post_curate(request: Request, key: Curator, wait: bool = False) -> JSONResponse:
        queries, vectors, params = await _read_curate_request(request)
        store: Store = state["store"]
        job_id = store.create_job("curate", params.model_dump(), key.name if key else None)
        await asyncio.to_thread(save_inputs, settings.uploads_dir / job_id, queries, vectors)
        runner: JobRunner = state["runner"]
        runner.submit(job_id)
        if wait:
            await asyncio.to_thread(runner.wait, job_id, settings.wait_seconds)
        job = store.get_job(job_id)
        done = job["state"] not in ("queued", "running")
        return JSONResponse(_job_out(job).model_dump(), status_code=200 if done else 202,
                            headers={"Location": f"/jobs/{job_id}"})

    async def _read_curate_request(request: Request) -> tuple[list[Query], Optional[np.ndarray], CurateParams]:
        ctype = request.headers.get("content-type", "")
        limits = settings.limits
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=limits.max_files + 1, max_fields=16, max_part_size=1 << 20)
            except Exception as exc:
                raise reject(400 if "max" not in str(exc).lower() else 413, f"bad multipart body: {exc}")
            params = _parse_params(form.get("params"))
            uploads = [f for f in form.getlist("files") if hasattr(f, "read")]
            labels = _parse_labels(form.get("labels"), len(uploads))
            _check_count(len(uploads))
            blobs = [((upload.filename or f"file{n}")[:256], await upload.read(limits.max_file_bytes + 1))
                     for n, upload in enumerate(uploads)]
            await asyncio.to_thread(_check_images, blobs)  # decoding is CPU work: off the event loop
            return [Query(name, data, labels[n]) for n, (name, data) in enumerate(blobs)], None, params
        if ctype.startswith("application/json"):
            try:
                body = CurateRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise HTTPException(422, exc.errors(include_url=False, include_context=False))
            if (body.images is None) == (body.embeddings is None):
                raise reject(422, "send exactly one of 'images' (base64) or 'embeddings'")
            if body.images is not None:
                _check_count(len(body.images))
                blobs = []
                for img in body.images:
                    try:
                        blobs.append((img.name, base64.b64decode(img.data, validate=True)))
                    except (binascii.Error, ValueError):
                        raise reject(422, f"image {img.name!r}: 'data' is not valid base64")
                await asyncio.to_thread(_check_images, blobs)
                return [Query(n, d, img.label) for (n, d), img in zip(blobs, body.images)], None, body.params
            _check_count(len(body.embeddings))
            vectors = np.asarray(body.embeddings, dtype=np.float32)
            dim = state["pool"].manifest.dim
            if vectors.ndim != 2 or vectors.shape[1] != dim:
                raise reject(422, f"embeddings must be a list of {dim}-d vectors for this index")
            if not np.all(np.isfinite(vectors)) or np.any(np.linalg.norm(vectors, axis=1) == 0):
                raise reject(422, "embeddings must be finite and non-zero")
            labels = body.labels or [None] * len(vectors)
            if len(labels) != len(vectors):
                raise reject(422, f"{len(labels)} labels for {len(vectors)} embeddings")
            return [Query(f"embedding-{i}", b"", lab) for i, lab in enumerate(labels)], vectors, body.params
        raise reject(415, "POST /curate takes multipart/form-data (files + params) or application/json")

    def _parse_params(raw: Any) -> CurateParams:
        if raw is None:
            return CurateParams()
        if not isinstance(raw, str):
            raise reject(422, "'params' must be a JSON string field")
        try:
            params = CurateParams.model_validate_json(raw)
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False))
        if params.budget and params.budget > settings.limits.max_budget:
            raise reject(422, f"budget {params.budget} exceeds this server's limit of {settings.limits.max_budget}")
        return params

    def _parse_labels(raw: Any, n: int) -> list[Optional[str]]:
        if raw is None:
            return [None] * n
        try:
            labels = json.loads(raw)
        except (TypeError, json.JSONDecodeError):
            raise reject(422, "'labels' must be a JSON list of strings, one per file")
        if not isinstance(labels, list) or len(labels) != n or not all(isinstance(x, (str, type(None))) for x in labels):
            raise reject(422, f"'labels' must be a JSON list of {n} strings (one per file)")
        return labels

    def _check_count(n: int) -> None:
        if n == 0:
            raise reject(422, "no query images: send at least one file")
        if n > settings.limits.max_files:
            raise reject(413, f"{n} images exceed the limit of {settings.limits.max_files} per request")

    def _check_images(blobs: list[tuple[str, bytes]]) -> None:
        for name, data in blobs:
            _check_image(name, data)

    def _check_image(name: str, data: bytes) -> bytes:
        if len(data) > settings.limits.max_file_bytes:
            raise reject(413, f"file {name!r} exceeds {settings.limits.max_file_bytes} bytes per image")
        try:
            decode_image(data, max_pixels=settings.limits.max_pixels, min_side=64)
        except BadImageError as exc:
            status = {"not_an_image": 415, "unsupported_format": 415, "too_many_pixels": 413}.get(exc.reason, 422)
            raise reject(status, f"file {name!r} rejected ({exc.reason}): {exc.detail}")
        return data

    # -- jobs ---------------------------------------------------------------------------
    @app.get("/jobs/{job_id}", response_model=JobOut)
    def get_job(job_id: str, key: Reader) -> JobOut:
        job = state["store"].get_job(job_id)
        if job is None:
            raise reject(404, f"no job {job_id!r}")
        return _job_out(job)

    @app.get("/jobs", response_model=list[JobOut])
    def list_jobs(key: Reader, state_: Annotated[Optional[str], Q(alias="state")] = None,
                  limit: Annotated[int, Q(ge=1, le=1000)] = 100) -> list[JobOut]:
        return [_job_out(j) for j in state["store"].list_jobs(state_, limit)]

    @app.delete("/jobs/{job_id}", response_model=JobOut)
    def cancel_job(job_id: str, key: Curator) -> JobOut:
        store: Store = state["store"]
        job = store.get_job(job_id)
        if job is None:
            raise reject(404, f"no job {job_id!r}")
        if job["state"] in ("queued", "running"):
            state["runner"].cancel(job_id)
        return _job_out(store.get_job(job_id))

    # -- distillation jobs -------------------------------------------------------------------
    @app.post("/distill-jobs", status_code=201)
    def post_distill_job(body: DistillJobIn, key: Curator) -> dict:
        _set_folder(body.transfer_set_id)  # 404 unless the set exists
        # paths and hardware on the worker's machine are the worker's to choose
        forbidden = {"labelled", "transfer", "out", "token", "progress", "cache_dir", "device"} & set(body.config)
        if forbidden:
            raise reject(422, f"config may not set {sorted(forbidden)}: the worker fills them in")
        config = dict(body.config, labelled=body.labelled)
        job_id = state["store"].create_distill_job(config, body.transfer_set_id, key.name if key else None)
        return state["store"].get_distill_job(job_id)

    @app.get("/distill-jobs/{job_id}")
    def get_distill_job(job_id: str, key: Reader) -> dict:
        job = state["store"].get_distill_job(job_id)
        if job is None:
            raise reject(404, f"no distillation job {job_id!r}")
        return job

    @app.get("/distill-jobs")
    def list_distill_jobs(key: Reader, limit: Annotated[int, Q(ge=1, le=1000)] = 100) -> list[dict]:
        return state["store"].list_distill_jobs(limit)

    @app.post("/distill-jobs/claim")
    def claim_distill_job(body: ClaimIn, key: Curator) -> JSONResponse:
        job = state["store"].claim_distill_job(body.worker, body.lease_seconds)
        return JSONResponse(job, status_code=200) if job else Response(status_code=204)

    @app.post("/distill-jobs/{job_id}/heartbeat")
    def heartbeat(job_id: str, body: ClaimIn, key: Curator) -> dict:
        if not state["store"].heartbeat_distill_job(job_id, body.worker, body.lease_seconds):
            raise reject(409, f"worker {body.worker!r} no longer holds {job_id!r} (lease lost): stop working on it")
        return {"ok": True}

    @app.post("/distill-jobs/{job_id}/finish")
    def finish(job_id: str, body: FinishIn, key: Curator) -> dict:
        ok = state["store"].finish_distill_job(job_id, body.worker, body.state, report=body.report,
                                               student_url=body.student_url, error=body.error)
        if not ok:
            raise reject(409, f"worker {body.worker!r} does not hold {job_id!r}; its result was not recorded")
        return state["store"].get_distill_job(job_id)

    # -- transfer sets --------------------------------------------------------------------
    def _set_folder(set_id: str) -> Path:
        if not SET_ID.match(set_id):
            raise reject(400, "invalid transfer-set id")
        row = state["store"].get_transfer_set(set_id)
        if row is None:
            raise reject(404, f"no transfer set {set_id!r}")
        return settings.sets_dir / set_id

    @app.get("/transfer-sets")
    def list_sets(key: Reader, limit: Annotated[int, Q(ge=1, le=1000)] = 100) -> list[dict]:
        return [_set_summary(s) for s in state["store"].list_transfer_sets(limit)]

    def _set_summary(row: dict) -> dict:
        return {"id": row["id"], "job_id": row["job_id"], "counts": row["counts"], "created_at": row["created_at"],
                "manifest_sha256": row["manifest_sha256"], "manifest_url": f"/transfer-sets/{row['id']}/manifest"}

    @app.get("/transfer-sets/{set_id}")
    def get_set(set_id: str, key: Reader) -> dict:
        _set_folder(set_id)
        return _set_summary(state["store"].get_transfer_set(set_id))

    @app.get("/transfer-sets/{set_id}/manifest")
    def get_manifest(set_id: str, key: Reader) -> FileResponse:
        return FileResponse(_set_folder(set_id) / "manifest.json", media_type="application/json")

    @app.get("/transfer-sets/{set_id}/samples.parquet")
    def get_samples(set_id: str, key: Reader) -> FileResponse:
        return FileResponse(_set_folder(set_id) / "samples.parquet", media_type="application/octet-stream")

    @app.get("/transfer-sets/{set_id}/shards/{name}")
    def get_shard(set_id: str, name: str, key: Reader) -> FileResponse:
        folder = _set_folder(set_id).resolve()
        if not SHARD_NAME.match(name) or not name.endswith(".tar"):
            raise reject(400, f"invalid shard name {name!r}")
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_file():  # never outside the set's folder
            raise reject(404, f"no shard {name!r} in transfer set {set_id!r}")
        metrics.shards_served.inc()
        return FileResponse(path, media_type="application/x-tar", filename=name)

    # -- search, health, metrics -----------------------------------------------------------
    @app.post("/search")
    async def search_upload(request: Request, key: Reader,
                            k: Annotated[int, Q(ge=1, le=settings.limits.max_k)] = 10) -> dict:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise reject(415, "POST /search takes multipart/form-data with one 'file'")
        form = await request.form(max_files=2, max_fields=4)
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise reject(422, "send the query image as the 'file' field")
        data = await upload.read(settings.limits.max_file_bytes + 1)
        return await asyncio.to_thread(_search, upload.filename or "file", data, k)

    @app.get("/search")
    async def search_item(key: Reader, item_id: Annotated[int, Q(ge=0)],
                          k: Annotated[int, Q(ge=1, le=settings.limits.max_k)] = 10) -> dict:
        pool: PoolIndex = state["pool"]
        if item_id >= pool.ntotal:
            raise reject(404, f"no pool item {item_id}")
        return await asyncio.to_thread(_search_vector, pool.vectors(np.array([item_id])), k)

    def _search(name: str, data: bytes, k: int) -> dict:
        _check_image(name, data)
        pool: PoolIndex = state["pool"]
        with state["encoder_lock"]:  # first call builds the encoder; the lock also bounds CPU use
            vector = pool.embed_images([data], max_pixels=settings.limits.max_pixels)
        return _search_vector(vector, k)

    def _search_vector(vector: np.ndarray, k: int) -> dict:
        pool: PoolIndex = state["pool"]
        scores, ids = pool.search(vector, k)
        hits = [h.as_dict() for h in pool.hits(scores[0], ids[0])]
        metrics.items_served.inc(len(hits))
        return {"k": k, "hits": hits}

    @app.get("/healthz")
    def healthz() -> dict:
        pool: Optional[PoolIndex] = state.get("pool")
        return {"status": "ok", "index_items": pool.ntotal if pool else 0,
                "encoder": pool.manifest.encoder.spec if pool else None}

    @app.get("/metrics", response_class=PlainTextResponse)
    def get_metrics() -> PlainTextResponse:
        metrics.set_jobs(state["store"].count_jobs())
        body, ctype = metrics.render()
        return PlainTextResponse(body, media_type=ctype)

    @app.exception_handler(CuratorError)
    async def curator_error(request: Request, exc: CuratorError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app
