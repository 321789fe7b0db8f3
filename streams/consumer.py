"""Consumer plumbing shared by every worker and projector.

A ``ConsumerRuntime`` reads its topics in a consumer group, turns records into envelopes
(unreadable ones go to the dead-letter topic with the reason and their original
position, and the consumer carries on), drops events it has already handled (by event
id), hands batches to its ``Handler``, publishes what the handler returns, and only then
commits the offsets: at-least-once delivery, with effects made exactly-once by
deterministic event ids downstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from schemas import events
from schemas.envelope import Envelope, EnvelopeError, from_kafka

from .logs import redact
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
    if turn_id is None or session_id is None or isinstance(data, events.TurnStepUnprocessable):
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
    text, which may quote a secret or a tenant's data."""
    return f"HANDLER_FAILED: {type(exc).__name__}"


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
_IDLE_COMMIT_S = 1.0
_TICK_S = 1.0


class ConsumerRuntime:
    def __init__(
        self,
        bootstrap_servers: str,
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
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id or publisher.catalog.group_id(handler.name),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            fetch_max_wait_ms=100,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(session_timeout_ms // 6, 100),
        )
        self._max_records = max_records
        self._failure: Exception | None = None
        self._busy = asyncio.Lock()  # held while a batch is handled or partitions prepared
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._last_tick = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        runtime = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                # The batch in hand is finished (published and committed) before another
                # member may own its partition: one writer per key, even in a rebalance.
                async with runtime._busy:
                    await runtime._commit()

            async def on_partitions_assigned(self, assigned: Any) -> None:
                async with runtime._busy:
                    await runtime._prepare(sorted(assigned), stop)

        self.consumer.subscribe(list(self.handler.topics), listener=Listener())
        await self.consumer.start()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=100, max_records=self._max_records)
                if batches:
                    async with self._busy:
                        await self._process(batches, stop)
                if time.monotonic() - self._last_commit >= _IDLE_COMMIT_S:
                    async with self._busy:
                        await self._commit()
                if time.monotonic() - self._last_tick >= _TICK_S:
                    async with self._busy:
                        await self._tick()
        finally:
            async with self._busy:
                await self._commit()
            await self.consumer.stop()
        if self._failure is not None:
            raise RuntimeError(
                f"{self.handler.name}: partition assignment failed"
            ) from self._failure

    async def _prepare(self, partitions: list[TopicPartition], stop: asyncio.Event) -> None:
        """Let the handler prepare for new partitions, retrying while the failure is an
        outage; a handler that cannot prepare stops the consumer (aiokafka would carry on
        without the handler's state)."""
        # What was handled before this assignment may come again from the committed
        # offsets, and the handler rebuilds its state from the log: it must see it.
        self.seen = SeenIds()
        delay = 0.2
        while not stop.is_set():
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
                self._failure = exc
                stop.set()
                return
            for tp, offset in seeks.items():
                self.consumer.seek(tp, offset)
            return

    async def _process(
        self, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]], stop: asyncio.Event
    ) -> None:
        """Handle one poll's records, every partition's together (in log order within
        each), so a handler pays its per-batch costs once per poll."""
        items: list[Item] = []
        records: dict[Position, ConsumerRecord[Any, Any]] = {}
        batch_ids: set[str] = set()
        wanted = self.handler.types
        for batch in batches.values():
            for record in batch:
                if wanted is not None and not is_wanted(record, wanted):
                    continue
                try:
                    env = from_kafka(record.key, record.value, list(record.headers))
                except EnvelopeError as exc:
                    await self.dead_letter(record, str(exc))
                    continue
                if env.id in self.seen or env.id in batch_ids:
                    continue  # a repeated event: handled already, or earlier in this poll
                batch_ids.add(env.id)
                position = Position(record.topic, record.partition, record.offset)
                records[position] = record
                items.append((env, position))
        if items and not await self._handle(items, records, stop):
            return  # stopping: the records are redelivered to whoever owns them next
        await self._passed(batches, items)
        for tp, batch in batches.items():
            self._uncommitted[tp] = batch[-1].offset + 1
        if items:
            await self._commit()

    async def _passed(
        self, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]], items: list[Item]
    ) -> None:
        passed = getattr(self.handler, "passed", None)
        if passed is None:
            return
        handled = {(p.topic, p.partition): p.offset + 1 for _env, p in items}
        ends = {
            (tp.topic, tp.partition): batch[-1].offset + 1
            for tp, batch in batches.items()
            if batch and handled.get((tp.topic, tp.partition), -1) < batch[-1].offset + 1
        }
        if ends:
            await passed(ends)

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
        """Commit every handled position. Positions of batches that needed no work are
        committed lazily (at least every ``_IDLE_COMMIT_S``): skipping records again
        after a crash costs little, a commit per batch costs a round trip."""
        if not self._uncommitted:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        self._last_commit = time.monotonic()
        try:
            await self.consumer.commit(offsets)
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
        records: dict[Position, ConsumerRecord[Any, Any]],
        stop: asyncio.Event,
    ) -> bool:
        """Handle and publish; False if the consumer is stopping before it could. A batch
        that keeps failing is retried item by item, and only the items that fail alone
        go to the dead-letter topic."""
        failure = await self._attempt(items, stop)
        if failure is None or failure is False:
            return failure is None
        if len(items) == 1:
            await self._dead_letter_items(items, records, failure)
            return True
        for item in items:
            alone = await self._attempt([item], stop)
            if alone is False:
                return False
            if isinstance(alone, Exception):
                await self._dead_letter_items([item], records, alone)
        return True

    async def _attempt(
        self, items: list[Item], stop: asyncio.Event
    ) -> Exception | Literal[False] | None:
        """None when handled and published; False when stopping; the exception when the
        handler failed ``_MAX_ATTEMPTS`` times. Outages are retried until they pass. A
        batch is handled once: when only publishing failed, the same outputs are
        published again (the handler has moved on; deciding again could differ)."""
        attempt = 0
        outputs: list[Envelope[Any]] | None = None
        while True:
            if stop.is_set():
                return False
            attempt += 1
            try:
                if outputs is None:
                    outputs = await self.handler.handle_batch(items)
                if outputs:
                    await self.publisher.publish_all(outputs)
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
                return None

    async def _dead_letter_items(
        self,
        items: list[Item],
        records: dict[Position, ConsumerRecord[Any, Any]],
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
        reason = failure_reason(exc)
        unprocessable = getattr(self.handler, "unprocessable", None)
        outcomes: list[Envelope[Any]] = []
        for env, position in items:
            await self.dead_letter(records[position], reason)
            if unprocessable is not None:
                outcomes.extend(unprocessable(env, reason))
            else:
                outcomes.extend(unprocessable_step(env, self.handler.name, reason))
        if outcomes:
            await self.publisher.publish_all(outcomes)

    async def dead_letter(self, record: ConsumerRecord[Any, Any], reason: str) -> None:
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
        headers = [
            *list(record.headers),
            ("dlq.reason", reason.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.consumer", self.handler.name.encode()),
        ]
        await self.publisher.send_raw(
            self.publisher.catalog.dead_letter, record.value, record.key, headers
        )
