"""The web UI at ``/``: one static page and its script and style, all shipped in the package (no CDN,
no build step). The page itself holds no data; every call it makes carries the key the user typed."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


def mount_assets(app: FastAPI) -> None:
    app.mount("/ui", StaticFiles(directory=str(STATIC)), name="ui")
