"""Reading whole topics in tests and benchmarks, with a real consumer and no group."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from streams.catalog import partitions_of


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end, in partition and offset order."""

    async def run() -> list[Any]:
        partitions = await partitions_of(bootstrap, topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[Any] = []
            for tp in tps:
                while ends[tp] and (await consumer.position(tp)) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    records.extend(r for r in batch.get(tp, []) if r.offset < ends[tp])
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


def produce_patiently(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, str | bytes | None]],
) -> None:
    """Queue a record on a confluent-kafka producer, waiting while its queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)
