"""The FastAPI application: state in ``app.state``, routers per resource, one error mapping."""
from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from curator import __version__
from curator.errors import CuratorError
from curator.formats import INDEX_MANIFEST_NAME
from curator.retrieval import LivePool

from . import middleware
from .auth import KeyRing
from .database import open_database
from .jobs import JobRunner, clean_partial_sets, clean_uploads
from .metrics import Metrics
from .retention import prune
from .routers import ROUTERS, docs, ui
from .settings import Settings
from .signing import load_secret
from .store import Store

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Open the pool and the store, requeue what a restart interrupted; stop the jobs on the way out."""
    settings: Settings = app.state.settings
    store: Store = app.state.store
    pool = LivePool(settings.index_dir)
    clean_partial_sets(settings.sets_dir, store)
    clean_uploads(settings.uploads_dir, store)
    taken = store.release_jobs(settings.replica)
    if taken:
        log.warning("%d job(s) were running when this replica (%s) stopped: running them again", taken,
                    settings.replica)
    runner = JobRunner(settings, store, pool)
    app.state.pool, app.state.runner = pool, runner
    app.state.encoder_lock = threading.Lock()
    app.state.metrics.index_items.set(pool.current().ntotal)
    prune(settings, store)
    runner.start()
    yield
    runner.shutdown()


async def curator_error(request: Request, exc: CuratorError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """A client that went away mid-upload is a normal event, not an error to log with a traceback."""
    return Response(status_code=400)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 whatever the input was: the offending value is left out (NaN, Infinity or raw bytes
    cannot be written as JSON, and echoing a caller's input back is never needed)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(settings: Settings) -> FastAPI:
    """The app; every setting a user can get wrong (the index, the keys, the database) is checked before
    anything is written to the data folder."""
    if not (settings.index_dir / INDEX_MANIFEST_NAME).is_file():
        raise CuratorError(f"--index {settings.index_dir}: not an index folder (no {INDEX_MANIFEST_NAME}); "
                           f"build one with curator build-index")
    keys = KeyRing.load(settings.api_keys_file)
    if not settings.no_auth and len(keys) == 0:
        raise CuratorError("no API keys configured: pass --api-keys FILE or set CURATOR_API_KEYS "
                           "(name:scopes:secret), or --no-auth for local development")
    for folder in (settings.data_dir, settings.sets_dir, settings.uploads_dir):
        folder.mkdir(parents=True, exist_ok=True)
    app_store = Store(open_database(settings.database, settings.db_path))  # a bad --database fails here
    app = FastAPI(title="curator", version=__version__, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Retrieval-augmented transfer sets for task-oriented knowledge transfer.")
    app.state.settings, app.state.keys, app.state.metrics = settings, keys, Metrics()
    app.state.store = app_store
    app.state.signing_secret = load_secret(settings.data_dir)
    middleware.install(app, settings, app.state.metrics)
    for router in ROUTERS:
        app.include_router(router)
    docs.mount_assets(app)
    ui.mount_assets(app)
    app.add_exception_handler(CuratorError, curator_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    return app
