"""Health and metrics."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from ..deps import MetricsDep, SettingsDep, StoreDep, require
from ..schemas import ERRORS, HealthOut

router = APIRouter(tags=["operations"], responses=ERRORS)


@router.get("/healthz", response_model=HealthOut)
def healthz(request: Request) -> HealthOut:
    live = getattr(request.app.state, "pool", None)
    pool = live.current() if live else None
    return HealthOut(status="ok", index_items=pool.ntotal if pool else 0,
                     encoder=pool.manifest.encoder.spec if pool else None)


def metrics_caller(request: Request, settings: SettingsDep) -> None:
    """/metrics is an admin's, unless the server was started with --public-metrics (a scraper on a
    private network)."""
    if not settings.public_metrics:
        require("admin")(request, settings)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(metrics_caller)])
def get_metrics(store: StoreDep, metrics: MetricsDep) -> PlainTextResponse:
    metrics.set_jobs(store.count_jobs())
    body, ctype = metrics.render()
    return PlainTextResponse(body, media_type=ctype)
