"""The gateway app alone, for route-level tests: real Kafka, Postgres and Redis, its own
topics (prefix) and schema, and no workers. The test plays the rest of the platform:
``fold`` projects facts as the projector would, and ``commands`` reads what the gateway
recorded, so a test can answer a command the way the command handler would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from gateway.app import create_app
from gateway.auth import issue_key, issue_operator_key
from gateway.connections import Gateway
from projections.migrate import BILLING_SCRIPTS, upgrade
from projections.ops import BILLING
from projections.secrets import new_key
from projections.store import ProjectionStore
from schemas import billing, events
from schemas.base import Fact
from schemas.billing import PLATFORM
from schemas.envelope import Envelope, envelope, from_kafka
from streams.catalog import Catalog, ensure_topics
from streams.handler import Position
from streams.settings import Settings
from tests.e2e.conftest import DATABASE_URL
from tests.eventually import eventually_async
from tests.services import redis_url
from tests.topics import read_all

SOURCE = "/tests/gateway"


@dataclass
class Api:
    http: httpx.AsyncClient  # sends the tenant's key
    gateway: Gateway
    settings: Settings
    catalog: Catalog
    store: ProjectionStore
    billing_store: ProjectionStore
    tenant_id: str
    key: str
    operator_key: str
    _offsets: dict[str, int] = field(default_factory=dict)

    async def fold(self, *envs: Envelope[Any]) -> None:
        """Project ``envs`` as the projectors would (usage and billing facts into the
        billing read models), at the next offsets of their topics."""
        billing_topics = (self.catalog.usage, self.catalog.billing)
        for env in envs:
            topic = self.catalog.topic_for(type(env.data))
            offset = self._offsets.get(topic, 0)
            self._offsets[topic] = offset + 1
            store = self.billing_store if topic in billing_topics else self.store
            await store.apply([(env, Position(topic, 0, offset))])

    @property
    def as_operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_key}"}

    def fact(self, data: Fact, cause: Envelope[Any] | None = None) -> Envelope[Any]:
        """An envelope of the tenant's; with ``cause``, the outcome it caused."""
        if cause is not None:
            return cause.follow(data, step="outcome", source=SOURCE)
        return envelope(data, source=SOURCE, tenant_id=self.tenant_id)

    async def records(self, topic: str) -> list[Envelope[Any]]:
        """What is on one of the gateway's topics, in log order."""
        bootstrap = self.settings.kafka_bootstrap_servers
        records = await asyncio.to_thread(read_all, bootstrap, topic)
        return [from_kafka(r.key, r.value, list(r.headers)) for r in records]

    async def commands(self) -> list[Envelope[Any]]:
        """What the gateway recorded on the commands topic."""
        return await self.records(self.catalog.commands)

    async def recorded(self, kind: type[Fact], timeout: float = 10.0) -> Envelope[Any]:
        """The first record of ``kind`` on its topic, once the gateway has recorded it
        (a topic has no event to wait on: it is read again until it holds one)."""
        topic = self.catalog.topic_for(kind)

        async def found() -> list[Envelope[Any]]:
            return [env for env in await self.records(topic) if isinstance(env.data, kind)]

        return (await eventually_async(found, f"a {kind.__name__} on {topic}", timeout=timeout))[0]


@pytest.fixture
async def api(bootstrap: str) -> AsyncIterator[Api]:
    tag = f"gw_{uuid.uuid4().hex[:10]}"
    catalog = Catalog(f"{tag}.")
    await ensure_topics(bootstrap, catalog, 1)
    await asyncio.to_thread(upgrade, DATABASE_URL, tag)
    await asyncio.to_thread(upgrade, DATABASE_URL, f"{tag}_billing", BILLING_SCRIPTS)
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=catalog.prefix,
        database_url=DATABASE_URL,
        redis_url=redis_url(),
        database_schema=tag,
        secrets_key=new_key(),
        tool_allowed_networks="127.0.0.0/8",
    )
    app = create_app(settings)
    store = ProjectionStore(DATABASE_URL, tag)
    billing_store = ProjectionStore(DATABASE_URL, settings.billing_schema, BILLING)
    tenant_id = f"tenant-{tag}"
    key, asked = issue_key(tenant_id)
    issued = events.ApiKeyCreated(**asked.model_dump())  # as the command handler decides
    operator_key, requested = issue_operator_key("finance")
    operator = billing.OperatorCreated(**requested.model_dump())  # as the billing decider decides
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://gateway",
                headers={"Authorization": f"Bearer {key}"},
            ) as http,
        ):
            api = Api(
                http,
                app.state.gateway,
                settings,
                catalog,
                store,
                billing_store,
                tenant_id,
                key,
                operator_key,
            )
            created = api.fact(events.TenantCreated(tenant_id=tenant_id, display_name="t"))
            platform = envelope(operator, source=SOURCE, tenant_id=PLATFORM)
            await api.fold(created, api.fact(issued), platform)
            yield api
    finally:
        await store.close()
        await billing_store.close()
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            for schema in (tag, f"{tag}_secrets", f"{tag}_billing"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body
