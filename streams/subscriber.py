"""The FastStream side of a consumer: the broker roles consume on, the batch subscriber
they get, one poll read into the handler's message (its parser and decoder), and what
the AsyncAPI document says of it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from itertools import chain
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.message import StreamMessage

from schemas.base import Fact
from schemas.envelope import EnvelopeError, from_kafka

from .catalog import facts_on, named_union
from .dedupe import SeenIds
from .handler import Handler, Item, Position
from .partitions import is_wanted

# The consumers' logger: FastStream's lines about a subscriber show with the runtime's.
log = logging.getLogger("streams.consumer")


class PromptBatchSubscriber(BatchSubscriber):
    """FastStream's Kafka batch subscriber without its sleep after an empty poll.

    ``getmany`` has already waited up to ``batch_timeout_ms`` for records; FastStream
    0.7 then sleeps as long again, so a record arriving just after an empty poll waited
    up to twice the timeout. Nor does it create the topics it reads: they are the
    catalog's, made with their configs by ``agentlog migrate``. The consume loop,
    acknowledgement, middlewares and graceful stop are FastStream's own."""

    __slots__ = ()

    async def _ensure_topics(self) -> None:
        return None

    async def get_msg(self, consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[Any, Any], ...]:
        batches = await consumer.getmany(
            timeout_ms=self.batch_timeout_ms, max_records=self.max_records
        )
        return tuple(chain.from_iterable(batches.values()))


class Polled(list[Fact]):
    """One poll's facts for the handler, in log order within each partition, with their
    envelopes and positions, and every record of the poll (for the dead letters and the
    positions to commit)."""

    __slots__ = ("items", "records", "unreadable")

    def __init__(
        self,
        records: tuple[ConsumerRecord[Any, Any], ...],
        items: list[Item],
        unreadable: list[tuple[ConsumerRecord[Any, Any], str]],
    ) -> None:
        super().__init__(env.data for env, _position in items)
        self.records = records
        self.items = items
        self.unreadable = unreadable

    def starting_at(self, starts: Mapping[tuple[str, int], int]) -> Polled:
        """The poll without the records of partitions not in ``starts``, or before
        their start: fetched before the partitions were assigned and prepared, from
        where the consumer stood then (the commits, or another member's assignment)."""

        def kept(topic: str, partition: int, offset: int) -> bool:
            start = starts.get((topic, partition))
            return start is not None and offset >= start

        if all(kept(r.topic, r.partition, r.offset) for r in self.records):
            return self
        return Polled(
            tuple(r for r in self.records if kept(r.topic, r.partition, r.offset)),
            [(env, p) for env, p in self.items if kept(p.topic, p.partition, p.offset)],
            [(r, why) for r, why in self.unreadable if kept(r.topic, r.partition, r.offset)],
        )


async def parse_poll(records: tuple[ConsumerRecord[Any, Any], ...]) -> StreamMessage[Any]:
    """The poll as FastStream's message; reading the records is the decoder's work."""
    first, last = records[0], records[-1]
    return StreamMessage(raw_message=records, body=b"", message_id=f"{first.offset}-{last.offset}")


def decode_poll(
    message: StreamMessage[Any], wanted: frozenset[str] | None, seen: SeenIds
) -> Polled:
    """Envelopes of the records a handler wants (``wanted`` types; None: all), each read
    once: other types are skipped by their ``ce_type`` header unparsed, event ids
    ``seen`` or repeated in the poll are dropped, and unreadable records are set aside
    for the dead-letter topic."""
    records: tuple[ConsumerRecord[Any, Any], ...] = message.raw_message
    items: list[Item] = []
    unreadable: list[tuple[ConsumerRecord[Any, Any], str]] = []
    batch_ids: set[str] = set()
    for record in records:
        if wanted is not None and not is_wanted(record, wanted):
            continue
        try:
            env = from_kafka(record.key, record.value, list(record.headers))
        except EnvelopeError as exc:
            unreadable.append((record, str(exc)))
            continue
        if env.id in seen or env.id in batch_ids:
            continue  # a repeated event: handled already, or earlier in this poll
        batch_ids.add(env.id)
        items.append((env, Position(record.topic, record.partition, record.offset)))
    return Polled(records, items, unreadable)


def kafka_broker(bootstrap_servers: str) -> KafkaBroker:
    """The FastStream broker that roles consume on. It only consumes (the roles write
    through their ``Publisher``); types are applied by the runtime's own decoder
    (envelopes, validated once); a graceful stop waits for the batch in hand;
    FastStream's per-message access log is kept to debug level."""
    return KafkaBroker(
        bootstrap_servers,
        consumer_only=True,
        apply_types=False,
        graceful_timeout=30.0,
        logger=log,
        log_level=logging.DEBUG,
    )


def described(handler: Handler) -> str:
    """What the handler does, for the AsyncAPI document: the first paragraph of its
    class's docstring, or else of its module's."""
    cls = type(handler)
    doc = cls.__doc__ or getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def payload_of(handler: Handler) -> Any:
    """What the handler's subscriber documents as a message: the facts on its topics
    that it handles, as one named union (the AsyncAPI payload)."""
    facts = [
        fact
        for topic in handler.topics
        for fact in facts_on(topic)
        if handler.types is None or fact.ce_type() in handler.types
    ]
    return named_union(facts, f"{handler.name.title()}Input")  # none: a topic not ours
