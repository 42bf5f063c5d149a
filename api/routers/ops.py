"""Health and metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from ..deps import MetricsDep, StoreDep
from ..schemas import ERRORS, HealthOut

router = APIRouter(tags=["operations"], responses=ERRORS)


@router.get("/healthz", response_model=HealthOut)
def healthz(request: Request) -> HealthOut:
    pool = getattr(request.app.state, "pool", None)
    return HealthOut(status="ok", index_items=pool.ntotal if pool else 0,
                     encoder=pool.manifest.encoder.spec if pool else None)


@router.get("/metrics", response_class=PlainTextResponse)
def get_metrics(store: StoreDep, metrics: MetricsDep) -> PlainTextResponse:
    metrics.set_jobs(store.count_jobs())
    body, ctype = metrics.render()
    return PlainTextResponse(body, media_type=ctype)
