"""The API's schema and its /docs page, with every asset served from the package (no CDN: an
air-gapped install must show its docs). Both need a read key unless the server runs with --public-docs;
/docs exists only then, since a browser cannot send a bearer key when it opens a page."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..deps import SettingsDep, require

ASSETS = "/docs/assets"
#: swagger-ui 5 (FastAPI's schema is OpenAPI 3.1, which swagger-ui 4 cannot render), as the
#: fastapi-offline package ships it; only its files are used.
SWAGGER_DIR = Path(importlib.util.find_spec("fastapi_offline").origin).parent / "static"
router = APIRouter(include_in_schema=False)


def docs_caller(request: Request, settings: SettingsDep) -> None:
    if not settings.public_docs:
        require("read")(request, settings)


@router.get("/openapi.json", dependencies=[Depends(docs_caller)])
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", response_class=HTMLResponse)
def docs_page(settings: SettingsDep) -> HTMLResponse:
    if not settings.public_docs:
        raise HTTPException(404, "Not Found")
    return get_swagger_ui_html(openapi_url="/openapi.json", title="curator API",
                               swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS}/favicon.png")


def mount_assets(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=str(SWAGGER_DIR)), name="docs-assets")
