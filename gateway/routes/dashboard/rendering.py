"""The dashboard's page templates and the sizes every page shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

PAGE_SIZE = 50
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent.parent.parent / "templates" / "dashboard"),
    autoescape=select_autoescape(),
)
_PAGES.filters["ms"] = lambda v: "-" if v is None else f"{v:,.0f} ms"
_PAGES.filters["when"] = lambda v: "-" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")


def render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_PAGES.get_template(name).render(**context))
