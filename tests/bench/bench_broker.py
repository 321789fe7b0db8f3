"""Broker benchmark: 1 KiB records through the embedded broker with both clients.

Prints records/s and MB/s for produce and consume (median of several rounds), and
end-to-end latency percentiles at a fixed moderate rate. The broker runs in its own
process with its default fsync policy; the clients run in this one.

    python -m tests.bench.bench_broker [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import confluent_kafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
)

from tests.kafka import BrokerProcess, external_bootstrap

RECORD = 1024
PAYLOAD = b"x" * (RECORD - 8)


def create_topic(bootstrap: str, partitions: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def confluent_produce(bootstrap: str, topic: str, count: int) -> float:
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
        }
    )
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=struct.pack(">q", i) + PAYLOAD)
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(120) == 0
    return time.perf_counter() - started


def confluent_consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 4_194_304,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started = 0.0
    while seen < count:
        messages = consumer.consume(num_messages=10_000, timeout=1.0)
        if messages and not started:
            started = time.perf_counter()
        seen += sum(1 for m in messages if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def aiokafka_produce(bootstrap: str, topic: str, count: int) -> float:
    async def run() -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1_000_000
        )
        await producer.start()
        started = time.perf_counter()
        pending = []
        for i in range(count):
            pending.append(await producer.send(topic, struct.pack(">q", i) + PAYLOAD))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
        await producer.stop()
        return elapsed

    return asyncio.run(run())


def aiokafka_consume(bootstrap: str, topic: str, count: int) -> float:
    async def run() -> float:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"bench-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_bytes=52_428_800,
            max_partition_fetch_bytes=4_194_304,
        )
        await consumer.start()
        seen = 0
        started = 0.0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batches and not started:
                started = time.perf_counter()
            seen += sum(len(b) for b in batches.values())
        elapsed = time.perf_counter() - started
        await consumer.stop()
        return elapsed

    return asyncio.run(run())


def latency(bootstrap: str, topic: str, rate: int, seconds: float) -> list[float]:
    """Send ``rate`` records/s for ``seconds``; return send-to-receive latencies in ms."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lat-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 100,
        }
    )
    assigned = threading.Event()
    consumer.subscribe([topic], on_assign=lambda *_: assigned.set())
    while not assigned.is_set():
        consumer.poll(0.1)
    # Let the consumer learn its start position before the clock starts.
    for _ in range(10):
        consumer.poll(0.05)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "enable.idempotence": True}
    )
    # Warm up both ends (connections, producer id, fetch position) before measuring.
    producer.produce(topic, value=b"warm-up")
    producer.flush(30)
    while (m := consumer.poll(0.2)) is None or m.value() != b"warm-up":
        pass
    total = int(rate * seconds)
    samples: list[float] = []

    def produce() -> None:
        started = time.perf_counter()
        for i in range(total):
            target = started + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            producer.produce(topic, value=struct.pack(">d", time.perf_counter()) + PAYLOAD)
            producer.poll(0)
        producer.flush(30)

    thread = threading.Thread(target=produce)
    thread.start()
    deadline = time.monotonic() + seconds + 30
    while len(samples) < total and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        value = m.value() if m is not None and m.error() is None else None
        if value is not None:
            samples.append((time.perf_counter() - struct.unpack(">d", value[:8])[0]) * 1000)
    thread.join()
    consumer.close()
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rounds(label: str, fn: Callable[[], float], count: int, repeat: int) -> None:
    times = [fn() for _ in range(repeat)]
    median = statistics.median(times)
    spread = ", ".join(f"{count / t:,.0f}" for t in times)
    print(
        f"{label:<28} {count / median:>10,.0f} rec/s {count * RECORD / median / 1e6:>8.1f} MB/s"
        f"   (median of {repeat}: {spread})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--aiokafka-records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000, help="records/s for the latency run")
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        external = external_bootstrap()
        broker = None if external else BrokerProcess(Path(tmp) / "data").start()
        bootstrap = external or (broker.bootstrap if broker else "")
        try:
            print(f"broker: {'external ' + bootstrap if external else 'embedded, fsync=interval'}")
            print(f"record size {RECORD} B, {args.partitions} partitions\n")
            topics: list[str] = []

            def produce_cf() -> float:
                topics.append(create_topic(bootstrap, args.partitions))
                return confluent_produce(bootstrap, topics[-1], args.records)

            rounds("confluent-kafka produce", produce_cf, args.records, args.rounds)
            consume_topics = iter(list(topics))
            rounds(
                "confluent-kafka consume",
                lambda: confluent_consume(bootstrap, next(consume_topics), args.records),
                args.records,
                args.rounds,
            )
            ai_topics: list[str] = []

            def produce_ai() -> float:
                ai_topics.append(create_topic(bootstrap, args.partitions))
                return aiokafka_produce(bootstrap, ai_topics[-1], args.aiokafka_records)

            rounds("aiokafka produce", produce_ai, args.aiokafka_records, args.rounds)
            ai_consume = iter(list(ai_topics))
            rounds(
                "aiokafka consume",
                lambda: aiokafka_consume(bootstrap, next(ai_consume), args.aiokafka_records),
                args.aiokafka_records,
                args.rounds,
            )
            samples = latency(bootstrap, create_topic(bootstrap, 1), args.rate, 5.0)
            print(
                f"\nend-to-end latency at {args.rate} rec/s (confluent-kafka, acks=all, "
                f"linger 0): p50 {percentile(samples, 0.5):.2f} ms, "
                f"p99 {percentile(samples, 0.99):.2f} ms over {len(samples)} records"
            )
        finally:
            if broker is not None:
                broker.stop()


if __name__ == "__main__":
    main()
