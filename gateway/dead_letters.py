"""The dead-letter topic as the operators' dashboard shows it: its records, newest first,
with why each was set aside; and the re-drive of one, back to the topic it came from.

Dead letters are read from their topic, which keeps them a week (a read model would
hold what the topic holds, and a record nobody could read is not a fact to fold).
A page reads at most its size from each partition, before a cursor of per-partition
offsets. A re-drive is audited as ``DeadLetterRedriveRequested`` before the record is
written back, and ``DeadLetterRedriven`` after, both on the billing topic (the
operators' facts).
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from streams.catalog import Catalog
from streams.dead_letters import DEAD_LETTER_HEADERS
from streams.partitions import LogReader
from streams.publisher import Publisher, write_deadline


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


class DeadLetterNotFoundError(LookupError):
    pass


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
            reader = await self._ready()
            tp = TopicPartition(self.topic, partition)
            if tp not in await reader.partitions(self.topic):
                raise DeadLetterNotFoundError(f"{partition}:{offset}")
            first, end = (await reader.beginnings([tp]))[tp], (await reader.ends([tp]))[tp]
            if not first <= offset < end:
                raise DeadLetterNotFoundError(f"{partition}:{offset}")
            async for batch in reader.batches({tp: offset}, {tp: offset + 1}, poll_ms=200):
                for record in batch:
                    if record.offset == offset:
                        return record
        raise DeadLetterNotFoundError(f"{partition}:{offset}")

    async def redrive(self, publisher: Publisher, record: Any) -> tuple[str, int, int]:
        """Write ``record`` again to the topic it came from, without the dead-letter
        headers; where it went."""
        topic = _text(dict(record.headers).get("dlq.topic"), 1000)
        headers = [(n, v) for n, v in record.headers if n not in DEAD_LETTER_HEADERS]
        meta = await publisher.send_raw(topic, record.value, record.key, headers)
        return topic, meta.partition, meta.offset

    async def close(self) -> None:
        if self._started:
            await self._reader.stop()
