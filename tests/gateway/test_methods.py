"""A method a path does not serve gets 405 with an ``Allow`` that names the methods of
that path's own routes, OPTIONS included: a literal path (``/v1/invoices/drafts``) is
not a value of a parameter beside it (``/v1/invoices/{invoice_id}``)."""

from __future__ import annotations

import re

import pytest

from gateway.app import create_app
from tests.gateway.conftest import Api, problem
from tests.services import settings

_SPEC = create_app(settings()).openapi()
# The pages and files the OpenAPI document leaves out.
_PAGES = {
    "/dashboard": {"GET"},
    "/dashboard/login": {"GET", "POST"},
    "/dashboard/logout": {"POST"},
    "/dashboard/turns/{turn_id}": {"GET"},
    "/dashboard/dead-letters/{partition}/{offset}/redrive": {"POST"},
    "/dashboard/static/dashboard.js": {"GET"},
    "/docs": {"GET"},
    "/docs/static/swagger-ui.css": {"GET"},
    "/redoc": {"GET"},
    "/openapi.json": {"GET"},
}
PATHS = {
    **{path: {method.upper() for method in ops} for path, ops in _SPEC["paths"].items()},
    **_PAGES,
}


@pytest.mark.parametrize(("template", "methods"), PATHS.items(), ids=list(PATHS))
async def test_allow_names_the_methods_of_the_paths_own_routes(
    api: Api, template: str, methods: set[str]
) -> None:
    path = re.sub(r"\{\w+\}", "x1", template)
    for method in ("OPTIONS", *({"DELETE", "PUT"} - methods)):
        response = await api.http.request(method, path, headers=api.as_operator)
        problem(response, 405, "METHOD_NOT_ALLOWED")
        assert set(response.headers["allow"].split(", ")) == methods, (method, path)
