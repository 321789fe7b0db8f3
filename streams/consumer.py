"""Consumer plumbing shared by every worker and projector, on FastStream.

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
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy

from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, EnvelopeError, from_kafka
from schemas.errors import DomainError

from . import tracing
from .catalog import facts_on, named_union
from .logs import redact
from .metrics import CONSUMER_LAG, HANDLER_SECONDS, RECORDS_DEAD_LETTERED, RECORDS_HANDLED
from .partitions import is_wanted
from .publisher import RECORD_TOO_LARGE, Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Position:
    topic: str
    partition: int
    offset: int


Item = tuple[Envelope[Any], Position]


class Handler(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def topics(self) -> Sequence[str]: ...

    @property
    def types(self) -> frozenset[str] | None:
        """The CloudEvents types it handles (None: all). Records of other types are
        skipped by their ``ce_type`` header, unparsed: most consumers of the events
        topic need a few of its types."""
        ...

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Prepare for newly assigned partitions; return offsets to start from, if any."""
        ...

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        """Handle records in log order; return the envelopes to publish.

        A handler may also have:
        - ``async def written()``, if it writes records itself: awaited after the
          returned envelopes are published, before the offsets are committed;
        - ``def published(acks: [(topic, partition, offset)])``: told where the returned
          envelopes were written;
        - ``async def tick() -> list[Envelope]``: called about every second between
          batches, for what is due by the clock (deadlines); its envelopes are published;
        - ``def unprocessable(env, reason) -> list[Envelope]``: what to record when a
          record it could not handle goes to the dead-letter topic, instead of the
          default (``unprocessable_step``);
        - ``async def passed(ends: {(topic, partition): next offset})``:
          told where each partition's batch ended when its last records were not handed
          to it (repeated, dead-lettered or of other types), for a handler that stores
          its own positions (a projector: its readers wait on them)."""
        ...


def unprocessable_step(env: Envelope[Any], consumer: str, reason: str) -> list[Envelope[Any]]:
    """What records that a turn's record went to the dead-letter topic: a fact keyed by
    the session, on which the orchestrator fails the turn. Nothing for other records."""
    data = env.data
    turn_id, session_id = getattr(data, "turn_id", None), getattr(data, "session_id", None)
    if not turn_id or not session_id or isinstance(data, events.TurnStepUnprocessable):
        return []
    fact = events.TurnStepUnprocessable(
        session_id=session_id,
        turn_id=turn_id,
        record_id=env.id,
        record_type=env.type,
        consumer=consumer,
        reason=reason,
    )
    return [env.follow(fact, step=f"unprocessable-{consumer}", source=f"/{consumer}")]


def failure_reason(exc: BaseException) -> str:
    """A reason safe to record anywhere: a code and the exception's class, never its
    text, which may quote a secret or a tenant's data; a domain error's own code and
    detail, which are written to be shown."""
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc.detail}"
    return f"HANDLER_FAILED: {type(exc).__name__}"


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


