"""The dashboard's sessions belong to one deployment and to an operator it has: a cookie
of one deployment opens nothing on another that shares the Redis (even where that one
has the same operator), and a session ends when its operator is no longer in the
deployment's operators read model."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
from psycopg import sql

from gateway.app import create_app
from gateway.auth import issue_operator_key
from projections.migrate import BILLING_SCRIPTS, upgrade
from projections.ops import BILLING
from projections.store import ProjectionStore
from schemas.billing import PLATFORM, OperatorCreated
from schemas.envelope import envelope
from streams.catalog import Catalog, ensure_topics
from streams.handler import Position
from tests.e2e.conftest import DATABASE_URL
from tests.gateway.conftest import SOURCE, Api

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@contextlib.asynccontextmanager
async def _deployment(
    api: Api, bootstrap: str, operator: OperatorCreated
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A second deployment on the same Kafka, Postgres and Redis as ``api``'s (its own
    topics and schemas) whose operators read model holds ``operator``: a client of its
    gateway, and the name of its session cookie."""
    tag = f"gw_{uuid.uuid4().hex[:10]}"
    catalog = Catalog(f"{tag}.")
    await ensure_topics(bootstrap, catalog, 1)
    await asyncio.to_thread(upgrade, DATABASE_URL, tag)
    await asyncio.to_thread(upgrade, DATABASE_URL, f"{tag}_billing", BILLING_SCRIPTS)
    settings = api.settings.model_copy(
        update={"topic_prefix": catalog.prefix, "database_schema": tag}
    )
    store = ProjectionStore(DATABASE_URL, settings.billing_schema, BILLING)
    app = create_app(settings)
    try:
        fact = envelope(operator, source=SOURCE, tenant_id=PLATFORM)
        await store.apply([(fact, Position(catalog.billing, 0, 0))])
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://other"
            ) as client,
        ):
            yield client, app.state.dashboard_store.cookie
    finally:
        await store.close()
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            for schema in (tag, f"{tag}_secrets", f"{tag}_billing"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


async def _operator(api: Api) -> tuple[str, OperatorCreated]:
    """A new operator of ``api``'s deployment: its key and the fact that made it."""
    key, requested = issue_operator_key("on-call")
    fact = OperatorCreated(**requested.model_dump())  # as the billing decider decides
    await api.fold(envelope(fact, source=SOURCE, tenant_id=PLATFORM))
    return key, fact


async def _session(client: httpx.AsyncClient, key: str) -> tuple[str, str]:
    """Sign in on ``client``'s gateway: the session cookie's name and value."""
    response = await client.post("/dashboard/login", content=f"key={key}", headers=FORM)
    assert response.status_code == 303, response.text
    [(name, token)] = response.cookies.items()
    client.cookies.clear()  # each request below names the cookie it sends
    return name, token


def _cookie(name: str, token: str) -> dict[str, str]:
    return {"Cookie": f"{name}={token}"}


def _anonymous(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=api.http._transport, base_url="http://gateway")


async def test_a_session_of_one_deployment_opens_nothing_on_another_sharing_the_redis(
    api: Api, bootstrap: str
) -> None:
    key, operator = await _operator(api)
    async with (
        _deployment(api, bootstrap, operator) as (other, other_cookie),
        _anonymous(api) as here,
    ):
        name, token = await _session(here, key)
        assert name != other_cookie  # two deployments on one host keep a cookie each
        mine = await here.get("/dashboard/api/overview", headers=_cookie(name, token))
        assert mine.status_code == 200, mine.text

        # The cookie as it was, and under the other deployment's name.
        for cookie in (_cookie(name, token), _cookie(other_cookie, token)):
            data = await other.get("/dashboard/api/overview", headers=cookie)
            assert data.status_code == 401, (cookie, data.text)
            assert data.json()["code"] == "UNAUTHENTICATED"
            page = await other.get("/dashboard/turns", headers=cookie)
            assert page.status_code == 303
        assert page.headers["location"] == (
            "/dashboard/login?next=/dashboard/turns&error=session-ended"
        )
        redrive = await other.post(
            "/dashboard/dead-letters/0/0/redrive",
            headers={**_cookie(other_cookie, token), "X-Agentlog-Dashboard": "1"},
        )
        assert redrive.status_code == 401

        # The same operator signs in there on its own, and that session stays there.
        other_name, other_token = await _session(other, key)
        assert other_name == other_cookie
        there = await other.get("/dashboard/api/overview", headers=_cookie(other_name, other_token))
        assert there.status_code == 200, there.text
        back = await here.get("/dashboard/api/overview", headers=_cookie(name, other_token))
        assert back.status_code == 401


async def test_a_session_ends_when_its_operator_is_not_in_the_operators_read_model(
    api: Api,
) -> None:
    """Two operators sign in; one of them is then gone from the read model (as after a
    rebuild from a log that never had it)."""
    (staying_key, _staying), (gone_key, gone) = await _operator(api), await _operator(api)
    async with _anonymous(api) as client:
        staying = _cookie(*await _session(client, staying_key))
        gone_session = _cookie(*await _session(client, gone_key))
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DELETE FROM {}.operators WHERE operator_id = %s").format(
                    sql.Identifier(api.settings.billing_schema)
                ),
                (gone.operator_id,),
            )
        assert (await client.get("/dashboard/api/turns", headers=staying)).status_code == 200
        data = await client.get("/dashboard/api/turns", headers=gone_session)
        assert data.status_code == 401
        assert data.json()["code"] == "UNAUTHENTICATED"
        page = await client.get("/dashboard", headers=gone_session)
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login?next=/dashboard&error=session-ended"
        assert "Max-Age=0" in page.headers["set-cookie"]  # the browser forgets it
        shown = await client.get(page.headers["location"])
        assert "Your session has ended" in shown.text


async def test_a_live_stream_ends_when_its_session_does(api: Api) -> None:
    key, _operator_created = await _operator(api)
    async with _anonymous(api) as client:
        cookie = _cookie(*await _session(client, key))
        live = asyncio.create_task(client.get("/dashboard/api/live", headers=cookie))
        # The first update is sent. A fixed wait: the ASGI transport hands the body over
        # only once the stream has ended, so nothing shows it sooner.
        await asyncio.sleep(0.5)
        assert not live.done()
        await client.post("/dashboard/logout", headers=cookie)
        streamed = await asyncio.wait_for(live, timeout=10)
    assert streamed.status_code == 200
    assert streamed.text.startswith("event: overview")
    assert streamed.text.count("event: overview") <= 2
