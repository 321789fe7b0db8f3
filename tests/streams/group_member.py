"""A consumer-group member in its own process, for tests that kill members.

Usage: python -m tests.streams.group_member CLIENT BOOTSTRAP TOPIC GROUP

Prints one JSON line per assignment and per record; commits after every batch; on
SIGTERM closes the consumer (leaving the group) and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run_confluent(bootstrap: str, topic: str, group: str) -> None:
    import confluent_kafka

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )

    def on_assign(_consumer: Any, partitions: list[Any]) -> None:
        emit({"event": "assigned", "partitions": sorted(p.partition for p in partitions)})

    consumer.subscribe([topic], on_assign=on_assign)
    while not stop:
        messages = consumer.consume(num_messages=100, timeout=0.2)
        for m in messages:
            if m.error() is None:
                emit(
                    {
                        "event": "record",
                        "p": m.partition(),
                        "o": m.offset(),
                        "v": (m.value() or b"").decode(),
                    }
                )
        if messages:
            try:
                consumer.commit(asynchronous=False)
            except confluent_kafka.KafkaException as exc:
                emit({"event": "commit_failed", "error": str(exc)})
    consumer.close()
    emit({"event": "closed"})


async def run_aiokafka(bootstrap: str, topic: str, group: str) -> None:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.errors import CommitFailedError

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            emit({"event": "assigned", "partitions": sorted(tp.partition for tp in assigned)})

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    consumer.subscribe([topic], listener=Listener())
    await consumer.start()
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200)
        for messages in batches.values():
            for m in messages:
                emit(
                    {
                        "event": "record",
                        "p": m.partition,
                        "o": m.offset,
                        "v": (m.value or b"").decode(),
                    }
                )
        if batches:
            try:
                await consumer.commit()
            except CommitFailedError as exc:
                emit({"event": "commit_failed", "error": str(exc)})
    await consumer.stop()
    emit({"event": "closed"})


def main() -> None:
    client, bootstrap, topic, group = sys.argv[1:5]
    if client == "confluent-kafka":
        run_confluent(bootstrap, topic, group)
    else:
        asyncio.run(run_aiokafka(bootstrap, topic, group))


if __name__ == "__main__":
    main()
