"""The command handler's runtime over real Postgres and Kafka: within one batch, a later
command sees what an earlier one decided, before the projection has applied it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from projections.database import Database
from projections.migrate import upgrade
from projections.store import ProjectionStore
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, envelope
from streams.catalog import Catalog, ensure_topics
from streams.handler import Item, Position
from tests.e2e.conftest import DATABASE_URL
from workers.command_decisions import TurnLimits
from workers.command_handler import CommandHandler

TENANT = "tenant-commands"
CONFIG = events.AgentConfig(name="helper", model="dev")


class Platform:
    def __init__(self, catalog: Catalog, store: ProjectionStore, handler: CommandHandler):
        self.catalog, self.store, self.handler = catalog, store, handler
        self._commands = 0
        self._events = 1  # the agent's creation is at 0

    def commands(self, *data: Fact) -> list[Item]:
        """Commands as the log holds them, one after another on the commands topic."""
        items = []
        for fact in data:
            env = envelope(fact, source="/tests", tenant_id=TENANT)
            items.append((env, Position(self.catalog.commands, 0, self._commands)))
            self._commands += 1
        return items

    async def decide(self, items: list[Item]) -> list[Any]:
        """The outcomes of one batch. The projection applies its commands first, and its
        outcomes after, as the live projector would (so the handler's fence lets it
        through); the events topic itself stays empty, so the fence waits on nothing
        else."""
        await self.store.apply(items)
        outputs: list[Envelope[Any]] = await self.handler.handle_batch(items)
        applied = []
        for env in outputs:
            applied.append((env, Position(self.catalog.events, 0, self._events)))
            self._events += 1
        await self.store.apply(applied)
        return [env.data for env in outputs]


@pytest.fixture
async def platform(bootstrap: str) -> AsyncIterator[Platform]:
    schema = f"cmd_{uuid.uuid4().hex[:12]}"
    catalog = Catalog(f"{schema}.")
    await ensure_topics(bootstrap, catalog, 1)
    await asyncio.to_thread(upgrade, DATABASE_URL, schema)
    store = ProjectionStore(DATABASE_URL, schema)
    limits = TurnLimits(max_message_bytes=1024, max_steps=8, max_tool_calls=8)
    handler = CommandHandler(bootstrap, catalog, Database(DATABASE_URL, schema), limits)
    agent = envelope(
        events.AgentCreated(agent_id="a-1", config=CONFIG), source="/t", tenant_id=TENANT
    )
    await store.apply([(agent, Position(catalog.events, 0, 0))])
    try:
        yield Platform(catalog, store, handler)
    finally:
        await handler.close()
        await store.close()
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def test_a_turn_in_the_batch_that_opens_its_session_is_accepted(
    platform: Platform,
) -> None:
    opened, turn = platform.commands(
        events.SessionCreateRequested(session_id="s-1", agent_id="a-1"),
        events.TurnRequested(session_id="s-1", turn_id="t-1", message="hello"),
    )

    outcomes = await platform.decide([opened, turn])

    assert [type(o) for o in outcomes] == [events.SessionCreated, events.TurnAccepted]


async def test_a_turn_accepted_earlier_in_the_batch_keeps_the_session_busy(
    platform: Platform,
) -> None:
    opened = platform.commands(events.SessionCreateRequested(session_id="s-1", agent_id="a-1"))
    await platform.decide(opened)
    first, second, third = platform.commands(
        *(
            events.TurnRequested(session_id="s-1", turn_id=f"t-{n}", message="hello")
            for n in range(3)
        )
    )

    outcomes = await platform.decide([first, second, third])

    assert [type(o) for o in outcomes] == [events.TurnAccepted] + [events.TurnRejected] * 2
    assert [o.code for o in outcomes[1:]] == ["TURN_IN_PROGRESS"] * 2
    assert all(o.detail == "turn t-0 is still running" for o in outcomes[1:])
