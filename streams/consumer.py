"""The consumer runtime shared by every worker and projector, on FastStream.

A ``ConsumerRuntime`` gives its ``Handler`` a FastStream batch subscriber in a consumer
group. The subscriber's decoder turns records into envelopes (unreadable ones go to the
dead-letter topic with the reason and their original position, and the consumer carries
on) and drops events already handled (by event id); the subscriber's handler hands the
batch to the ``Handler``, publishes what it returns, and only then commits the offsets
(manual acknowledgement): at-least-once delivery, with effects made exactly-once by
deterministic event ids downstream. A rebalance listener lets the handler seek to
positions it stores and rebuild its state, and finishes the batch in hand before a
partition is given away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy

from schemas.envelope import Envelope

from . import tracing
from .dead_letters import dead_letter
from .dedupe import SeenIds
from .handler import Ends, Handler, Hooks, Item, Position, failure_reason, unprocessable_step
from .metrics import HANDLER_SECONDS, RECORDS_HANDLED, ConsumerLag
from .publisher import Publisher
from .retries import TRANSIENT_ERRORS, retrying_batch, retrying_outages, uncancelled
from .subscriber import (
    Polled,
    PromptBatchSubscriber,
    decode_poll,
    described,
    kafka_broker,
    parse_poll,
    payload_of,
)

log = logging.getLogger(__name__)

_COMMIT_INTERVAL_S = 0.5
_TICK_S = 1.0


async def first_of(*waits: Awaitable[Any]) -> None:
    """Wait until the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ConsumerRuntime:
    def __init__(
        self,
        handler: Handler,
        publisher: Publisher,
        *,
        group_id: str | None = None,
        transient: tuple[type[Exception], ...] = (),
        max_records: int = 500,
        session_timeout_ms: int = 10_000,
        max_partition_fetch_bytes: int = 1 << 20,
    ) -> None:
        """``transient``: the handler's own outage errors (its database's), retried like
        Kafka's until they pass. ``max_partition_fetch_bytes``: how much of a partition
        one fetch brings at most (see ``subscribe``)."""
        self.handler = handler
        self.hooks = Hooks.of(handler)
        self.publisher = publisher
        self.transient = (*TRANSIENT_ERRORS, *transient)
        self.seen = SeenIds()
        self.group_id = group_id or publisher.catalog.group_id(handler.name)
        self.failure: Exception | None = None
        self.failed = asyncio.Event()
        self._max_records = max_records
        self._session_timeout_ms = session_timeout_ms
        self._max_partition_fetch_bytes = max_partition_fetch_bytes
        self._stopping = asyncio.Event()
        self._subscriber: PromptBatchSubscriber | None = None
        self._busy = asyncio.Lock()  # held while a batch is handled or partitions prepared
        self._uncommitted: dict[TopicPartition, int] = {}
        # Where each partition assigned now starts: a poll fetched before it was
        # prepared may hold records of before its seek, or of partitions not ours.
        # None until a first assignment (FastStream's test broker assigns nothing).
        self._starts: dict[tuple[str, int], int] | None = None
        self._last_commit = time.monotonic()
        self._last_tick = time.monotonic()
        self._maintenance: asyncio.Task[None] | None = None
        self._lag = ConsumerLag(handler.name, self.group_id)

    def subscribe(self, broker: KafkaBroker) -> PromptBatchSubscriber:
        """Give the handler a subscriber on ``broker``: its topics in its group, batches
        acknowledged by hand, partitions prepared by the handler as they are assigned."""
        runtime = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                # The batch in hand is finished (published and committed) before another
                # member may own its partition: one writer per key, even in a rebalance.
                async with runtime._busy:
                    await runtime._commit()
                    runtime._starts = {}  # a poll of theirs handled now is not ours

            async def on_partitions_assigned(self, assigned: Any) -> None:
                async with runtime._busy:
                    await runtime._prepare(sorted(assigned))

        subscriber = broker.subscriber(
            *self.handler.topics,
            batch=True,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,
            listener=Listener(),
            auto_offset_reset="earliest",
            max_records=self._max_records,
            # Both return as soon as records come; idle, they bound how often each
            # consumer asks and wakes (twice Kafka's default wait: an idle platform's
            # CPU is mostly these polls, a dozen consumers' worth).
            batch_timeout_ms=1000,
            fetch_max_wait_ms=1000,
            # aiokafka sends a broker its next fetch only once the last one returned:
            # catching up, a fetch for partitions at their end holds the others' back
            # for the whole wait, so the more a fetch brings, the fewer such waits.
            max_partition_fetch_bytes=self._max_partition_fetch_bytes,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(self._session_timeout_ms // 6, 100),
            parser=parse_poll,
            decoder=self._decode,
            title=self.handler.name,
            description=described(self.handler),
        )
        # FastStream builds its own batch subscriber; this one only drops the sleep after
        # an empty poll (same slots, so the instance can take the subclass).
        subscriber.__class__ = PromptBatchSubscriber

        async def consume(facts: list[Any]) -> None:
            assert isinstance(facts, Polled)
            async with self._busy:
                await self._process(facts)

        consume.__annotations__ = {"facts": list[payload_of(self.handler)], "return": None}  # type: ignore[misc]
        consume.__name__ = consume.__qualname__ = f"consume_{self.handler.name}"
        subscriber(consume)
        self._subscriber = subscriber  # type: ignore[assignment]
        return subscriber  # type: ignore[return-value]

    async def started(self) -> None:
        """Begin the work between batches (lazy commits, the handler's ticks), once the
        broker has started."""
        self._maintenance = asyncio.create_task(
            self._between_batches(), name=f"between-batches:{self.handler.name}"
        )

    async def stopping(self) -> None:
        """Stop retrying and ticking, and commit what was handled, before the broker
        stops: the batch in hand finishes or is left for whoever owns its partitions next."""
        self._stopping.set()
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        async with self._busy:
            await self._commit()

    async def run(self, stop: asyncio.Event) -> None:
        """Run this one handler on a broker of its own until ``stop`` is set."""
        broker = kafka_broker(self.publisher.bootstrap_servers)
        self.subscribe(broker)
        await broker.start()
        await self.started()
        try:
            await first_of(stop.wait(), self.failed.wait())
        finally:
            await self.stopping()
            await broker.stop()
        self.raise_failure()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise RuntimeError(
                f"{self.handler.name}: partition assignment failed"
            ) from self.failure

    async def _between_batches(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_INTERVAL_S)  # commits and ticks are due no oftener
            if time.monotonic() - self._last_commit >= _COMMIT_INTERVAL_S:
                async with self._busy:
                    await self._commit()
            if time.monotonic() - self._last_tick >= _TICK_S:
                async with self._busy:
                    await self._tick()
                consumer = None if self._subscriber is None else self._subscriber.consumer
                if consumer is not None:
                    await self._lag.measure(consumer)

    async def _prepare(self, partitions: list[TopicPartition]) -> None:
        """Let the handler prepare for new partitions, retrying while the failure is an
        outage; a handler that cannot prepare stops the consumer (it would carry on
        without the handler's state)."""
        # What was handled before this assignment may come again from the committed
        # offsets, and the handler rebuilds its state from the log: it must see it.
        self.seen = SeenIds()
        try:
            async for attempt in retrying_outages(
                self.transient,
                self._stopping,
                self.handler.name,
                warning="preparing partitions failed, retrying",
            ):
                with attempt:
                    if self._stopping.is_set():
                        return
                    seeks = await uncancelled(self.handler.on_assigned(partitions))
        except Exception as exc:
            log.exception("partition assignment failed", extra={"consumer": self.handler.name})
            self.failure = exc
            self._stopping.set()
            self.failed.set()
            return
        consumer = None if self._subscriber is None else self._subscriber.consumer
        assert consumer is not None, "partitions are assigned to a started consumer"
        for tp, offset in seeks.items():
            consumer.seek(tp, offset)
        self._starts = {(tp.topic, tp.partition): seeks.get(tp, 0) for tp in partitions}

    async def _decode(self, message: StreamMessage[Any]) -> Polled:
        return decode_poll(message, self.handler.types, self.seen)

    async def _process(self, polled: Polled) -> None:
        """Handle one poll's records, every partition's together (in log order within
        each), so a handler pays its per-batch costs once per poll."""
        if self._stopping.is_set():
            return  # the records are redelivered to whoever owns them next
        if self._starts is not None:
            polled = polled.starting_at(self._starts)
        for record, reason in polled.unreadable:
            await self._dead_letter(record, reason, kind="unreadable")
        set_aside: set[Position] = set()
        if polled.items:
            outcome = await self._handle(polled.items, polled.records)
            if outcome is None:
                return  # stopping: the records are redelivered to whoever owns them next
            set_aside = outcome
        ends = {(r.topic, r.partition): r.offset + 1 for r in polled.records}
        # A record set aside was not applied: a handler storing its positions is told
        # the batch passed it, or readers would wait for it for ever.
        handled = [item for item in polled.items if item[1] not in set_aside]
        await self._passed(ends, handled)
        self._uncommitted.update((TopicPartition(*tp), end) for tp, end in ends.items())
        if time.monotonic() - self._last_commit >= _COMMIT_INTERVAL_S:
            await self._commit()

    async def _passed(self, ends: Ends, items: list[Item]) -> None:
        passed = self.hooks.passed
        if passed is None:
            return
        handled = {(p.topic, p.partition): p.offset + 1 for _env, p in items}
        beyond = {tp: end for tp, end in ends.items() if handled.get(tp, -1) < end}
        if beyond:
            await passed(beyond)

    async def _tick(self) -> None:
        self._last_tick = time.monotonic()
        tick = self.hooks.tick
        if tick is None:
            return
        try:
            outputs = await tick()
            if outputs:
                await self.publisher.publish_all(outputs)
        except self.transient as exc:  # the next tick tries again
            log.warning("tick failed", extra={"consumer": self.handler.name, "error": repr(exc)})

    async def _commit(self) -> None:
        """Commit every handled position. Positions are committed at most every
        ``_COMMIT_INTERVAL_S`` (and when partitions are revoked or the consumer stops),
        always after the outputs of what they cover were acknowledged: after a crash,
        that much is read again and recognised by event id (every step is idempotent,
        see docs/architecture.md), while a commit per batch cost a round trip, and the
        broker's work, on every hop of a turn."""
        if not self._uncommitted:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        self._last_commit = time.monotonic()
        consumer = None if self._subscriber is None else self._subscriber.consumer
        if consumer is None:
            return  # not consuming (any more): the records come again to whoever owns them
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Typically the partition moved to another member meanwhile: it gets these
            # records again, and event-id dedupe makes that harmless.
            log.warning(
                "commit failed",
                extra={"consumer": self.handler.name, "error": repr(exc)},
            )

    async def _handle(
        self,
        items: list[Item],
        records: Sequence[ConsumerRecord[Any, Any]],
    ) -> set[Position] | None:
        """Handle and publish; return the positions of the items set aside for the
        dead-letter topic, or None if the consumer is stopping before it could. A batch
        that keeps failing is retried item by item, and only the items that fail alone
        are set aside."""
        with tracing.processing(items, self.group_id) as items:
            failure = await self._attempt(items)
            if failure is None:
                return set()
            if failure is False:
                return None
            if len(items) == 1:
                await self._dead_letter_items(items, records, failure)
                return {items[0][1]}
            set_aside = set()
            for item in items:
                alone = await self._attempt([item])
                if alone is False:
                    return None
                if isinstance(alone, Exception):
                    await self._dead_letter_items([item], records, alone)
                    set_aside.add(item[1])
            return set_aside

    async def _attempt(self, items: list[Item]) -> Exception | Literal[False] | None:
        """None when handled and published; False when stopping; the exception the
        handler or publishing failed with, when ``retrying_batch`` gives up. A batch is
        handled once: when only publishing failed, the same outputs are published again
        (the handler has moved on; deciding again could differ)."""
        outputs: list[Envelope[Any]] | None = None
        started = time.perf_counter()
        try:
            async for attempt in retrying_batch(self.transient, self._stopping, self.handler.name):
                with attempt:
                    if self._stopping.is_set():
                        return False
                    if outputs is None:
                        outputs = await uncancelled(self.handler.handle_batch(items))
                    if outputs:
                        acks = await self.publisher.publish_all(outputs)
                        if self.hooks.published is not None:
                            self.hooks.published(acks)
                    if self.hooks.written is not None:
                        await self.hooks.written()
        except Exception as exc:
            return exc
        for env, _position in items:
            self.seen.add(env.id)
        HANDLER_SECONDS.labels(self.handler.name).observe(time.perf_counter() - started)
        for topic, count in Counter(position.topic for _env, position in items).items():
            RECORDS_HANDLED.labels(self.handler.name, topic).inc(count)
        return None

    async def _dead_letter_items(
        self,
        items: list[Item],
        records: Sequence[ConsumerRecord[Any, Any]],
        exc: Exception,
    ) -> None:
        """Send what the handler failed on to the dead-letter topic, then record what
        that means for each record (a turn's step fails its turn), so nothing waits on
        it for ever."""
        log.error(
            "handler failed; records to the dead-letter topic",
            exc_info=exc,
            extra={"consumer": self.handler.name, "records": len(items)},
        )
        by_position = {Position(r.topic, r.partition, r.offset): r for r in records}
        reason = failure_reason(exc)
        unprocessable = self.hooks.unprocessable
        outcomes: list[Envelope[Any]] = []
        for env, position in items:
            await self._dead_letter(by_position[position], reason, kind="handler_failed")
            if unprocessable is not None:
                outcomes.extend(unprocessable(env, reason))
            else:
                outcomes.extend(unprocessable_step(env, self.handler.name, reason))
        if outcomes:
            await self.publisher.publish_all(outcomes)

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], reason: str, *, kind: str
    ) -> None:
        await dead_letter(self.publisher, record, reason, consumer=self.handler.name, kind=kind)
