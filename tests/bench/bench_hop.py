"""Consume-hop benchmark: what a role's FastStream subscriber adds to one hop.

One record at a time is produced (CloudEvents, binary mode) and consumed, and the next
is produced once the last has been handed over: the time from ``send`` to hand-over,
for

1. a bare aiokafka consumer (``getone``), reading each record into an envelope: the
   broker's own produce-to-consume time with the same decoding, the baseline;
2. a role's subscriber (``streams.consumer``: FastStream batch subscriber, rebalance
   listener, decoder, dedupe, manual commit) handing each record to a handler that
   does nothing.

Both read the same broker, in the same run. Prints the median and p99 of each and the
ratio of medians.

    python -m tests.bench.bench_hop [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import events
from schemas.envelope import Envelope, envelope, from_kafka, to_kafka
from streams.catalog import Catalog, ensure_topics
from streams.consumer import ConsumerRuntime
from streams.handler import Item
from streams.publisher import Publisher
from tests.kafka import BrokerProcess, external_bootstrap
from tests.streams.records import create_topic


def record(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    fact = events.TenantCreated(tenant_id=f"t-{i}", display_name="bench")
    return to_kafka(envelope(fact, source="/bench", tenant_id=f"t-{i}"))


@dataclass
class Arrivals:
    """Hand-over times by tenant id, and a wake-up for the producer."""

    at: dict[str, float] = field(default_factory=dict)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def arrived(self, env: Envelope[Any]) -> None:
        self.at[env.data.tenant_id] = time.perf_counter()
        self.event.set()

    async def of(self, tenant_id: str) -> None:
        while tenant_id not in self.at:
            self.event.clear()
            await self.event.wait()


async def ping_pong(
    producer: AIOKafkaProducer, topic: str, count: int, arrivals: Arrivals
) -> list[float]:
    latencies = []
    for i in range(count):
        key, value, headers = record(i)
        sent = time.perf_counter()
        await producer.send_and_wait(topic, value, key=key, headers=headers)
        await arrivals.of(f"t-{i}")
        latencies.append(arrivals.at[f"t-{i}"] - sent)
    return latencies


async def bare(bootstrap: str, topic: str, count: int) -> list[float]:
    arrivals = Arrivals()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    await consumer.seek_to_end()

    async def consume() -> None:
        while True:
            r = await consumer.getone()
            arrivals.arrived(from_kafka(r.key, r.value, list(r.headers)))

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    task = asyncio.create_task(consume())
    try:
        return await ping_pong(producer, topic, count, arrivals)
    finally:
        task.cancel()
        await producer.stop()
        await consumer.stop()


@dataclass
class Receiver:
    """A handler that hands each record over and records nothing."""

    topics: Sequence[str]
    arrivals: Arrivals
    name: str = "bench-hop"
    types: frozenset[str] | None = None

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        for env, _position in items:
            self.arrivals.arrived(env)
        return []


async def role(bootstrap: str, topic: str, count: int) -> list[float]:
    arrivals = Arrivals()
    catalog = Catalog(f"{topic}.")
    await ensure_topics(bootstrap, catalog, 1)
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    runtime = ConsumerRuntime(
        Receiver([topic], arrivals), publisher, group_id=f"g-{uuid.uuid4().hex[:8]}"
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        # The group's first assignment, then the hops.
        key, value, headers = record(-1)
        await producer.send_and_wait(topic, value, key=key, headers=headers)
        await arrivals.of("t--1")
        return await ping_pong(producer, topic, count, arrivals)
    finally:
        stop.set()
        await running
        await producer.stop()
        await publisher.stop()


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(bootstrap: str, records: int, rounds: int) -> None:
    bare_p50, role_p50 = [], []
    for r in range(rounds):
        bare_topic, role_topic = f"hop-{uuid.uuid4().hex[:8]}", f"hop-{uuid.uuid4().hex[:8]}"
        await create_topic(bootstrap, bare_topic, partitions=1)
        await create_topic(bootstrap, role_topic, partitions=1)
        b = await bare(bootstrap, bare_topic, records)
        f = await role(bootstrap, role_topic, records)
        bare_p50.append(ms(b, 0.5))
        role_p50.append(ms(f, 0.5))
        print(
            f"round {r + 1}: bare getone p50 {ms(b, 0.5):.2f} ms p99 {ms(b, 0.99):.2f} ms;"
            f" role subscriber p50 {ms(f, 0.5):.2f} ms p99 {ms(f, 0.99):.2f} ms",
            flush=True,
        )
    b50, f50 = statistics.median(bare_p50), statistics.median(role_p50)
    print(
        f"consume hop, median of {rounds} rounds of {records}: bare getone {b50:.2f} ms,"
        f" role subscriber {f50:.2f} ms, ratio {f50 / b50:.2f}x (target <= 1.1x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        external = external_bootstrap()
        broker = None if external else BrokerProcess(Path(tmp) / "data").start()
        try:
            bootstrap = external or (broker.bootstrap if broker else "")
            asyncio.run(measure(bootstrap, args.records, args.rounds))
        finally:
            if broker is not None:
                broker.stop()


if __name__ == "__main__":
    main()
