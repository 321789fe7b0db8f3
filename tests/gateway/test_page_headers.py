"""The gateway's pages (the dashboard, Swagger UI, Redoc, the AsyncAPI page) load
nothing from another origin, run no inline script, cannot be framed and are not
sniffed; the API's answers are left as they are."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from tests.gateway.conftest import Api

PAGES = [
    "/docs",
    "/redoc",
    "/asyncapi",
    "/asyncapi.yaml",
    "/dashboard",
    "/dashboard/turns",
    "/dashboard/dead-letters",
    "/dashboard/login?error=session-ended",
    "/dashboard/static/dashboard.js",
    "/docs/static/swagger-ui-bundle.js",
    "/docs/static/swagger-start.js",
    "/docs/static/redoc.standalone.js",
]
HTML_PAGES = [p for p in PAGES if "static" not in p and not p.endswith(".yaml")]
# What a policy may name: this origin, nothing, and (docs) inline styles, data: images
# and blob: workers; never another origin.
_SOURCES = {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}


def _policy(header: str) -> dict[str, list[str]]:
    return {name: sources for name, *sources in (d.split() for d in header.split(";") if d.strip())}


class _Links(HTMLParser):
    """Every URL a page loads or sends to, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "action", "spec-url", "data-openapi"):
            if found.get(name):
                self.urls.append(str(found[name]))
        script = tag == "script" and found.get("type", "text/javascript") != "application/json"
        if script and not found.get("src"):
            self.inline_scripts += 1


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_gets_a_policy_that_loads_only_from_this_origin(api: Api, path: str) -> None:
    response = await api.http.get(path, headers=api.as_operator)
    assert response.status_code == 200, response.text
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = _policy(response.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert {s for sources in policy.values() for s in sources} <= _SOURCES
    if path.startswith("/dashboard"):
        assert policy["style-src"] == ["'self'"]


@pytest.mark.parametrize("path", HTML_PAGES)
async def test_a_page_names_only_this_origin_and_no_inline_script(api: Api, path: str) -> None:
    response = await api.http.get(path, headers=api.as_operator)
    links = _Links()
    links.feed(response.text)
    assert links.inline_scripts == 0
    foreign = [url for url in links.urls if urlsplit(url).scheme or urlsplit(url).netloc]
    assert foreign == [], path
    for url in links.urls:
        if url.startswith(("/docs/static/", "/dashboard/static/")):
            assert (await api.http.get(url)).status_code == 200, url


async def test_the_api_answers_without_the_pages_headers(api: Api) -> None:
    response = await api.http.get("/v1/agents")
    assert response.status_code == 200
    assert "content-security-policy" not in response.headers
