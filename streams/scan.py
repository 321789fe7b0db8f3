"""Reading whole ranges of partitions as fast as the log serves them: a rebuild and a
billing replay read every record from offset 0, and they do it with confluent-kafka,
whose C client unpacks record batches at several times the rate of a Python one.

``scan`` is synchronous (a bulk fold runs in a thread of its own) and reads one
partition after the other, each in log order, so the records come in the same order on
every run: a fold of them is deterministic without a merge step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

STALLED_S = 60.0  # no record and no progress for this long: the broker is gone


class ScanStalledError(RuntimeError):
    pass


@dataclass(frozen=True)
class Range:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    topic: str
    partition: int
    start: int
    end: int


@dataclass(frozen=True)
class ScannedRecord:
    """A record as the consumers' dead-letter path reads one (``streams.dead_letters``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, message: Message) -> ScannedRecord:
        return cls(
            str(message.topic()),
            int(message.partition() or 0),
            int(message.offset() or 0),
            message.key(),
            message.value(),
            headers(message),
        )


def headers(message: Message) -> list[tuple[str, bytes]]:
    """A record's headers as the rest of agentlog reads them (a consumer's come as a
    list of name and bytes)."""
    return cast(list[tuple[str, bytes]], message.headers() or [])


def scan(
    bootstrap_servers: str, ranges: list[Range], batch: int = 10_000
) -> Iterator[list[Message]]:
    """The records of every range, in the ranges' order, a batch at a time. A range is
    read until the consumer's position reaches its end, so offsets without a record
    (transaction markers) are passed over."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "agentlog-scan",  # required by the client; no group is joined
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            # A fetch the broker holds at a partition's end would delay the next
            # partition's first fetch by as long: every range ends where the log did.
            "fetch.wait.max.ms": 10,
            "queued.max.messages.kbytes": 65536,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 16 << 20,
        }
    )
    try:
        # The topics' metadata first: a topic the client meets at an assignment is
        # looked up by its once-a-second scan of unknown topics, a second's stall.
        for topic in dict.fromkeys(r.topic for r in ranges):
            consumer.list_topics(topic, timeout=STALLED_S)
        for r in ranges:
            if r.start < r.end:
                yield from _scan_one(consumer, r, batch)
    finally:
        consumer.close()


def _scan_one(consumer: Consumer, r: Range, batch: int) -> Iterator[list[Message]]:
    tp = TopicPartition(r.topic, r.partition, r.start)
    consumer.assign([tp])
    progressed = time.monotonic()
    next_offset = r.start
    try:
        while True:
            # As many as are left at most: the client returns as soon as it has them,
            # where asking for more would wait out the timeout at a partition's end.
            messages = consumer.consume(min(batch, r.end - next_offset), timeout=0.05)
            records = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                if (message.offset() or 0) < r.end:
                    records.append(message)
            if records:
                progressed = time.monotonic()
                next_offset = (records[-1].offset() or 0) + 1
                yield records
                if next_offset >= r.end:
                    return
                continue
            position = consumer.position([TopicPartition(r.topic, r.partition)])[0].offset
            if position >= r.end:
                return
            next_offset = max(next_offset, position)
            if time.monotonic() - progressed > STALLED_S:
                raise ScanStalledError(
                    f"{r.topic}[{r.partition}]: no record for {STALLED_S:.0f} s at offset"
                    f" {position}, before its end {r.end}"
                )
    finally:
        consumer.unassign()
