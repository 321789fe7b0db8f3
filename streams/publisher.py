"""The typed publisher: envelopes in, records on the catalog's topic out.

Idempotent producer with acks=all; the Kafka key is the envelope's partition key, so
one aggregate's records stay in one partition, in order. An idempotent producer never
gives up on a record: while Kafka is down it retries for ever, so a writer that must
answer someone (the gateway) gives its publisher a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry.trace import Span, SpanKind

from schemas.envelope import Envelope, to_kafka

from . import tracing
from .catalog import Catalog

# Raised when a record is larger than the producer or the topic accepts: retrying the
# same record cannot help, unlike the other Kafka errors.
RECORD_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


class WriteTimeoutError(KafkaTimeoutError):  # type: ignore[misc]  # aiokafka is untyped
    """Kafka did not acknowledge a write within the publisher's deadline. ``pending``:
    records had been handed to the producer, which keeps them and writes them once
    Kafka answers (an idempotent producer cannot take a record back), so they may yet
    be recorded; otherwise nothing was."""

    def __init__(self, timeout_s: float, *, pending: bool) -> None:
        super().__init__(f"not acknowledged within {timeout_s:g} s")
        self.timeout_s = timeout_s
        self.pending = pending


class Publisher:
    def __init__(
        self,
        bootstrap_servers: str,
        catalog: Catalog,
        *,
        linger_ms: int = 0,
        traced: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """``traced``: a ``send`` span per record when tracing is on. ``timeout_s``: the
        longest ``publish_all`` and ``send_raw`` wait for Kafka before they raise
        ``WriteTimeoutError``; None: until Kafka answers."""
        self.bootstrap_servers = bootstrap_servers
        self.catalog = catalog
        self._linger_ms = linger_ms
        self._traced = traced
        self._timeout_s = timeout_s
        self._producer_or_none: AIOKafkaProducer | None = None

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._producer_or_none is None:
            raise RuntimeError("Publisher.start() was not awaited")
        return self._producer_or_none

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds to the running event loop.
        self._producer_or_none = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=self._linger_ms,
        )
        await self._producer_or_none.start()

    async def stop(self) -> None:
        if self._producer_or_none is not None:
            await self._producer_or_none.stop()

    async def ping(self) -> None:
        """A metadata round trip to the cluster; raises if it does not answer."""
        await self._producer.client.fetch_all_metadata()

    async def publish(self, env: Envelope[Any]) -> tuple[str, int, int]:
        """Write one envelope; return (topic, partition, offset) once acknowledged."""
        (position,) = await self.publish_all([env])
        return position

    async def publish_all(self, envs: list[Envelope[Any]]) -> list[tuple[str, int, int]]:
        """Write envelopes in order (per key) and wait for every acknowledgement."""
        sent: list[asyncio.Future[Any]] = []
        async with write_deadline(self._timeout_s, sent):
            for env in envs:
                sent.append(await self.enqueue(env))
            if sent:  # not gather: a deadline must not cancel what the producer holds
                await asyncio.wait(sent)
        metas = [future.result() for future in sent]
        return [(m.topic, m.partition, m.offset) for m in metas]

    async def enqueue(self, env: Envelope[Any]) -> asyncio.Future[Any]:
        """Hand an envelope to the producer without waiting for its acknowledgement;
        await the returned future (or flush) before relying on it being written. With
        tracing on, the record carries the context of a ``send`` span, ended when the
        record is acknowledged. A fact with a copy on a work topic is written to both,
        and acknowledged once both are (with where its own topic has it)."""
        topic, *copies = self.catalog.topics_for(type(env.data))
        span = None
        if self._traced and tracing.enabled() and tracing.sampled(env.traceparent):
            span = tracing.start(
                f"send {topic}",
                env.traceparent,
                kind=SpanKind.PRODUCER,
                attributes=tracing.messaging("send", topic, env.id),
            )
            env = replace(env, traceparent=tracing.traceparent_of(span))
        key, value, headers = to_kafka(env)
        sent: asyncio.Future[Any] = await self._producer.send(
            topic, value, key=key, headers=headers
        )
        if copies:
            sent = _all_of(
                [sent]
                + [await self._producer.send(t, value, key=key, headers=headers) for t in copies]
            )
        if span is not None:
            sent.add_done_callback(lambda done: _sent(span, done))
        return sent

    async def partition_of(self, topic: str, key: bytes) -> int:
        """The partition our producer writes ``key`` to (murmur2, as Kafka's Java client)."""
        partitions = sorted(await self._producer.partitions_for(topic))
        return int(DefaultPartitioner()(key, partitions, partitions))

    async def send_raw(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any:
        """Write a record as it is (a dead letter); its metadata once acknowledged."""
        sent: list[asyncio.Future[Any]] = []
        async with write_deadline(self._timeout_s, sent):
            sent.append(await self._producer.send(topic, value, key=key, headers=headers))
            await asyncio.wait(sent)
        return sent[0].result()


@contextlib.asynccontextmanager
async def write_deadline(
    timeout_s: float | None, sent: Sequence[asyncio.Future[Any]] = ()
) -> AsyncIterator[None]:
    """Bound what a write waits on Kafka for by ``timeout_s`` (None: no bound), raising
    ``WriteTimeoutError``. A send interrupted before the producer took its record
    leaves nothing behind; the records the producer holds (``sent``) it may still
    write."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            yield
    except TimeoutError:
        if not deadline.expired():
            raise
        raise WriteTimeoutError(timeout_s or 0.0, pending=bool(sent)) from None


def _all_of(sent: list[asyncio.Future[Any]]) -> asyncio.Future[Any]:
    """A future done when all of ``sent`` are, with the first one's result or the first
    failure. Not ``gather``: cancelling it must not cancel what the producer holds."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(_: asyncio.Future[Any]) -> None:
        if done.done() or not all(f.done() for f in sent):
            return
        for future in sent:
            if future.cancelled():
                done.cancel()
                return
            if (exc := future.exception()) is not None:
                done.set_exception(exc)
                return
        done.set_result(sent[0].result())

    for future in sent:
        future.add_done_callback(settle)
    return done


def _sent(span: Span, done: asyncio.Future[Any]) -> None:
    """End a ``send`` span with where its record was written, or why it was not."""
    if done.cancelled():
        tracing.failed(span, "cancelled")
    elif (exc := done.exception()) is not None:
        tracing.failed(span, type(exc).__name__)
    else:
        span.set_attribute("messaging.destination.partition.id", str(done.result().partition))
        span.set_attribute("messaging.kafka.offset", done.result().offset)
    span.end()
