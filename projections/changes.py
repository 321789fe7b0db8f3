"""Waiting for the read models to change, without polling.

The projector sends a Postgres notification for every turn, command outcome and tool it
changes (``Notify`` ops, delivered when its transaction commits). ``Changes`` listens on
one connection and wakes the requests waiting on those keys. A waiter re-checks its row
at least every ``recheck_s`` anyway: a lost listener connection costs latency, never a
wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from psycopg import AsyncConnection, sql

log = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_CHANNEL = 63  # Postgres identifiers


def channel(schema: str) -> str:
    """The notification channel of the read models in ``schema``."""
    name = f"{schema}.changes"
    if len(name) <= _MAX_CHANNEL:
        return name
    return f"changes.{hashlib.sha256(schema.encode()).hexdigest()[:40]}"


class Changes:
    def __init__(self, database_url: str, schema: str, *, recheck_s: float = 1.0) -> None:
        self.database_url = database_url
        self.channel = channel(schema)
        self.recheck_s = recheck_s
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._subscribers: list[tuple[str, Callable[[str | None], None]]] = []

    def subscribe(self, prefix: str, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(rest)`` for every change whose key starts with ``prefix``, with
        the rest of the key; and ``callback(None)`` once the listener is (re)connected,
        since changes may have been missed while it was not."""
        self._subscribers.append((prefix, callback))

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="changes-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await AsyncConnection.connect(
                    self.database_url, autocommit=True
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    delay = 0.1
                    for _prefix, callback in self._subscribers:
                        callback(None)
                    async for notice in conn.notifies():
                        self._wake(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "change listener lost its connection; waiters fall back to re-checking",
                    extra={"error": repr(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _wake(self, key: str) -> None:
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

    async def wait_for(
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
