"""The API's pages: Swagger UI at ``/docs`` and Redoc at ``/redoc``, on the OpenAPI
document. Their scripts are served by the gateway, never a CDN: the copies the
``fastapi-offline`` package ships (pinned in ``pyproject.toml``: Swagger UI 5.32.6,
Redoc 2.5.3), and Swagger UI's start-up from a file of ours, so the pages' policy
allows no inline script (``gateway.page_headers``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

router = APIRouter(include_in_schema=False)
STATIC = StaticFiles(
    directory=Path(__file__).parent.parent / "static" / "docs",
    packages=[("fastapi_offline", "static")],
)
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent.parent / "templates" / "docs"),
    autoescape=select_autoescape(),
)


def _page(name: str, request: Request) -> HTMLResponse:
    app = request.app
    return HTMLResponse(
        _PAGES.get_template(name).render(title=app.title, openapi_url=app.openapi_url)
    )


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return _page("swagger.html", request)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return _page("redoc.html", request)


def mount(app: FastAPI) -> None:
    """The pages and their files, on an app made with ``docs_url=None, redoc_url=None``
    (FastAPI's own pages load their scripts from a CDN)."""
    app.include_router(router)
    app.mount("/docs/static", STATIC, name="docs-static")
