"""A set's shards and its wids index, for the readers users run: with a key, or by a signed URL.

wids and webdataset fetch with curl and cannot send a header; the service signs each URL it hands
out (``api.signing``) for the key that asked, so a downstream job reads with the URL alone, for a
while, and only what that key could read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from curator.errors import CuratorError
from curator.formats.protocol import WidsIndex, WidsShard
from curator.transfer import read_manifest, shard_path_or_layout
from curator.urlsets import URL_LIST_FILE

from ..deps import MetricsDep, SettingsDep, StoreDep, reject, require
from ..ranges import assembled_response
from ..schemas import ERRORS
from ..settings import Settings
from ..signing import WIDS_INDEX, base_url, sign, verify
from ..store import Store
from .transfer_sets import NAME, set_folder

router = APIRouter(tags=["transfer sets"], responses=ERRORS)
TAR = {200: {"content": {"application/x-tar": {}}}, 206: {"description": "a byte range"},
       416: {"description": "a range outside the shard"}}


@dataclass(frozen=True)
class Signed:
    """A signed URL's query: when it expires, whose read it grants, and the signature."""
    expires: Optional[int]
    signer: Optional[str]
    sig: Optional[str]


def signed_query(expires: Annotated[Optional[int], Query(ge=0, le=2 ** 40)] = None,
                 signer: Annotated[Optional[str], Query(alias="key", max_length=128)] = None,
                 sig: Annotated[Optional[str], Query(max_length=128)] = None) -> Signed:
    return Signed(expires, signer, sig)


SignedDep = Annotated[Signed, Depends(signed_query)]


def open_file(request: Request, set_id: str, name: str, settings: Settings, store: Store,
              signed: Signed) -> tuple[Path, Optional[str]]:
    """The set's folder and whose read this is: a signed URL's signer, or the key sent as a header (the
    set's owner, an admin or a worker). 401 with neither; 403 for a signature that does not hold."""
    if signed.sig is None:
        key = require("read")(request, settings)
        return set_folder(set_id, store, settings, key), key.name if key else None
    if not NAME.match(set_id):
        raise reject(400, "invalid transfer-set id")
    if signed.expires is None or signed.signer is None or not verify(
            request.app.state.signing_secret, set_id, name, signed.expires, signed.signer, signed.sig):
        raise reject(403, "this signed URL is not valid for this file, or it has expired: ask for a new one "
                          f"(GET /transfer-sets/{set_id}, its wids_url)")
    if store.get_transfer_set(set_id) is None:
        raise reject(404, f"no transfer set {set_id!r}")
    return settings.sets_dir / set_id, signed.signer or None


@router.get(f"/transfer-sets/{{set_id}}/{WIDS_INDEX}", response_model=WidsIndex)
def get_wids_index(set_id: str, request: Request, signed: SignedDep, store: StoreDep,
                   settings: SettingsDep) -> JSONResponse:
    """The set as a wids shard index, each shard URL absolute and signed for whoever asked: pass this
    URL to ``wids.ShardListDataset``, or its shard URLs to ``webdataset.WebDataset``."""
    folder, who = open_file(request, set_id, WIDS_INDEX, settings, store, signed)
    secret, base = request.app.state.signing_secret, f"{base_url(request)}/transfer-sets/{set_id}/shards"
    shards = [WidsShard(url=f"{base}/{s.url}?{sign(secret, set_id, s.url, who, settings.signed_url_seconds)}",
                        nsamples=s.nsamples, filesize=s.filesize, sha256=s.sha256)
              for s in read_manifest(folder).shardlist]
    index = WidsIndex(name=set_id, shardlist=shards)
    return JSONResponse(index.model_dump(mode="json", by_alias=True), headers={"Cache-Control": "private, no-store"})


@router.get(f"/transfer-sets/{{set_id}}/{URL_LIST_FILE}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "not a URL set"}})
def get_url_list(set_id: str, request: Request, signed: SignedDep, store: StoreDep, settings: SettingsDep) -> Response:
    """A set of URL-only pool items as the URL list img2dataset reads (the service fetches no URL itself)."""
    folder, _ = open_file(request, set_id, URL_LIST_FILE, settings, store, signed)
    if not (folder / URL_LIST_FILE).is_file():
        raise reject(404, f"transfer set {set_id!r} holds images, not a URL list")
    return FileResponse(folder / URL_LIST_FILE, media_type="application/octet-stream", filename=URL_LIST_FILE)


@router.get("/transfer-sets/{set_id}/shards/{name}", response_class=FileResponse, responses=TAR)
def get_shard(set_id: str, name: str, request: Request, signed: SignedDep, store: StoreDep, settings: SettingsDep,
              metrics: MetricsDep) -> Response:
    """A webdataset shard: its file (a copied set), or the same bytes assembled from the pool (a set by
    reference; HTTP Range supported either way)."""
    folder, _ = open_file(request, set_id, name, settings, store, signed)
    return shard_response(folder.resolve(), set_id, name, request, metrics)


@router.get("/transfer-sets/{set_id}/{name}", response_class=FileResponse, responses=TAR,
            summary="A shard beside the manifest, where its relative URL resolves")
def get_shard_beside_manifest(set_id: str, name: str, request: Request, signed: SignedDep, store: StoreDep,
                              settings: SettingsDep, metrics: MetricsDep) -> Response:
    if not name.endswith(".tar"):
        raise reject(404, f"no {name!r} in transfer set {set_id!r}")
    folder, _ = open_file(request, set_id, name, settings, store, signed)
    return shard_response(folder.resolve(), set_id, name, request, metrics)


def shard_response(folder: Path, set_id: str, name: str, request: Request, metrics) -> Response:
    if not NAME.match(name) or not name.endswith(".tar"):
        raise reject(400, f"invalid shard name {name!r}")
    if (folder / name).resolve().parent != folder:  # never outside the set's folder
        raise reject(404, f"no shard {name!r} in transfer set {set_id!r}")
    try:
        source = shard_path_or_layout(folder, name)
    except CuratorError:
        raise reject(404, f"no shard {name!r} in transfer set {set_id!r}")
    metrics.shards_served.inc()
    if isinstance(source, Path):
        return FileResponse(source, media_type="application/x-tar", filename=name)
    return assembled_response(source, name, request.headers.get("range"))
