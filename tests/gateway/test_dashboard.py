"""The operators' dashboard over the gateway alone: who may open it, what bad filters get,
and that its figures and pages come from the read models, paginated."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from schemas import events
from schemas.envelope import Envelope, envelope
from tests.gateway.conftest import SOURCE, Api
from tests.gateway.test_turns import finished

PAGES = ["/dashboard", "/dashboard/pipeline", "/dashboard/turns", "/dashboard/tenants"]
DATA = ["/dashboard/api/overview", "/dashboard/api/turns", "/dashboard/api/pipeline"]


def _turn(api: Api, n: int, *, failed: bool = False) -> list[Envelope[Any]]:
    """The facts of one turn of session s-<n>, requested, accepted and ended."""
    ids: dict[str, Any] = {"session_id": f"s-{n}", "turn_id": f"t-{n:04d}"}
    requested = envelope(
        events.TurnRequested(**ids, message="hi"), source=SOURCE, tenant_id=api.tenant_id
    )
    facts = finished(api, requested, "ok")
    if failed:
        facts[-1] = api.fact(events.TurnFailed(**ids, code="MODEL_UNAVAILABLE", detail="HTTP 500"))
    return facts


@contextlib.asynccontextmanager
async def _signed_in(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the dashboard's session cookie and no key."""
    async with _anonymous(api) as client:
        yield await _sign_in(client, api)


def _anonymous(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=api.http._transport, base_url="http://gateway")


async def _sign_in(client: httpx.AsyncClient, api: Api) -> httpx.AsyncClient:
    response = await client.post(
        "/dashboard/login",
        content=f"key={api.operator_key}&next=/dashboard/turns",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard/turns"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    return client


@pytest.mark.parametrize("path", PAGES + DATA)
async def test_a_tenant_key_gets_403_on_the_dashboard_and_its_data(api: Api, path: str) -> None:
    response = await api.http.get(path)  # the client sends the tenant's key
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "OPERATOR_REQUIRED"


async def test_without_a_session_pages_go_to_sign_in_and_data_is_401(api: Api) -> None:
    async with _anonymous(api) as anon:
        page = await anon.get("/dashboard/turns?status=failed")
        assert page.status_code == 303
        assert (
            page.headers["location"] == "/dashboard/login?next=/dashboard/turns%3Fstatus%3Dfailed"
        )
        data = await anon.get("/dashboard/api/overview")
        assert data.status_code == 401
        assert data.json()["code"] == "UNAUTHENTICATED"
        tenant = await anon.post(
            "/dashboard/login",
            content=f"key={api.key}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert tenant.status_code == 200
        assert "not an operator" in tenant.text
        assert "set-cookie" not in tenant.headers


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/dashboard/api/turns?status=exploded", "status"),
        ("/dashboard/api/turns?before=yesterday", "before"),
        ("/dashboard/api/turns?tenant=a%20b", "tenant"),
        ("/dashboard/api/overview?window=2d", "window"),
        ("/dashboard/turns?status=exploded", "status"),
    ],
)
async def test_bad_filters_get_problem_details(api: Api, query: str, field: str) -> None:
    response = await api.http.get(query, headers=api.as_operator)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "VALIDATION_FAILED"
    assert field in response.text


async def test_the_overview_counts_what_the_read_models_hold(api: Api) -> None:
    for n in range(6):
        await api.fold(*_turn(api, n, failed=n == 5))
    response = await api.http.get("/dashboard/api/overview?window=15m", headers=api.as_operator)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["finished"], data["failed"]) == (6, 1)
    assert data["failure_rate"] == pytest.approx(1 / 6)
    assert sum(m["completed"] for m in data["minutes"]) == 5
    assert data["failures"] == [{"error_code": "MODEL_UNAVAILABLE", "turns": 1}]
    assert [(t["tenant_id"], t["turns"], t["input_tokens"]) for t in data["tenants"]] == [
        (api.tenant_id, 6, 15)
    ]
    assert data["p50_ms"] is not None
    assert [t["turn_id"] for t in data["recent"]][:1] == ["t-0005"]


async def test_turns_are_filtered_and_paginated_without_gaps_or_repeats(api: Api) -> None:
    for n in range(120):
        await api.fold(*_turn(api, n, failed=n % 10 == 0))
    async with _signed_in(api) as client:
        seen: list[str] = []
        cursor: dict[str, str] = {}
        while True:
            page = (await client.get("/dashboard/api/turns", params=cursor)).json()
            assert len(page["items"]) <= 50
            seen += [t["turn_id"] for t in page["items"]]
            if page["next"] is None:
                break
            cursor = {"before": page["next"]}
        assert len(seen) == len(set(seen)) == 120
        failed = (await client.get("/dashboard/api/turns?status=failed")).json()["items"]
        assert {t["turn_id"] for t in failed} == {f"t-{n:04d}" for n in range(0, 120, 10)}
        html = await client.get("/dashboard/turns?status=failed")
        assert html.status_code == 200
        assert html.text.count("MODEL_UNAVAILABLE") == 12
        assert "Older turns" not in html.text
        other = await client.get("/dashboard/api/turns?tenant=someone-else")
        assert other.json() == {"items": [], "next": None}


async def test_every_page_renders_for_a_signed_in_operator_and_signing_out_ends_it(
    api: Api,
) -> None:
    await api.fold(*_turn(api, 1, failed=True))
    async with _signed_in(api) as client:
        for path in [*PAGES, "/dashboard/turns/t-0001"]:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith("text/html")
        turn = await client.get("/dashboard/turns/t-0001")
        assert "MODEL_UNAVAILABLE" in turn.text
        assert "turn accepted" in turn.text
        missing = await client.get("/dashboard/turns/nope")
        assert missing.status_code == 404
        await client.post("/dashboard/logout")
        again = await client.get("/dashboard")
        assert again.status_code == 303


def test_the_window_choices_match_the_read_model_queries() -> None:
    from gateway.routes.dashboard import Window
    from projections.dashboard import WINDOWS

    assert set(Window.__args__) == set(WINDOWS)  # type: ignore[attr-defined]
    assert datetime.timedelta(minutes=WINDOWS["24h"]) == datetime.timedelta(days=1)
