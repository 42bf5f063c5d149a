"""Search the pool: by an uploaded image, by text (an encoder with a text tower), or from a pool item."""
from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import ValidationError

from curator.queries import text_queries
from curator.retrieval import PoolIndex

from ..deps import EncoderLockDep, MetricsDep, PoolDep, ReadKey, SettingsDep, reject
from ..metrics import Metrics
from ..schemas import ERRORS, HitOut, SearchOut, TextQuery
from ..uploads import check_image, read_form

router = APIRouter(tags=["search"], responses=ERRORS)
#: The service's ceiling on k; a server's --max-k may lower it.
K_MAX = 100_000
UPLOAD = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "application/json": {"schema": TextQuery.model_json_schema()}}}}


def _k(k: int, settings) -> int:
    if k > settings.limits.max_k:
        raise reject(422, f"k={k} exceeds this server's limit of {settings.limits.max_k}")
    return k


@router.post("/search", response_model=SearchOut, openapi_extra=UPLOAD)
async def search_upload(request: Request, key: ReadKey, settings: SettingsDep, pool: PoolDep, lock: EncoderLockDep,
                        metrics: MetricsDep, k: Annotated[int, Query(ge=1, le=K_MAX)] = 10) -> dict:
    _k(k, settings)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return await search_text(request, pool, lock, metrics, k)
    if ctype != "multipart/form-data":
        raise reject(415, "POST /search takes multipart/form-data with one 'file', or JSON {\"text\": ...}")
    form = await read_form(request, max_files=2, max_fields=4, max_part_size=1 << 20)
    upload = form.get("file")
    if upload is None or not hasattr(upload, "read"):
        raise reject(422, "send the query image as the 'file' field")
    data = await upload.read(settings.limits.max_file_bytes + 1)

    def run() -> dict:
        check_image(upload.filename or "file", data, settings.limits)
        with lock:  # the first call builds the encoder; the lock also bounds CPU use
            vector = pool.embed_images([data], max_pixels=settings.limits.max_pixels)
        return search_vector(pool, metrics, vector, k)
    return await asyncio.to_thread(run)


@router.get("/search", response_model=SearchOut)
async def search_item(key: ReadKey, settings: SettingsDep, pool: PoolDep, metrics: MetricsDep,
                      item_id: Annotated[int, Query(ge=0, le=2 ** 62)], k: Annotated[int, Query(ge=1, le=K_MAX)] = 10) -> dict:
    _k(k, settings)
    if item_id >= pool.ntotal:
        raise reject(404, f"no pool item {item_id}")
    return await asyncio.to_thread(search_vector, pool, metrics, pool.vectors(np.array([item_id])), k, item_id)


def search_vector(pool: PoolIndex, metrics: Metrics, vector: np.ndarray, k: int, exclude: int = -1) -> dict:
    """The k nearest items (``exclude``: the query's own pool item, which is not its own neighbour);
    scores are cosines, clipped to [-1, 1] (float16 storage rounds a self-match above 1)."""
    scores, ids = pool.search(vector, k + (exclude >= 0))
    hits = [h for h in pool.hits(scores[0], ids[0]) if h.id != exclude][:k]
    for h in hits:
        h.score = float(np.clip(h.score, -1.0, 1.0))
    metrics.items_served.inc(len(hits))
    return {"k": k, "hits": [HitOut(**h.as_dict()).model_dump() for h in hits]}


async def search_text(request: Request, pool: PoolIndex, lock, metrics: Metrics, k: int) -> dict:
    try:
        query = TextQuery.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False, include_input=False))

    def run() -> dict:
        with lock:  # an encoder without a text tower raises CuratorError: a 422 that says so
            _, vector = text_queries(pool.encoder(), [query.text])
        return search_vector(pool, metrics, vector, k)
    return await asyncio.to_thread(run)
