"""The FastAPI application: state in ``app.state``, routers per resource, one error mapping."""
from __future__ import annotations

import logging
import shutil
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from curator import __version__
from curator.errors import CuratorError
from curator.retrieval import LivePool

from . import middleware
from .auth import KeyRing
from .jobs import JobRunner, clean_uploads
from .metrics import Metrics
from .retention import prune
from .routers import ROUTERS, docs, ui
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Open the pool and the store, requeue what a restart interrupted; stop the jobs on the way out."""
    settings: Settings = app.state.settings
    for partial in settings.sets_dir.glob(".*.tmp-*"):  # a set whose writer was killed: never complete
        shutil.rmtree(partial, ignore_errors=True)
    pool, store = LivePool(settings.index_dir), Store(settings.db_path)
    runner = JobRunner(settings, store, pool)
    failed, queued = store.recover()
    clean_uploads(settings.uploads_dir, store)
    if failed:
        log.warning("marked %d interrupted job(s) failed: %s", len(failed), ", ".join(failed))
    app.state.pool, app.state.store, app.state.runner = pool, store, runner
    app.state.encoder_lock = threading.Lock()
    app.state.metrics.index_items.set(pool.current().ntotal)
    prune(settings, store)
    for job_id in queued:
        runner.submit(job_id)
    yield
    runner.shutdown()


async def curator_error(request: Request, exc: CuratorError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 whatever the input was: the offending value is left out (NaN, Infinity or raw bytes
    cannot be written as JSON, and echoing a caller's input back is never needed)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(settings: Settings) -> FastAPI:
    for folder in (settings.data_dir, settings.sets_dir, settings.uploads_dir):
        folder.mkdir(parents=True, exist_ok=True)
    keys = KeyRing.load(settings.api_keys_file)
    if not settings.no_auth and len(keys) == 0:
        raise CuratorError("no API keys configured: pass --api-keys FILE or set CURATOR_API_KEYS "
                           "(name:scopes:secret), or --no-auth for local development")
    app = FastAPI(title="curator", version=__version__, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Retrieval-augmented transfer sets for task-oriented knowledge transfer.")
    app.state.settings, app.state.keys, app.state.metrics = settings, keys, Metrics()
    middleware.install(app, settings, app.state.metrics)
    for router in ROUTERS:
        app.include_router(router)
    docs.mount_assets(app)
    ui.mount_assets(app)
    app.add_exception_handler(CuratorError, curator_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    return app
