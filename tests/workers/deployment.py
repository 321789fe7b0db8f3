"""A deployment of a test's own on the suite's broker and Postgres: topics under its own
prefix, migrated schemas of its own, and a started publisher; all dropped afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from projections.database import Database
from projections.ops import BILLING, PROJECTION
from projections.secrets import new_key
from projections.waiter import next_offset
from schemas import events
from schemas.envelope import Envelope, envelope
from streams.catalog import Catalog
from streams.partitions import LogReader
from streams.publisher import Publisher
from streams.settings import Settings
from tests.e2e.conftest import DATABASE_URL
from tests.eventually import eventually_async
from workers.runner import prepare, run_roles


@dataclass
class Deployed:
    """A deployment's settings and catalog, a publisher, and one of its read-model
    databases."""

    settings: Settings
    catalog: Catalog
    publisher: Publisher
    db: Database


@asynccontextmanager
async def deployment(
    bootstrap: str, kind: str, **settings: Any
) -> AsyncIterator[tuple[Settings, Publisher]]:
    """Its settings (schema and topic prefix ``<kind>_<random>``) and a publisher."""
    tag = f"{kind}_{uuid.uuid4().hex[:10]}"
    config = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{tag}.",
        database_url=DATABASE_URL,
        database_schema=tag,
        secrets_key=new_key(),
        **settings,
    )
    await prepare(config)
    publisher = Publisher(bootstrap, Catalog.from_settings(config))
    await publisher.start()
    try:
        yield config, publisher
    finally:
        await publisher.stop()
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{tag}%",)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')


async def project(
    settings: Settings, db: Database, topic: str, projection: str = PROJECTION
) -> None:
    """Run the projector of ``projection`` (its role) until it has applied ``topic`` to
    the end the topic has now; ``db`` holds the projection's positions."""
    async with LogReader(settings.kafka_bootstrap_servers) as reader:
        ends = await reader.ends(await reader.partitions(topic))
    stop = asyncio.Event()
    role = "billing" if projection == BILLING else "projector"
    running = asyncio.create_task(run_roles(settings, [role], stop, probes=False))

    async def applied() -> bool:
        for tp, end in ends.items():
            assert await next_offset(db, tp.topic, tp.partition, projection) >= end
        return True

    try:
        await eventually_async(applied, f"the {projection} projection at {topic}'s end")
    finally:
        stop.set()
        await running


def accepted_turn(
    session_id: str,
    turn_id: str,
    tenant_id: str,
    *,
    source: str,
    message: str = "hi",
    agent_id: str = "a",
    config: events.AgentConfig | None = None,
    tools: list[events.ToolDefinition] | None = None,
) -> tuple[Envelope[Any], Envelope[Any]]:
    """A turn's request and its acceptance, as the gateway and the command handler
    record them."""
    request = envelope(
        events.TurnRequested(session_id=session_id, turn_id=turn_id, message=message),
        source=source,
        tenant_id=tenant_id,
    )
    accepted = events.TurnAccepted(
        session_id=session_id,
        turn_id=turn_id,
        agent_id=agent_id,
        agent_version=1,
        config=config or events.AgentConfig(name="n", model="dev"),
        tools=tools or [],
        history=[],
        message=message,
        requested_at=request.time,
    )
    return request, request.follow(accepted, step="outcome", source=source)
