"""Read your own writes: the one way to wait until the read models have caught up.

The projector sends Postgres notifications when its transaction commits: for every turn,
command outcome, key and tool it changes (``Notify`` ops), and for every position it
saves (``position:<projection>:<topic>:<partition>@<next offset>``). ``Waiter`` listens
on one connection and wakes what waits on those keys:

- ``until(key, check)``: a request waiting for its row (a turn to finish, an outcome);
- ``until_position(topic, partition, offset)``: a worker's offset fence, before it
  decides on state the projection must have applied up to its own input.

A waiter re-checks the database at least every ``recheck_s`` anyway: a lost listener
connection costs latency, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

from psycopg import AsyncConnection, sql

from streams.backoff import Backoff

from .database import Database
from .ops import PROJECTION
from .rows import Reader, Row

log = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_CHANNEL = 63  # Postgres identifiers
# How long the listener waits before connecting again: doubling, at most 5 s.
RECONNECT = Backoff(first_s=0.1, max_s=5.0)


def channel(schema: str) -> str:
    """The notification channel of the read models in ``schema``."""
    name = f"{schema}.changes"
    if len(name) <= _MAX_CHANNEL:
        return name
    return f"changes.{hashlib.sha256(schema.encode()).hexdigest()[:40]}"


def position_key(topic: str, partition: int, projection: str = PROJECTION) -> str:
    return f"position:{projection}:{topic}:{partition}"


async def next_offset(
    db: Database, topic: str, partition: int, projection: str = PROJECTION
) -> int:
    """The next offset of the partition the projection will apply (0: none applied)."""
    async with db.connection() as conn:
        row = await (
            await conn.execute(
                db.statement(
                    "SELECT next_offset FROM {s}.projection_positions"
                    " WHERE projection = %s AND topic = %s AND partition = %s"
                ),
                (projection, topic, partition),
            )
        ).fetchone()
    return 0 if row is None else int(row["next_offset"])


class _PositionRow(Row):
    partition: int
    next_offset: int


async def positions(db: Reader, topic: str, projection: str = PROJECTION) -> dict[int, int]:
    """The next offset the projection will apply of each partition of ``topic`` it has
    applied any of (read in a snapshot, they tell where its rows stand)."""
    found = await db.rows(
        _PositionRow,
        None,
        "SELECT partition, next_offset FROM {s}.projection_positions"
        " WHERE projection = %s AND topic = %s",
        projection,
        topic,
    )
    return {row.partition: row.next_offset for row in found}


class Waiter:
    def __init__(
        self, db: Database, *, recheck_s: float = 1.0, projection: str = PROJECTION
    ) -> None:
        """``db``: where positions are read when a notification may have been missed (a
        tenant-scoped database cannot: such a waiter waits on keys only). Positions are
        those of ``projection``, whose read models ``db`` holds."""
        self.db = db
        self.projection = projection
        self.channel = channel(db.schema)
        self.recheck_s = recheck_s
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._positions: dict[str, int] = {}  # next offset by position key, as notified
        self._task: asyncio.Task[None] | None = None
        self._subscribers: list[tuple[str, Callable[[str | None], None]]] = []

    def subscribe(self, prefix: str, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(rest)`` for every change whose key starts with ``prefix``, with
        the rest of the key; and ``callback(None)`` once the listener is (re)connected,
        since changes may have been missed while it was not."""
        self._subscribers.append((prefix, callback))

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="waiter-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[Waiter]:
        """Listen only while the block runs: for a worker that waits now and then (on
        its partitions' assignment), whose listener kept open would wake at every change
        the projector makes. A wait begun before the listener is connected is answered
        by its re-check."""
        self.start()
        try:
            yield self
        finally:
            await self.close()

    async def _listen(self) -> None:
        """Listen for ever, reconnecting after ``RECONNECT``'s wait; a connection that
        was made starts the waits again from the first. (Not a tenacity loop: those end
        when an attempt succeeds, and a listener's connection is meant to last.)"""
        failures = 0
        while True:
            try:
                async with await AsyncConnection.connect(
                    self.db.database_url, autocommit=True
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    failures = 0
                    for _prefix, callback in self._subscribers:
                        callback(None)
                    async for notice in conn.notifies():
                        self._wake(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning(
                    "change listener lost its connection; waiters fall back to re-checking",
                    extra={"error": repr(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)

    def _wake(self, payload: str) -> None:
        key = payload
        if payload.startswith("position:"):  # a saved position names its next offset
            key, _, value = payload.rpartition("@")
            self._positions[key] = max(self._positions.get(key, 0), int(value))
        for prefix, callback in self._subscribers:
            if key.startswith(prefix):
                callback(key.removeprefix(prefix))
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    @contextlib.contextmanager
    def _watching(self, key: str) -> Iterator[asyncio.Future[None]]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[key].add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[key]

    async def until(
        self, key: str, check: Callable[[], Awaitable[T | None]], timeout: float
    ) -> T | None:
        """``check()``'s first answer that is not None, re-checked whenever ``key``
        changes, within ``timeout`` seconds; None if there was none by then."""
        deadline = time.monotonic() + timeout
        while True:
            # Watch before checking: a change between the check and the wait is not lost.
            with self._watching(key) as changed:
                found = await check()
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed, min(remaining, self.recheck_s))

    async def until_position(
        self, topic: str, partition: int, offset: int, *, timeout: float = 10.0
    ) -> None:
        """Return once the projection has applied ``offset`` of the partition and all
        before it; TimeoutError otherwise. Notified positions answer without a query;
        the database is asked first, and again when no notification came for a while."""
        key = position_key(topic, partition, self.projection)
        deadline = time.monotonic() + timeout
        ask = True
        while True:
            with self._watching(key) as changed:
                if self._positions.get(key, 0) > offset:
                    return
                if ask:
                    stored = await next_offset(self.db, topic, partition, self.projection)
                    self._positions[key] = max(self._positions.get(key, 0), stored)
                    if stored > offset:
                        return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"projection has not reached {topic}/{partition}@{offset}")
                try:
                    await asyncio.wait_for(changed, min(remaining, self.recheck_s))
                    ask = False
                except TimeoutError:
                    ask = True

    async def until_positions(
        self, positions: list[tuple[str, int, int]], *, timeout: float = 10.0
    ) -> None:
        """``until_position`` for every (topic, partition, offset) given."""
        for topic, partition, offset in positions:
            await self.until_position(topic, partition, offset, timeout=timeout)
