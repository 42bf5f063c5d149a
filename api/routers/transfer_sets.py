"""Transfer sets: listing, manifests, samples tables and webdataset shards (never outside a set's folder)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

from fastapi import APIRouter, Path as Path_, Query, Request
from fastapi.responses import FileResponse, Response

from curator.formats import MAX_IMAGES, SetMap, SetView
from curator.formats.protocol import SetSummary
from curator.setview import query_thumbnail, read_view, set_map

from ..auth import ApiKey
from ..deps import CurateKey, PoolDep, ReadKey, SettingsDep, StoreDep, check_owner, owner_filter, readable, reject
from ..retention import remove_set
from ..schemas import ERRORS, set_summary
from ..settings import Settings
from ..signing import WIDS_INDEX, base_url, sign
from ..store import SetRow, Store

router = APIRouter(tags=["transfer sets"], responses=ERRORS)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A set holds no more queries than images.
MAX_QUERIES = MAX_IMAGES


def set_folder(set_id: str, store: Store, settings: Settings, key: Optional[ApiKey]) -> Path:
    """The folder of a set the caller may read; 400 for a malformed id, 404 for one that is not there or
    is another owner's."""
    if not NAME.match(set_id):
        raise reject(400, "invalid transfer-set id")
    readable(key, store.get_transfer_set(set_id), f"transfer set {set_id!r}")
    return settings.sets_dir / set_id


def summary(row: SetRow, request: Request, key: Optional[ApiKey], settings: Settings) -> SetSummary:
    """A set's summary with a wids index URL signed for the caller: readers that send no header use it."""
    query = sign(request.app.state.signing_secret, row.id, WIDS_INDEX, key.name if key else None,
                 settings.signed_url_seconds)
    return set_summary(row, wids_url=f"{base_url(request)}/transfer-sets/{row.id}/{WIDS_INDEX}?{query}")


@router.get("/transfer-sets", response_model=list[SetSummary])
def list_sets(request: Request, key: ReadKey, store: StoreDep, settings: SettingsDep,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[SetSummary]:
    return [summary(s, request, key, settings) for s in store.list_transfer_sets(limit, owner_filter(key))]


@router.get("/transfer-sets/{set_id}", response_model=SetSummary)
def get_set(set_id: str, request: Request, key: ReadKey, store: StoreDep, settings: SettingsDep) -> SetSummary:
    set_folder(set_id, store, settings, key)
    return summary(store.get_transfer_set(set_id), request, key, settings)


@router.delete("/transfer-sets/{set_id}", response_model=SetSummary)
def delete_set(set_id: str, request: Request, key: CurateKey, store: StoreDep, settings: SettingsDep) -> SetSummary:
    """Remove a set (its owner or an admin): the row first, so it is never served half-deleted."""
    set_folder(set_id, store, settings, key)  # 404 for a set that is not there
    row = store.get_transfer_set(set_id)
    check_owner(key, row, f"transfer set {set_id!r}")
    remove_set(store, settings.sets_dir, set_id)
    return set_summary(row)


@router.get("/transfer-sets/{set_id}/manifest", response_class=FileResponse,
            responses={200: {"content": {"application/json": {}}}})
def get_manifest(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """The manifest as stored, byte for byte (its sha256 is in the summary). Its shard URLs are relative:
    beside it, at ``/transfer-sets/ID/NAME.tar``, is where they resolve."""
    return FileResponse(set_folder(set_id, store, settings, key) / "manifest.json", media_type="application/json")


@router.get("/transfer-sets/{set_id}/samples.parquet", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_samples(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep) -> Response:
    """The samples table as a client sees it: every column but ``source`` (a location on the server's
    own storage, which is no business of a caller's)."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(set_folder(set_id, store, settings, key) / "samples.parquet")
    buffer = io.BytesIO()
    pq.write_table(table.drop_columns([c for c in ("source",) if c in table.column_names]), buffer)
    return Response(buffer.getvalue(), media_type="application/octet-stream")


@router.get("/transfer-sets/{set_id}/view", response_model=SetView)
def get_view(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep) -> SetView:
    """Each query with what it pulled in (rank order) and what the rules left out, and why."""
    return read_view(set_folder(set_id, store, settings, key))


@router.get("/transfer-sets/{set_id}/map", response_model=SetMap)
def get_map(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep, pool: PoolDep) -> SetMap:
    """The queries and their set on two principal components of their embeddings."""
    return set_map(set_folder(set_id, store, settings, key), pool.vectors)


@router.get("/transfer-sets/{set_id}/queries/{index}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def get_query_thumbnail(set_id: str, index: Annotated[int, Path_(ge=0, le=MAX_QUERIES)], key: ReadKey, store: StoreDep, settings: SettingsDep) -> Response:
    data = query_thumbnail(set_folder(set_id, store, settings, key), index)
    if data is None:
        raise reject(404, f"transfer set {set_id!r} has no thumbnail for query {index}")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})
