"""Transfer sets: listing, manifests, samples tables and webdataset shards (never outside a set's folder)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from curator.formats import SetMap, SetView
from curator.setview import query_thumbnail, read_view, set_map

from curator.errors import CuratorError
from curator.transfer import shard_path_or_layout

from ..deps import CurateKey, MetricsDep, PoolDep, ReadKey, SettingsDep, StoreDep, check_owner, owner_filter, reject
from ..ranges import assembled_response
from ..retention import remove_set
from ..schemas import ERRORS, SetSummary, set_summary
from ..settings import Settings
from ..store import Store

router = APIRouter(tags=["transfer sets"], responses=ERRORS)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def set_folder(set_id: str, store: Store, settings: Settings) -> Path:
    """A known set's folder; 400 for a malformed id, 404 for an unknown one."""
    if not NAME.match(set_id):
        raise reject(400, "invalid transfer-set id")
    if store.get_transfer_set(set_id) is None:
        raise reject(404, f"no transfer set {set_id!r}")
    return settings.sets_dir / set_id


@router.get("/transfer-sets", response_model=list[SetSummary])
def list_sets(key: ReadKey, store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[SetSummary]:
    return [set_summary(s) for s in store.list_transfer_sets(limit, owner_filter(key))]


@router.get("/transfer-sets/{set_id}", response_model=SetSummary)
def get_set(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep) -> SetSummary:
    set_folder(set_id, store, settings)
    return set_summary(store.get_transfer_set(set_id))


@router.delete("/transfer-sets/{set_id}", response_model=SetSummary)
def delete_set(set_id: str, key: CurateKey, store: StoreDep, settings: SettingsDep) -> SetSummary:
    """Remove a set (its owner or an admin): the row first, so it is never served half-deleted."""
    set_folder(set_id, store, settings)  # 404 for a set that is not there
    row = store.get_transfer_set(set_id)
    check_owner(key, row, f"transfer set {set_id!r}")
    remove_set(store, settings.sets_dir, set_id)
    return set_summary(row)


@router.get("/transfer-sets/{set_id}/manifest", response_class=FileResponse,
            responses={200: {"content": {"application/json": {}}}})
def get_manifest(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep) -> FileResponse:
    return FileResponse(set_folder(set_id, store, settings) / "manifest.json", media_type="application/json")


@router.get("/transfer-sets/{set_id}/samples.parquet", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_samples(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep) -> Response:
    """The samples table as a client sees it: every column but ``source`` (a location on the server's
    own storage, which is no business of a caller's)."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(set_folder(set_id, store, settings) / "samples.parquet")
    buffer = io.BytesIO()
    pq.write_table(table.drop_columns([c for c in ("source",) if c in table.column_names]), buffer)
    return Response(buffer.getvalue(), media_type="application/octet-stream")


@router.get("/transfer-sets/{set_id}/shards/{name}", response_class=FileResponse,
            responses={200: {"content": {"application/x-tar": {}}}, 206: {"description": "a byte range"},
                       416: {"description": "a range outside the shard"}})
def get_shard(set_id: str, name: str, request: Request, key: ReadKey, store: StoreDep, settings: SettingsDep,
              metrics: MetricsDep) -> Response:
    """A webdataset shard: its file (a copied set), or the same bytes assembled from the pool (a set by
    reference; HTTP Range supported either way)."""
    folder = set_folder(set_id, store, settings).resolve()
    if not NAME.match(name) or not name.endswith(".tar"):
        raise reject(400, f"invalid shard name {name!r}")
    path = (folder / name).resolve()
    if path.parent != folder:  # never outside the set's folder
        raise reject(404, f"no shard {name!r} in transfer set {set_id!r}")
    try:
        source = shard_path_or_layout(folder, name)
    except CuratorError:
        raise reject(404, f"no shard {name!r} in transfer set {set_id!r}")
    metrics.shards_served.inc()
    if isinstance(source, Path):
        return FileResponse(source, media_type="application/x-tar", filename=name)
    return assembled_response(source, name, request.headers.get("range"))


@router.get("/transfer-sets/{set_id}/view", response_model=SetView)
def get_view(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep) -> SetView:
    """Each query with what it pulled in (rank order) and what the rules left out, and why."""
    return read_view(set_folder(set_id, store, settings))


@router.get("/transfer-sets/{set_id}/map", response_model=SetMap)
def get_map(set_id: str, key: ReadKey, store: StoreDep, settings: SettingsDep, pool: PoolDep) -> SetMap:
    """The queries and their set on two principal components of their embeddings."""
    return set_map(set_folder(set_id, store, settings), pool.vectors)


@router.get("/transfer-sets/{set_id}/queries/{index}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def get_query_thumbnail(set_id: str, index: int, key: ReadKey, store: StoreDep, settings: SettingsDep) -> Response:
    data = query_thumbnail(set_folder(set_id, store, settings), index)
    if data is None:
        raise reject(404, f"transfer set {set_id!r} has no thumbnail for query {index}")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})
