"""Following partitions live from given offsets, for a decider's state: each batch read
is handed to a fold, and ``caught_up`` waits until the fold has passed what the log held
when it was asked (so a decision sees every fact recorded before its command was read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from aiokafka import TopicPartition

from .partitions import LogReader, Record

log = logging.getLogger(__name__)


class FollowerStoppedError(ConnectionError):
    """The follower is not following (never started, or its reads failed): what it
    folded may be stale. An outage, to retry once it is started again."""


class Follower:
    """Folds ``fold(records)`` over partitions from ``start``'s offsets on, in a task.
    The fold runs on the event loop, between the decider's own steps, never beside
    them."""

    def __init__(self, bootstrap_servers: str, fold: Callable[[list[Record]], None]) -> None:
        self._fold = fold
        # A long poll: the broker answers as soon as a record arrives, so waiting longer
        # for one costs no latency, and an idle follower fewer round trips.
        self._reader = LogReader(bootstrap_servers, fetch_max_wait_ms=1000)
        self._ends = LogReader(bootstrap_servers)  # asks for ends while the reader follows
        self.positions: dict[TopicPartition, int] = {}
        self._moved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Following: started, and not stopped by a failure (its reads end when the
        broker is gone for good, say)."""
        return self._task is not None and not self._task.done()

    async def start(self, starts: Mapping[TopicPartition, int]) -> None:
        await self.stop()
        await self._reader.start()
        await self._ends.start()
        self.positions = dict(starts)
        self._task = asyncio.create_task(self._follow(), name="follower")
        self._task.add_done_callback(lambda _: self._moved.set())  # a waiter sees it end

    async def _follow(self) -> None:
        consumer = self._reader.consumer
        consumer.assign(list(self.positions))
        for tp, offset in self.positions.items():
            consumer.seek(tp, offset)
        while True:
            polled = await consumer.getmany(timeout_ms=1000)
            records = [record for batch in polled.values() for record in batch]
            if records:
                self._fold(records)
            for tp in self.positions:  # past offsets with no record too (markers)
                self.positions[tp] = await consumer.position(tp)
            self._moved.set()

    async def caught_up(self, timeout: float | None) -> bool:
        """Wait until every partition is folded up to the end the log has now; False if
        ``timeout`` seconds (None: no limit) passed first."""
        if not self.running:
            raise FollowerStoppedError("the follower is not following")
        targets = await self._ends.ends(list(self.positions))
        try:
            async with asyncio.timeout(timeout):
                while any(self.positions[tp] < end for tp, end in targets.items()):
                    if not self.running:
                        raise FollowerStoppedError("the follower stopped")
                    self._moved.clear()
                    await self._moved.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # what had stopped it: it is started afresh
                log.warning("the follower had stopped", extra={"error": repr(exc)})
        await self._reader.stop()
        await self._ends.stop()
