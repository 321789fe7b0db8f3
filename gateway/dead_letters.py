"""The dead-letter topic as the operators' dashboard shows it: its records, newest first,
with why each was set aside; and one read by its place (a re-drive's first check).

Dead letters are read from their topic, which keeps them a week (a read model would
hold what the topic holds, and a record nobody could read is not a fact to fold).
A page reads at most its size from each partition, before a cursor of per-partition
offsets. A re-drive is a request (``DeadLetterRedriveRequested``, on the billing topic)
that the billing decider decides and carries out (``workers.plan_decider``).
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

from streams.catalog import Catalog
from streams.dead_letters import read_dead_letter
from streams.partitions import LogReader
from streams.publisher import write_deadline


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    at: datetime.datetime
    reason: str
    topic: str  # where it came from
    from_partition: str
    from_offset: str
    consumer: str
    record_type: str
    record_id: str
    key: str
    size: int

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"


def _text(value: bytes | None, limit: int = 200) -> str:
    return "" if value is None else value[:limit].decode("utf-8", errors="replace")


def _dead_letter(record: Any) -> DeadLetter:
    headers = {name: _text(value) for name, value in record.headers}
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        at=datetime.datetime.fromtimestamp(record.timestamp / 1000, datetime.UTC),
        reason=headers.get("dlq.reason", ""),
        topic=headers.get("dlq.topic", ""),
        from_partition=headers.get("dlq.partition", ""),
        from_offset=headers.get("dlq.offset", ""),
        consumer=headers.get("dlq.consumer", ""),
        record_type=headers.get("ce_type", ""),
        record_id=headers.get("ce_id", ""),
        key=_text(record.key),
        size=len(record.value or b""),
    )


class DeadLetters:
    def __init__(
        self, bootstrap_servers: str, catalog: Catalog, *, timeout_s: float | None = None
    ) -> None:
        """``timeout_s``: the longest ``record`` (a re-drive's first step) waits for
        Kafka, as long as a write."""
        self.topic = catalog.dead_letter
        self.catalog = catalog
        self._timeout_s = timeout_s
        self._reader = LogReader(bootstrap_servers)
        self._started = False
        self._lock = asyncio.Lock()  # the reader is not for concurrent use

    async def _ready(self) -> LogReader:
        if not self._started:
            await self._reader.start()
            self._started = True
        return self._reader

    async def page(
        self, before: dict[int, int] | None, limit: int
    ) -> tuple[list[DeadLetter], dict[int, int] | None]:
        """Up to ``limit`` dead letters, newest first, older than the cursor ``before``
        (per partition, the offset to stop before); and the next page's cursor."""
        async with self._lock:
            reader = await self._ready()
            tps = await reader.partitions(self.topic)
            firsts = await reader.beginnings(tps)
            ends = await reader.ends(tps)
            if before is not None:
                ends = {tp: min(end, before.get(tp.partition, end)) for tp, end in ends.items()}
            starts = {tp: max(firsts[tp], ends[tp] - limit) for tp in tps}
            found: list[DeadLetter] = []
            async for batch in reader.batches(starts, ends, poll_ms=200):
                found.extend(_dead_letter(record) for record in batch)
        found.sort(key=lambda d: (d.at, d.partition, d.offset), reverse=True)
        shown = found[:limit]
        cursor = {tp.partition: ends[tp] for tp in tps}
        for letter in shown:
            cursor[letter.partition] = min(cursor[letter.partition], letter.offset)
        older = any(cursor[tp.partition] > firsts[tp] for tp in tps)
        return shown, cursor if older else None

    async def record(self, partition: int, offset: int) -> Any:
        """The raw record at ``partition``:``offset`` of the dead-letter topic."""
        async with write_deadline(self._timeout_s):
            return await self._record(partition, offset)

    async def _record(self, partition: int, offset: int) -> Any:
        async with self._lock:
            return await read_dead_letter(await self._ready(), self.topic, partition, offset)

    async def close(self) -> None:
        if self._started:
            await self._reader.stop()
