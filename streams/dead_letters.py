"""The dead-letter topic as consumers write it: a record no consumer could read or handle
goes there as it was, with headers saying why, where it was and who set it aside."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import ConsumerRecord

from .logs import redact
from .metrics import RECORDS_DEAD_LETTERED
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
