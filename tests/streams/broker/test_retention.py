"""Retention deletes whole segments; consumers see the log start offset move."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.eventually import eventually
from tests.kafka import BrokerProcess
from tests.streams.clients import AiokafkaClient, ConfluentClient, Sent

pytestmark = pytest.mark.broker_internal


def produce_one_batch_each(client: ConfluentClient, topic: str, count: int) -> None:
    for i in range(count):
        client.produce(topic, [Sent(key=None, value=f"{i:04d}".encode() + b"x" * 200)])


def test_retention_bytes_deletes_oldest_segments(
    broker_factory: type[BrokerProcess], tmp_path: Path, topic_name: str
) -> None:
    broker = broker_factory(tmp_path / "data", "--retention-check-interval-ms", "100").start()
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(
        topic_name, 1, {"segment.bytes": "1024", "retention.bytes": "2048", "retention.ms": "-1"}
    )
    produce_one_batch_each(client, topic_name, 30)
    partition_dir = tmp_path / "data" / "topics" / topic_name / "0"

    def closed_segment_bytes() -> int | None:
        """Bytes held by the closed segments, or None while a pass is deleting them."""
        try:
            return sum(s.stat().st_size for s in sorted(partition_dir.glob("*.log"))[:-1])
        except FileNotFoundError:
            return None

    # Retention runs periodically, possibly mid-produce: wait for the pass after the last batch.
    def retained() -> bool:
        held = closed_segment_bytes()
        assert 0 < (held or 0) <= 2048, f"closed segments hold {held} bytes"
        return True

    eventually(retained, "the closed segments within retention.bytes", timeout=20)
    start, end = client.offsets(topic_name, 0)
    assert end == 30
    assert start > 0, "the oldest segments were deleted"
    segments = sorted(partition_dir.glob("*.log"))
    assert int(segments[0].stem) == start, "log start is the first remaining segment"

    # Consumers from the beginning start at the new log start, for both clients.
    for reader in (client, AiokafkaClient(broker.bootstrap)):
        records = reader.consume(topic_name, end - start)
        assert [r.offset for r in records] == list(range(start, end))


def test_retention_ms_empties_an_expired_log(
    broker_factory: type[BrokerProcess], tmp_path: Path, topic_name: str
) -> None:
    broker = broker_factory(tmp_path / "data", "--retention-check-interval-ms", "100").start()
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic_name, 1, {"retention.ms": "600000"})
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    client.produce(
        topic_name,
        [Sent(key=None, value=b"old", partition=0, timestamp_ms=an_hour_ago) for _ in range(5)],
    )

    def emptied() -> bool:
        offsets = client.offsets(topic_name, 0)
        assert offsets == (5, 5), f"log start and end {offsets}"
        return True

    # Every 0.1 s: each look opens a consumer and asks the broker (whose retention pass
    # runs every 100 ms anyway).
    eventually(emptied, "the expired log emptied", timeout=20, poll=0.1)
    assert client.produce(topic_name, [Sent(key=None, value=b"fresh")]) == [(0, 5)]
    assert [r.value for r in client.consume(topic_name, 1)] == [b"fresh"]
