"""The operators' dashboard over the gateway alone: who may open it, what bad filters get,
and that its figures and pages come from the read models, paginated."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from schemas import billing, events
from schemas.billing import PLATFORM, ModelRates, PricePlan
from schemas.envelope import Envelope, envelope
from schemas.usage import UsageRecorded
from tests.gateway.conftest import SOURCE, Api
from tests.gateway.test_turns import finished

PAGES = [
    "/dashboard",
    "/dashboard/pipeline",
    "/dashboard/turns",
    "/dashboard/dead-letters",
    "/dashboard/tenants",
]
DATA = [
    "/dashboard/api/overview",
    "/dashboard/api/turns",
    "/dashboard/api/pipeline",
    "/dashboard/api/dead-letters",
]


def _turn(
    api: Api, n: int, *, failed: bool = False, took: datetime.timedelta | None = None
) -> list[Envelope[Any]]:
    """The facts of one turn of session s-<n>, requested, accepted and ended; ``took``:
    how long before its end its request is said to be."""
    ids: dict[str, Any] = {"session_id": f"s-{n}", "turn_id": f"t-{n:04d}"}
    requested = envelope(
        events.TurnRequested(**ids, message="hi"), source=SOURCE, tenant_id=api.tenant_id
    )
    facts = finished(api, requested, "ok")
    end: dict[str, Any] = {"agent_id": "a-1", "requested_at": requested.time}
    if failed:
        facts[-1] = api.fact(
            events.TurnFailed(**ids, **end, code="MODEL_UNAVAILABLE", detail="HTTP 500")
        )
    if took is not None:
        done = facts[-1].data.model_copy(update={"requested_at": facts[-1].time - took})
        facts[-1] = dataclasses.replace(facts[-1], data=done)
    return facts


def _model_call(api: Api, n: int, latency_ms: int, tokens: int) -> Envelope[Any]:
    """A model call answered ``latency_ms`` after it was requested."""
    now = datetime.datetime.now(datetime.UTC)
    answered = api.fact(
        events.ModelCallCompleted(
            session_id=f"s-{n}",
            turn_id=f"t-{n:04d}",
            call_id=f"c-{n}",
            step=1,
            text="ok",
            tool_calls=[],
            usage=events.UsageValue(input_tokens=tokens, output_tokens=2),
            provider="dev",
            model="dev-1",
            requested_at=now - datetime.timedelta(milliseconds=latency_ms),
        )
    )
    return answered.at(now)


@contextlib.asynccontextmanager
async def signed_in(api: Api) -> AsyncIterator[httpx.AsyncClient]:
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
    ("query", "status", "code", "field"),
    [
        ("/dashboard/api/turns?status=exploded", 422, "VALIDATION_FAILED", "status"),
        ("/dashboard/api/turns?before=yesterday", 400, "INVALID_CURSOR", "before"),
        ("/dashboard/api/turns?tenant=a%20b", 422, "VALIDATION_FAILED", "tenant"),
        ("/dashboard/api/overview?window=2d", 422, "VALIDATION_FAILED", "window"),
        ("/dashboard/turns?status=exploded", 422, "VALIDATION_FAILED", "status"),
        ("/dashboard/api/dead-letters?before=0-1", 400, "INVALID_CURSOR", "before"),
    ],
)
async def test_bad_filters_get_problem_details(
    api: Api, query: str, status: int, code: str, field: str
) -> None:
    response = await api.http.get(query, headers=api.as_operator)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert field in response.text


async def test_the_overview_counts_what_the_read_models_hold(api: Api) -> None:
    # Turns of 1 to 6 seconds, the last one failed; three model calls.
    for n in range(6):
        took = datetime.timedelta(seconds=n + 1)
        await api.fold(*_turn(api, n, failed=n == 5, took=took))
    for n, (latency_ms, tokens) in enumerate(((120, 10), (130, 30), (2000, 5))):
        await api.fold(_model_call(api, n, latency_ms, tokens))
    response = await api.http.get("/dashboard/api/overview?window=15m", headers=api.as_operator)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["finished"], data["failed"]) == (6, 1)
    assert data["failure_rate"] == pytest.approx(1 / 6)
    assert (data["span"], sum(m["completed"] for m in data["spans"])) == (1, 5)
    assert data["failures"] == [{"error_code": "MODEL_UNAVAILABLE", "turns": 1}]
    assert [(t["tenant_id"], t["turns"], t["input_tokens"]) for t in data["tenants"]] == [
        (api.tenant_id, 6, 15)
    ]
    # Percentiles from the histogram: within 4.5 % of the turn they fall on.
    assert data["p50_ms"] == pytest.approx(3000, rel=0.045)
    assert data["p99_ms"] == pytest.approx(6000, rel=0.045)
    assert [(a["agent_id"], a["turns"], a["failed"]) for a in data["agents"]] == [("a-1", 6, 1)]
    assert [t["turn_id"] for t in data["recent"]][:1] == ["t-0005"]
    [model] = data["models"]
    assert model == {
        "provider": "dev",
        "model": "dev-1",
        "calls": 3,
        "failed": 0,
        "p50_ms": pytest.approx(130, rel=0.045),
        "p99_ms": pytest.approx(2000, rel=0.045),
        "input_tokens": 45,
        "cached_input_tokens": 0,
        "output_tokens": 6,
    }
    assert data["tenants"][0]["spent_today"] is None  # on no plan

    # On a plan: today's usage at its rates, free allowances aside; yesterday's is not today's.
    rates = ModelRates(input=Decimal("0.001"), output=Decimal("0.01"), free_input_tokens=1000)
    plan = PricePlan(currency="EUR", models={"dev-1": rates})
    now = datetime.datetime.now(datetime.UTC)
    await api.fold(
        envelope(
            billing.PricePlanPublished(plan_id="std", version=1, plan=plan, operator_id="op"),
            source=SOURCE,
            tenant_id=PLATFORM,
        ),
        api.fact(
            billing.TenantPlanAssigned(
                tenant_id=api.tenant_id,
                plan_id="std",
                version=1,
                effective_from=now - datetime.timedelta(days=2),
                operator_id="op",
            )
        ),
        *(
            api.fact(
                UsageRecorded(
                    tenant_id=api.tenant_id,
                    kind="model",
                    resource="dev-1",
                    quantities={"input_tokens": 100, "output_tokens": 20},
                    used_at=used_at,
                )
            )
            for used_at in (now, now - datetime.timedelta(days=1))
        ),
    )
    priced = await api.http.get("/dashboard/api/overview?window=15m", headers=api.as_operator)
    # 100 * 0.001 + 20 * 0.01
    assert priced.json()["tenants"][0]["spent_today"] == "0.300000 EUR"

    # A day is read from the hourly spans: the same turns, fewer points.
    day = await api.http.get("/dashboard/api/overview?window=24h", headers=api.as_operator)
    daily = day.json()
    assert (daily["span"], len(daily["spans"])) == (60, 25)
    assert (daily["finished"], daily["failed"], daily["p50_ms"]) == (6, 1, data["p50_ms"])
    assert daily["models"] == data["models"]


async def test_turns_are_filtered_and_paginated_without_gaps_or_repeats(api: Api) -> None:
    for n in range(120):
        await api.fold(*_turn(api, n, failed=n % 10 == 0))
    async with signed_in(api) as client:
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
    async with signed_in(api) as client:
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
    from gateway.routes.dashboard.overview import Window
    from projections.dashboard import WINDOWS

    assert set(Window.__args__) == set(WINDOWS)  # type: ignore[attr-defined]
    assert datetime.timedelta(minutes=WINDOWS["24h"]) == datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("session-ended", "Your session has ended: sign in again."),
        ("unknown-key", "Unknown key."),
        ("Your key was revoked. Call +1 555 0100 to restore it.", None),
        ("<b>signed out</b>", None),
        ("not-operator ", None),
        ("", None),
    ],
)
async def test_the_login_page_shows_only_its_own_messages(
    api: Api, error: str, shown: str | None
) -> None:
    async with _anonymous(api) as anon:
        page = await anon.get("/dashboard/login", params={"error": error})
    assert page.status_code == 200
    if shown is None:
        assert 'class="error"' not in page.text
        assert error.strip() == "" or error.strip() not in page.text
    else:
        assert f'<p class="error" role="alert">{shown}</p>' in page.text
