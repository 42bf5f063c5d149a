"""Pool items as pictures: a bounded thumbnail per item, cached on disk under the data directory."""
from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from curator import atomic
from curator.errors import BadImageError
from curator.thumbs import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, thumbnail

from ..deps import PoolDep, ReadKey, SettingsDep, reject
from ..schemas import ERRORS

router = APIRouter(tags=["items"], responses=ERRORS)
JPEG = {200: {"content": {"image/jpeg": {}}}}
#: A browser may keep a thumbnail for a day: a pool item's bytes never change under its id.
CACHE = {"Cache-Control": "private, max-age=86400"}


@router.get("/items/{item_id}/thumbnail", response_class=Response, responses=JPEG)
async def item_thumbnail(item_id: Annotated[int, Path(ge=0, le=2 ** 62)], key: ReadKey, pool: PoolDep,
                         settings: SettingsDep,
                         size: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE)] = DEFAULT_SIZE) -> Response:
    if not 0 <= item_id < pool.ntotal:
        raise reject(404, f"no pool item {item_id}")
    cached = settings.data_dir / "thumbnails" / str(size) / f"{item_id}.jpg"

    def make() -> bytes:
        if cached.exists():
            return cached.read_bytes()
        try:
            data = thumbnail(pool.fetch(item_id), size, max_pixels=settings.limits.max_pixels)
        except (BadImageError, OSError):
            raise reject(404, f"pool item {item_id} cannot be shown (unreadable or not an image)")
        atomic.write_bytes(cached, data)
        return data
    return Response(await asyncio.to_thread(make), media_type="image/jpeg", headers=CACHE)
