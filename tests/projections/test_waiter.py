"""``Waiter`` against real Postgres: readers and workers woken by the store's notifications
(a changed row, a saved position), the database asked when none could have come."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from projections.database import Database
from projections.store import ProjectionStore
from projections.tenants import KEY_REVOKED
from projections.waiter import RECONNECT, Waiter
from schemas import events
from schemas.envelope import envelope
from tests.eventually import eventually_async
from tests.kafka import closed_port

from .conversation import CATALOG, SOURCE, Ids, Log, conversation, noop
from .rows import select

COMMANDS, EVENTS = CATALOG.commands, CATALOG.events


class CountingDatabase(Database):
    """Counts the questions a waiter asks the database (one connection each)."""

    def __init__(self, database_url: str, schema: str) -> None:
        super().__init__(database_url, schema)
        self.asked = 0

    @asynccontextmanager
    async def connection(
        self, tenant_id: str | None = None
    ) -> AsyncIterator[AsyncConnection[DictRow]]:
        async with super().connection(tenant_id) as conn:
            yield conn
        self.asked += 1

    async def until_asked(self, times: int) -> None:
        """Return once the waiter has asked ``times`` questions."""

        async def asked() -> int:
            assert self.asked >= times, f"asked {self.asked} times"
            return self.asked

        await eventually_async(asked, f"the waiter to ask {times} questions", timeout=5)


@pytest.fixture
async def counting(database_url: str, schema: str) -> AsyncIterator[CountingDatabase]:
    database = CountingDatabase(database_url, schema)
    yield database
    await database.close()


async def listeners(db: AsyncConnection[Any], channel_name: str) -> int:
    """How many sessions listen on the channel."""
    listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel_name)).as_string(db)
    cursor = await db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'idle'", (listen,)
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def wait_until_listening(db: AsyncConnection[Any], channel_name: str) -> None:
    """Return once some session has run ``LISTEN`` on the channel (a notification sent
    before that is lost, by Postgres's design)."""

    async def listening() -> int:
        return await listeners(db, channel_name)

    await eventually_async(listening, f"a listener on {channel_name}", timeout=5)


@asynccontextmanager
async def listening(waiter: Waiter, db: AsyncConnection[Any]) -> AsyncIterator[Waiter]:
    async with waiter.listening():
        await wait_until_listening(db, waiter.channel)
        yield waiter


async def test_a_waiter_listens_only_while_its_block_runs(
    counting: CountingDatabase, db: AsyncConnection[Any]
) -> None:
    """A worker that waits on its assignment alone holds no listener between: it would
    wake at every change the projector makes."""
    waiter = Waiter(counting)

    async def none_listening() -> bool:
        # A closed session leaves pg_stat_activity a moment after its client has gone.
        assert await listeners(db, waiter.channel) == 0
        return True

    for _ in range(2):  # and again, as at the next assignment
        async with listening(waiter, db):
            assert await listeners(db, waiter.channel) == 1
        await eventually_async(none_listening, "the listener's session to end", timeout=5)


async def test_a_turn_notification_wakes_a_waiting_reader(
    store: ProjectionStore, unscoped: Database, schema: str, db: AsyncConnection[Any]
) -> None:
    ids = Ids.new("a")
    items = Log().extend(conversation(ids).values())
    await store.apply(items[:-1])  # everything but TurnCompleted
    checked_once = asyncio.Event()

    async def completed() -> dict[str, Any] | None:
        rows = await select(
            db, schema, "SELECT status FROM {s}.turns WHERE turn_id = %s", ids.turn_id
        )
        if rows[0]["status"] == "completed":
            return rows[0]
        checked_once.set()
        return None

    # Re-checks are an hour apart: only a notification can wake the waiter in time.
    async with listening(Waiter(unscoped, recheck_s=3600), db) as waiter:
        waiting = asyncio.create_task(waiter.until(f"turn:{ids.turn_id}", completed, 10))
        await asyncio.wait_for(checked_once.wait(), 5)
        started = time.monotonic()
        await store.apply(items[-1:])
        found = await waiting
        elapsed = time.monotonic() - started

    assert found == {"status": "completed"}
    assert elapsed < 2, f"woken after {elapsed:.2f} s: by the timeout, not a notification"


async def test_a_subscriber_hears_of_revoked_keys_and_of_every_reconnection(
    store: ProjectionStore, unscoped: Database, db: AsyncConnection[Any]
) -> None:
    heard: list[str | None] = []
    both = asyncio.Event()

    def hear(rest: str | None) -> None:
        heard.append(rest)
        if len(heard) == 2:
            both.set()

    waiter = Waiter(unscoped)
    waiter.subscribe(KEY_REVOKED, hear)
    revoked = events.ApiKeyRevoked(tenant_id="tenant-a", key_id="key-1")

    async with listening(waiter, db):
        await store.apply(Log().extend([envelope(revoked, source=SOURCE, tenant_id="tenant-a")]))
        await asyncio.wait_for(both.wait(), 5)

    # None: changes may have been missed before the listener connected.
    assert heard == [None, "tenant-a"]


async def test_until_position_is_woken_by_the_stores_notification(
    store: ProjectionStore, counting: CountingDatabase, db: AsyncConnection[Any]
) -> None:
    items = Log().extend(conversation(Ids.new("a")).values())
    await store.apply(items[:-1])  # the events partition up to offset 10
    (last,) = [pos.offset for _env, pos in items[-1:]]

    # Re-checks are 30 s apart: only the notification can answer in time.
    async with listening(Waiter(counting, recheck_s=30), db) as waiter:
        waiting = asyncio.create_task(waiter.until_position(EVENTS, 0, last, timeout=20))
        await counting.until_asked(1)
        assert not waiting.done()  # the database said: not yet
        started = time.monotonic()
        await store.apply(items[-1:])
        await asyncio.wait_for(waiting, 5)
        elapsed = time.monotonic() - started
        # A position once notified answers without another question.
        await asyncio.wait_for(waiter.until_position(EVENTS, 0, last, timeout=20), 1)

    assert elapsed < 2, f"returned after {elapsed:.2f} s: not woken by the notification"
    assert counting.asked == 1


async def test_until_position_answers_from_the_database_for_a_position_saved_before(
    store: ProjectionStore, counting: CountingDatabase
) -> None:
    items = Log().extend(conversation(Ids.new("a")).values())
    await store.apply(items)
    last_event = max(pos.offset for _env, pos in items if pos.topic == EVENTS)
    # Never started: no notification can reach it, and re-checks are 30 s apart.
    waiter = Waiter(counting, recheck_s=30)

    await asyncio.wait_for(waiter.until_position(EVENTS, 0, last_event), 2)
    await asyncio.wait_for(waiter.until_position(COMMANDS, 0, 2), 2)

    assert counting.asked == 2


async def test_until_position_times_out_when_the_position_is_never_reached(
    database_url: str,
    schema: str,
    store: ProjectionStore,
    unscoped: Database,
    db: AsyncConnection[Any],
) -> None:
    await store.apply([noop(0, 0), noop(0, 3)])  # next offset 4
    other = ProjectionStore(database_url, schema, projection="other")
    try:
        async with listening(Waiter(unscoped, recheck_s=0.05), db) as waiter:
            # Another projection's position is not this one's, notified or stored.
            await other.apply([noop(0, 50)])
            await waiter.until_position(EVENTS, 0, 3, timeout=1)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await waiter.until_position(EVENTS, 0, 4, timeout=0.5)
            elapsed = time.monotonic() - started
            with pytest.raises(TimeoutError):
                await waiter.until_position(EVENTS, 1, 0, timeout=0.2)  # never folded
            with pytest.raises(TimeoutError):
                await waiter.until_position(COMMANDS, 0, 0, timeout=0.2)
    finally:
        await other.close()

    assert 0.5 <= elapsed < 2


async def test_until_positions_returns_once_every_position_is_reached(
    store: ProjectionStore, counting: CountingDatabase, db: AsyncConnection[Any]
) -> None:
    items = Log().extend(conversation(Ids.new("a")).values())
    commands = [item for item in items if item[1].topic == COMMANDS]
    in_events = [item for item in items if item[1].topic == EVENTS]
    wanted = [(COMMANDS, 0, commands[-1][1].offset), (EVENTS, 0, in_events[-1][1].offset)]

    async with listening(Waiter(counting, recheck_s=30), db) as waiter:
        waiting = asyncio.create_task(waiter.until_positions(wanted, timeout=20))
        await counting.until_asked(1)
        await store.apply(commands)
        await counting.until_asked(2)  # the commands' position came; now the events' is asked
        assert not waiting.done()
        started = time.monotonic()
        await store.apply(in_events)
        await asyncio.wait_for(waiting, 5)
        elapsed = time.monotonic() - started

    assert elapsed < 2, f"returned after {elapsed:.2f} s: not woken by the notification"
    assert counting.asked == 2


def test_the_listener_reconnects_at_waits_doubling_to_5_s() -> None:
    assert [RECONNECT.delay(n) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


async def test_a_listener_that_cannot_connect_tries_again_at_those_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def waits() -> list[float]:
        return [r.__dict__["retry_in"] for r in caplog.records if "retry_in" in r.__dict__]

    async def three_tries() -> list[float]:
        assert len(waits()) >= 3, waits()
        return waits()

    with closed_port() as port, caplog.at_level(logging.WARNING, logger="projections.waiter"):
        waiter = Waiter(Database(f"postgresql://postgres@127.0.0.1:{port}/none", "s"))
        waiter.start()
        try:
            await eventually_async(three_tries, "the listener's third try", timeout=10)
        finally:
            await waiter.close()
    assert waits()[:3] == [0.1, 0.2, 0.4]
