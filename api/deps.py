"""Typed dependencies: the service's parts from ``app.state``, and the caller's API key by scope.

Routes ask for what they use (``store: StoreDep``), so tests can swap any part with FastAPI's
``dependency_overrides`` and call the app in process.
"""
from __future__ import annotations

import threading
from typing import Annotated, Any, Callable, Optional, TypeVar

from fastapi import Depends, HTTPException, Request

from curator.retrieval import PoolIndex

from .auth import ApiKey, KeyRing
from .jobs import JobRunner
from .metrics import Metrics
from .settings import Settings
from .store import Store

R = TypeVar("R")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_pool(request: Request) -> PoolIndex:
    """The index's current generation (a request keeps the one it started with)."""
    return request.app.state.pool.current()


def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_encoder_lock(request: Request) -> threading.Lock:
    return request.app.state.encoder_lock


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
PoolDep = Annotated[PoolIndex, Depends(get_pool)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EncoderLockDep = Annotated[threading.Lock, Depends(get_encoder_lock)]


def require(scope: str) -> Callable[..., Optional[ApiKey]]:
    """The caller's key, which must allow ``scope`` (None under --no-auth)."""
    def check(request: Request, settings: SettingsDep) -> Optional[ApiKey]:
        if settings.no_auth:
            return None
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        keys: KeyRing = request.app.state.keys
        key = keys.lookup(header[7:].strip())
        if key is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if not key.allows(scope):
            raise HTTPException(403, f"API key {key.name!r} lacks the '{scope}' scope")
        return key
    return check


ReadKey = Annotated[Optional[ApiKey], Depends(require("read"))]
CurateKey = Annotated[Optional[ApiKey], Depends(require("curate"))]
WorkerKey = Annotated[Optional[ApiKey], Depends(require("worker"))]
AdminKey = Annotated[Optional[ApiKey], Depends(require("admin"))]


def owner_filter(key: Optional[ApiKey]) -> Optional[str]:
    """Whose rows a listing shows: the caller's own, or everyone's for an admin (or under --no-auth)."""
    return None if key is None or key.is_admin else key.name


def readable(key: Optional[ApiKey], row: Optional[R], what: str) -> R:
    """``row`` when the caller may read it (its owner, an admin, a worker, or anyone under --no-auth);
    otherwise the same 404 as for no row at all, so ids of other owners' work are not disclosed."""
    if row is None or not (key is None or key.reads_all() or getattr(row, "owner", None) == key.name):
        raise HTTPException(status_code=404, detail=f"no {what}")
    return row


def check_owner(key: Optional[ApiKey], row: Any, what: str) -> None:
    """Only the key that made a job (or set), or an admin, may cancel or delete it."""
    if key is not None and not key.is_admin and row.owner != key.name:
        raise HTTPException(403, f"API key {key.name!r} did not create {what}; only its owner or an admin may")


def reject(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)
