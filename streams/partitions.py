"""Reading partitions directly, without joining a consumer group: the one way agentlog
reads a range of a partition, follows a partition live, or asks where partitions begin
and end. Workers read ahead on assignment, the rebuild folds from offset 0, and the
gateway streams a session's output, all through ``LogReader``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from schemas.envelope import Envelope, EnvelopeError, from_kafka

from .catalog import partitions_of

Record: TypeAlias = ConsumerRecord[Any, Any]


def is_wanted(record: Record, types: frozenset[str]) -> bool:
    """False for a record whose ``ce_type`` names a type not in ``types``; a record with
    no such header is wanted (so that it is parsed, and dead-lettered)."""
    for name, value in record.headers:
        if name == "ce_type":
            return bytes(value).decode(errors="replace") in types
    return True


class PartitionCountMismatchError(RuntimeError):
    pass


async def paired(reader: LogReader, topic: str, other: str, why: str) -> list[TopicPartition]:
    """``other``'s partitions, which must be as many as ``topic``'s: a record keyed like
    one of ``topic``'s partition *n* is on ``other``'s partition *n* (``why``)."""
    others = await reader.partitions(other)
    count = len(await reader.partitions(topic))
    if len(others) != count:
        raise PartitionCountMismatchError(
            f"{topic} has {count} partitions and {other} {len(others)}: {why}, so they"
            " must have as many"
        )
    return others


class LogReader:
    """One consumer, assigned partitions by hand. ``group_id`` only lets ``committed``
    answer for that group: the reader never joins it, so it takes nothing from the
    group's members. Not for concurrent use: each read reassigns the consumer."""

    def __init__(
        self, bootstrap_servers: str, *, group_id: str | None = None, fetch_max_wait_ms: int = 100
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            "fetch_max_wait_ms": fetch_max_wait_ms,
        }
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> LogReader:
        if self._consumer is None:
            # Made here, not in __init__: aiokafka binds to the running event loop.
            consumer = AIOKafkaConsumer(**self._options)
            await consumer.start()
            self._consumer = consumer
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def __aenter__(self) -> LogReader:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("LogReader.start() was not awaited")
        return self._consumer

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions, from the cluster's metadata when first asked (a
        partition added later is seen after ``forget_partitions``)."""
        if topic not in self._partitions:
            found = await partitions_of(self.bootstrap_servers, topic)
            self._partitions[topic] = [TopicPartition(topic, p) for p in found]
        return self._partitions[topic]

    def forget_partitions(self) -> None:
        self._partitions.clear()

    async def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset each partition's next record will get."""
        return dict(await self.consumer.end_offsets(tps)) if tps else {}

    async def beginnings(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset of each partition's oldest record kept."""
        return dict(await self.consumer.beginning_offsets(tps)) if tps else {}

    async def offset_at(self, tp: TopicPartition, time_ms: int) -> int:
        """The first offset of the partition whose record's timestamp is at or after
        ``time_ms`` (ms since the epoch), or its end if none is."""
        found = (await self.consumer.offsets_for_times({tp: time_ms}))[tp]
        return found.offset if found is not None else (await self.ends([tp]))[tp]

    async def committed(self, tp: TopicPartition) -> int:
        """The group's committed offset of the partition (0 if it committed none)."""
        return int(await self.consumer.committed(tp) or 0)

    async def batches(
        self,
        starts: Mapping[TopicPartition, int],
        ends: Mapping[TopicPartition, int] | None = None,
        *,
        max_records: int | None = None,
        poll_ms: int = 500,
    ) -> AsyncIterator[list[Record]]:
        """The partitions' records from ``starts`` on, a batch per poll (each
        partition's in log order): up to ``ends`` (exclusive), or for ever without it. A
        partition is done when the consumer's position reaches its end, so offsets
        without a record (transaction markers) are passed over. Once all are done, the
        consumer fetches none of them."""
        consumer = self.consumer
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        pending = set(starts) if ends is None else {tp for tp in starts if starts[tp] < ends[tp]}
        while pending:
            polled = await consumer.getmany(*pending, timeout_ms=poll_ms, max_records=max_records)
            batch = [
                record
                for tp, records in polled.items()
                for record in records
                if ends is None or record.offset < ends[tp]
            ]
            if batch:
                yield batch
            if ends is not None:
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        # Read to their ends: paused, or the consumer would go on fetching them in the
        # background (ten requests a second, idle) until its next read assigns others.
        consumer.pause(*starts)

    async def envelopes(
        self,
        tp: TopicPartition,
        start: int,
        end: int,
        types: frozenset[str] | None = None,
        *,
        timeout: float = 120.0,
    ) -> list[Envelope[Any]]:
        """Readable envelopes in [start, end) of one partition, only those of ``types``
        if given (unreadable records were dead-lettered by the consumers). ``end`` must
        not lie past the log end; TimeoutError after ``timeout`` seconds."""
        found: list[Envelope[Any]] = []
        async with asyncio.timeout(timeout):
            async for batch in self.batches({tp: start}, {tp: end}, poll_ms=200):
                for record in batch:
                    if types is None or is_wanted(record, types):
                        with contextlib.suppress(EnvelopeError):
                            found.append(from_kafka(record.key, record.value, list(record.headers)))
        return found
