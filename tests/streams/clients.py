"""One small facade over each real Kafka client, so a contract test runs against both.

Every call goes over TCP to the broker under test; nothing here fakes a broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import confluent_kafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as CfNewTopic

from tests.eventually import eventually

T = TypeVar("T")


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Received:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


class KafkaClient(Protocol):
    name: str
    codecs: tuple[str, ...]

    def create_topic(
        self, topic: str, partitions: int, configs: dict[str, str] | None = None
    ) -> None: ...
    def produce(
        self, topic: str, records: list[Sent], compression: str = "none"
    ) -> list[tuple[int, int]]: ...
    def consume(self, topic: str, count: int, timeout: float = 30.0) -> list[Received]: ...
    def offsets(self, topic: str, partition: int) -> tuple[int, int]: ...
    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int: ...
    def delete_topic(self, topic: str) -> None: ...
    def topics(self) -> set[str]:
        """Every topic, as a fresh admin client lists it."""
        ...


class ConfluentClient:
    name = "confluent-kafka"
    codecs = ("none", "gzip", "snappy", "lz4", "zstd")

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def create_topic(
        self, topic: str, partitions: int, configs: dict[str, str] | None = None
    ) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([CfNewTopic(topic, partitions, 1, config=configs or {})])
        futures[topic].result(30)

        def listed() -> int:
            try:
                found = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
            except Exception as exc:  # not yet listed: a KeyError, a KafkaException
                raise AssertionError(repr(exc)) from exc
            assert found == partitions, f"{found} partitions"
            return found

        eventually(listed, f"{topic} with {partitions} partitions in the metadata", timeout=10)

    def produce(
        self, topic: str, records: list[Sent], compression: str = "none"
    ) -> list[tuple[int, int]]:
        producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": compression,
                "linger.ms": 5,
            }
        )
        acked: dict[int, tuple[int, int]] = {}
        errors: list[str] = []

        def report(index: int):  # type: ignore[no-untyped-def]
            def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
                if err is not None:
                    errors.append(str(err))
                else:
                    acked[index] = (msg.partition(), msg.offset())

            return on_delivery

        for i, r in enumerate(records):
            kwargs: dict[str, Any] = {}
            if r.partition is not None:
                kwargs["partition"] = r.partition
            if r.timestamp_ms is not None:
                kwargs["timestamp"] = r.timestamp_ms
            producer.produce(
                topic,
                key=r.key,
                value=r.value,
                headers=list(r.headers),
                on_delivery=report(i),
                **kwargs,
            )
            producer.poll(0)
        assert producer.flush(30) == 0, "messages left unflushed"
        assert not errors, errors
        return [acked[i] for i in range(len(records))]

    def consume(self, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"read-{topic}-{time.monotonic_ns()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        out: list[Received] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < count and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                out.append(
                    Received(
                        msg.partition() or 0,
                        msg.offset() or 0,
                        msg.key(),
                        msg.value() or b"",
                        tuple(msg.headers() or ()),  # type: ignore[arg-type]
                        msg.timestamp()[1],
                    )
                )
        finally:
            consumer.close()
        return out

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "offsets"}
        )
        try:
            low, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=10, cached=False
            )
            return low, high
        finally:
            consumer.close()

    def delete_topic(self, topic: str) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.delete_topics([topic], operation_timeout=30)[topic].result(30)

    def topics(self) -> set[str]:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return set(admin.list_topics(timeout=10).topics)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "offsets"}
        )
        try:
            (found,) = consumer.offsets_for_times(
                [confluent_kafka.TopicPartition(topic, partition, timestamp_ms)], timeout=10
            )
            return int(found.offset)
        finally:
            consumer.close()


class AiokafkaClient:
    name = "aiokafka"
    codecs = ("none", "gzip", "snappy", "lz4", "zstd")

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def create_topic(
        self, topic: str, partitions: int, configs: dict[str, str] | None = None
    ) -> None:
        async def run() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.create_topics(
                    [NewTopic(topic, partitions, 1, topic_configs=configs or {})]
                )
            finally:
                await admin.close()

        asyncio.run(run())

    def produce(
        self, topic: str, records: list[Sent], compression: str = "none"
    ) -> list[tuple[int, int]]:
        async def run() -> list[tuple[int, int]]:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                enable_idempotence=True,
                acks="all",
                compression_type=None if compression == "none" else compression,
                linger_ms=5,
            )
            await producer.start()
            try:
                futures = [
                    await producer.send(
                        topic,
                        key=r.key,
                        value=r.value,
                        headers=list(r.headers),
                        partition=r.partition,
                        timestamp_ms=r.timestamp_ms,
                    )
                    for r in records
                ]
                metas = await asyncio.gather(*futures)
            finally:
                await producer.stop()
            return [(m.partition, m.offset) for m in metas]

        return asyncio.run(run())

    def consume(self, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
        async def run() -> list[Received]:
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=self.bootstrap,
                group_id=f"read-{topic}-{time.monotonic_ns()}",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await consumer.start()
            out: list[Received] = []
            try:
                deadline = time.monotonic() + timeout
                while len(out) < count and time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=500)
                    for messages in batches.values():
                        out.extend(
                            Received(
                                m.partition,
                                m.offset,
                                m.key,
                                m.value,
                                tuple(m.headers),
                                m.timestamp,
                            )
                            for m in messages
                        )
            finally:
                await consumer.stop()
            return out

        return asyncio.run(run())

    def _with_consumer(self, fn: Callable[[AIOKafkaConsumer], Awaitable[T]]) -> T:
        async def run() -> T:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
            await consumer.start()
            try:
                return await fn(consumer)
            finally:
                await consumer.stop()

        return asyncio.run(run())

    def delete_topic(self, topic: str) -> None:
        async def run() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.delete_topics([topic], timeout_ms=30_000)
            finally:
                await admin.close()

        asyncio.run(run())

    def topics(self) -> set[str]:
        async def run() -> set[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                return set(await admin.list_topics())
            finally:
                await admin.close()

        return asyncio.run(run())

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        tp = TopicPartition(topic, partition)

        async def query(consumer: AIOKafkaConsumer) -> tuple[int, int]:
            low = (await consumer.beginning_offsets([tp]))[tp]
            high = (await consumer.end_offsets([tp]))[tp]
            return low, high

        return self._with_consumer(query)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        tp = TopicPartition(topic, partition)

        async def query(consumer: AIOKafkaConsumer) -> int:
            found = (await consumer.offsets_for_times({tp: timestamp_ms}))[tp]
            return -1 if found is None else found.offset

        return self._with_consumer(query)


CLIENTS = (ConfluentClient, AiokafkaClient)