class SeenIds:
    """A bounded memory of handled event ids (dedupe of redelivered duplicates)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


# Outages (of Kafka here; a handler's own, such as its database's, are given to the
# runtime): retried with backoff until they pass, never dead-lettered.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OSError, KafkaError, TimeoutError)
_MAX_ATTEMPTS = 3
_MAX_DELAY_S = 5.0
# What a dead letter adds to its record's headers: why, where it was, and who failed.
DEAD_LETTER_HEADERS = ("dlq.reason", "dlq.topic", "dlq.partition", "dlq.offset", "dlq.consumer")
_COMMIT_INTERVAL_S = 0.5
_TICK_S = 1.0


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


def _described(handler: Handler) -> str:
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
    ) -> None:
        """``transient``: the handler's own outage errors (its database's), retried like
        Kafka's until they pass."""
        self.handler = handler
        self.publisher = publisher
        self.transient = (*TRANSIENT_ERRORS, *transient)
        self.seen = SeenIds()
        self.group_id = group_id or publisher.catalog.group_id(handler.name)
        self.failure: Exception | None = None
        self.failed = asyncio.Event()
        self._max_records = max_records
        self._session_timeout_ms = session_timeout_ms
        self._stopping = asyncio.Event()
        self._subscriber: PromptBatchSubscriber | None = None
        self._busy = asyncio.Lock()  # held while a batch is handled or partitions prepared
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._last_tick = time.monotonic()
        self._maintenance: asyncio.Task[None] | None = None
        self._lag_series: set[tuple[str, str, str, str]] = set()

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
            batch_timeout_ms=100,
            fetch_max_wait_ms=100,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(self._session_timeout_ms // 6, 100),
            parser=self._parse,
            decoder=self._decode,
            title=self.handler.name,
            description=_described(self.handler),
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
            await asyncio.sleep(0.1)
            if time.monotonic() - self._last_commit >= _COMMIT_INTERVAL_S:
                async with self._busy:
                    await self._commit()
            if time.monotonic() - self._last_tick >= _TICK_S:
                async with self._busy:
                    await self._tick()
                await self._measure_lag()

    async def _measure_lag(self) -> None:
        """Set the lag of each assigned partition: its log end (as last fetched) minus
        the consumer's position; drop the series of partitions given away."""
        consumer = None if self._subscriber is None else self._subscriber.consumer
        if consumer is None:
            return
        series: set[tuple[str, str, str, str]] = set()
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue  # nothing fetched yet
            try:
                async with asyncio.timeout(1):
                    position = await consumer.position(tp)
            except (KafkaError, TimeoutError, AssertionError):
                continue  # unassigned meanwhile, or no position yet
            labels = (self.handler.name, self.group_id, tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(max(0, end - position))
            series.add(labels)
        for gone in self._lag_series - series:
            CONSUMER_LAG.remove(*gone)
        self._lag_series = series

    async def _prepare(self, partitions: list[TopicPartition]) -> None:
        """Let the handler prepare for new partitions, retrying while the failure is an
        outage; a handler that cannot prepare stops the consumer (it would carry on
        without the handler's state)."""
        # What was handled before this assignment may come again from the committed
        # offsets, and the handler rebuilds its state from the log: it must see it.
        self.seen = SeenIds()
        delay = 0.2
        while not self._stopping.is_set():
            try:
                seeks = await self.handler.on_assigned(partitions)
            except self.transient as exc:
                log.warning(
                    "preparing partitions failed, retrying",
                    extra={"consumer": self.handler.name, "error": repr(exc), "delay": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY_S)
                continue
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
            return

    async def _parse(self, records: tuple[ConsumerRecord[Any, Any], ...]) -> StreamMessage[Any]:
        """The poll as FastStream's message; reading the records is the decoder's work."""
        first, last = records[0], records[-1]
        return StreamMessage(
            raw_message=records, body=b"", message_id=f"{first.offset}-{last.offset}"
        )

    async def _decode(self, message: StreamMessage[Any]) -> Polled:
        """Envelopes of the records the handler wants, each read once: other types are
        skipped by their ``ce_type`` header unparsed, repeated event ids are dropped, and
        unreadable records are set aside for the dead-letter topic."""
        records: tuple[ConsumerRecord[Any, Any], ...] = message.raw_message
        items: list[Item] = []
        unreadable: list[tuple[ConsumerRecord[Any, Any], str]] = []
        batch_ids: set[str] = set()
        wanted = self.handler.types
        for record in records:
            if wanted is not None and not is_wanted(record, wanted):
                continue
            try:
                env = from_kafka(record.key, record.value, list(record.headers))
            except EnvelopeError as exc:
                unreadable.append((record, str(exc)))
                continue
            if env.id in self.seen or env.id in batch_ids:
                continue  # a repeated event: handled already, or earlier in this poll
            batch_ids.add(env.id)
            items.append((env, Position(record.topic, record.partition, record.offset)))
        return Polled(records, items, unreadable)

    async def _process(self, polled: Polled) -> None:
        """Handle one poll's records, every partition's together (in log order within
        each), so a handler pays its per-batch costs once per poll."""
        if self._stopping.is_set():
            return  # the records are redelivered to whoever owns them next
        for record, reason in polled.unreadable:
            await self.dead_letter(record, reason, kind="unreadable")
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

    async def _passed(self, ends: dict[tuple[str, int], int], items: list[Item]) -> None:
        passed = getattr(self.handler, "passed", None)
        if passed is None:
            return
        handled = {(p.topic, p.partition): p.offset + 1 for _env, p in items}
        beyond = {tp: end for tp, end in ends.items() if handled.get(tp, -1) < end}
        if beyond:
            await passed(beyond)

    async def _tick(self) -> None:
        self._last_tick = time.monotonic()
        tick = getattr(self.handler, "tick", None)
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
        """None when handled and published; False when stopping; the exception when the
        handler failed ``_MAX_ATTEMPTS`` times. Outages are retried until they pass. A
        batch is handled once: when only publishing failed, the same outputs are
        published again (the handler has moved on; deciding again could differ)."""
        attempt = 0
        outputs: list[Envelope[Any]] | None = None
        started = time.perf_counter()
        while True:
            if self._stopping.is_set():
                return False
            attempt += 1
            try:
                if outputs is None:
                    outputs = await self.handler.handle_batch(items)
                if outputs:
                    acks = await self.publisher.publish_all(outputs)
                    published = getattr(self.handler, "published", None)
                    if published is not None:
                        published(acks)
                written = getattr(self.handler, "written", None)
                if written is not None:
                    await written()
            except RECORD_TOO_LARGE as exc:
                # Publishing the same outputs again cannot succeed: not an outage.
                failure: Exception = exc
                return failure
            except self.transient as exc:
                delay = min(0.1 * 2**attempt, _MAX_DELAY_S)
                log.warning(
                    "transient failure, retrying",
                    extra={"consumer": self.handler.name, "error": repr(exc), "delay": delay},
                )
                await asyncio.sleep(delay)
            except Exception as exc:
                if attempt >= _MAX_ATTEMPTS:
                    return exc
                await asyncio.sleep(0.05 * attempt)
            else:
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
        unprocessable = getattr(self.handler, "unprocessable", None)
        outcomes: list[Envelope[Any]] = []
        for env, position in items:
            await self.dead_letter(by_position[position], reason, kind="handler_failed")
            if unprocessable is not None:
                outcomes.extend(unprocessable(env, reason))
            else:
                outcomes.extend(unprocessable_step(env, self.handler.name, reason))
        if outcomes:
            await self.publisher.publish_all(outcomes)

    async def dead_letter(
        self, record: ConsumerRecord[Any, Any], reason: str, *, kind: str
    ) -> None:
        """Write ``record`` to the dead-letter topic with why (``kind``: unreadable or
        handler_failed, the metric's label; ``reason``: the detail, in its headers)."""
        RECORDS_DEAD_LETTERED.labels(self.handler.name, record.topic, kind).inc()
        reason = redact(reason)
        log.warning(
            "record sent to the dead-letter topic",
            extra={
                "consumer": self.handler.name,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": reason,
            },
        )
        headers = dead_letter_headers(record, reason, self.handler.name)
        await self.publisher.send_raw(
            self.publisher.catalog.dead_letter, record.value, record.key, headers
        )
