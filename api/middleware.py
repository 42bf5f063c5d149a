"""Request bounds and request metrics, as one HTTP middleware."""
from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .metrics import Metrics
from .settings import Settings


def install(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    limit = settings.limits.max_request_bytes

    @app.middleware("http")
    async def bound_and_measure(request: Request, call_next):
        t0 = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            response = JSONResponse({"detail": f"request body exceeds {limit} bytes (--max-request-bytes)"},
                                    status_code=413)
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
