"""The dead-letter topic: a record no consumer could read or handle goes there as it was,
with headers saying why, where it was and who set it aside; one is read back by its
place, and re-driven (written again to the topic it came from, as it was)."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from .logs import redact
from .metrics import RECORDS_DEAD_LETTERED
from .partitions import LogReader, Record
from .publisher import Publisher

log = logging.getLogger("streams.consumer")

# What a dead letter adds to its record's headers: why, where it was, and who failed.
DEAD_LETTER_HEADERS = ("dlq.reason", "dlq.topic", "dlq.partition", "dlq.offset", "dlq.consumer")


def dead_letter_headers(
    record: ConsumerRecord[Any, Any], reason: str, consumer: str
) -> list[tuple[str, bytes]]:
    """The headers of ``record`` as a dead letter: its own, and why, where it was and
    who could not handle it."""
    why = (reason, record.topic, str(record.partition), str(record.offset), consumer)
    return [
        *list(record.headers),
        *((name, value.encode()) for name, value in zip(DEAD_LETTER_HEADERS, why, strict=True)),
    ]


async def dead_letter(
    publisher: Publisher,
    record: ConsumerRecord[Any, Any],
    reason: str,
    *,
    consumer: str,
    kind: str,
) -> None:
    """Write ``record`` to the dead-letter topic with why (``kind``: unreadable or
    handler_failed, the metric's label; ``reason``: the detail, in its headers)."""
    RECORDS_DEAD_LETTERED.labels(consumer, record.topic, kind).inc()
    reason = redact(reason)
    log.warning(
        "record sent to the dead-letter topic",
        extra={
            "consumer": consumer,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "reason": reason,
        },
    )
    headers = dead_letter_headers(record, reason, consumer)
    await publisher.send_raw(publisher.catalog.dead_letter, record.value, record.key, headers)


class DeadLetterNotFoundError(LookupError):
    """No record at that place of the dead-letter topic (never, or no longer: the topic
    keeps its records a week)."""


async def read_dead_letter(reader: LogReader, topic: str, partition: int, offset: int) -> Record:
    """The record at ``partition``:``offset`` of the dead-letter topic ``topic``."""
    tp = TopicPartition(topic, partition)
    if tp not in await reader.partitions(topic):
        raise DeadLetterNotFoundError(f"{partition}:{offset}")
    first, end = (await reader.beginnings([tp]))[tp], (await reader.ends([tp]))[tp]
    if not first <= offset < end:
        raise DeadLetterNotFoundError(f"{partition}:{offset}")
    async for batch in reader.batches({tp: offset}, {tp: offset + 1}, poll_ms=200):
        for record in batch:
            if record.offset == offset:
                return record
    raise DeadLetterNotFoundError(f"{partition}:{offset}")


def origin(record: Record) -> str:
    """The topic a dead letter came from."""
    value = dict(record.headers).get("dlq.topic") or b""
    return bytes(value).decode("utf-8", errors="replace")


async def redrive(publisher: Publisher, record: Record) -> tuple[str, int, int]:
    """Write the dead letter ``record`` again to the topic it came from, without the
    dead-letter headers; where it went (topic, partition, offset)."""
    topic = origin(record)
    headers = [(n, v) for n, v in record.headers if n not in DEAD_LETTER_HEADERS]
    meta = await publisher.send_raw(topic, record.value, record.key, headers)
    return topic, meta.partition, meta.offset
