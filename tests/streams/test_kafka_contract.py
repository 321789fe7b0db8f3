"""The Kafka contract: what any broker we run on must do for our clients.

Runs against the embedded broker by default and, unchanged, against any Kafka named by
KAFKA_BOOTSTRAP_SERVERS.
"""

from __future__ import annotations

import time

import pytest

from tests.streams.clients import CLIENTS, KafkaClient, Sent


@pytest.fixture(params=CLIENTS, ids=lambda c: c.name)
def client(request: pytest.FixtureRequest, bootstrap: str) -> KafkaClient:
    return request.param(bootstrap)  # type: ignore[no-any-return]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_round_trip_keeps_keys_headers_and_values(
    client: KafkaClient, topic_name: str, codec: str
) -> None:
    client.create_topic(topic_name, 1)
    sent = [
        Sent(
            key=f"k{i}".encode() if i % 5 else None,
            value=(f"value-{i}-" * (i % 7 + 1)).encode(),
            headers=(("trace", f"t{i}".encode()), ("kind", b"test")),
        )
        for i in range(200)
    ]
    acked = client.produce(topic_name, sent, compression=codec)

    got = client.consume(topic_name, len(sent))

    assert [(r.partition, r.offset) for r in got] == acked == [(0, i) for i in range(200)]
    assert [(r.key, r.value, r.headers) for r in got] == [(s.key, s.value, s.headers) for s in sent]


def test_order_is_kept_within_each_partition(client: KafkaClient, topic_name: str) -> None:
    client.create_topic(topic_name, 4)
    sent = [Sent(key=f"key-{i % 9}".encode(), value=str(i).encode()) for i in range(900)]
    client.produce(topic_name, sent)

    got = client.consume(topic_name, len(sent))

    assert len(got) == len(sent)
    by_key: dict[bytes | None, list[int]] = {}
    partition_of: dict[bytes | None, set[int]] = {}
    for r in got:
        by_key.setdefault(r.key, []).append(int(r.value))
        partition_of.setdefault(r.key, set()).add(r.partition)
    for key, values in by_key.items():
        assert values == sorted(values), f"{key!r} out of order"
        assert len(partition_of[key]) == 1, f"{key!r} spread over partitions"
    for partition in range(4):
        offsets = [r.offset for r in got if r.partition == partition]
        assert offsets == list(range(len(offsets)))


def test_list_offsets_earliest_latest_and_by_time(client: KafkaClient, topic_name: str) -> None:
    client.create_topic(topic_name, 1)
    base = int(time.time() * 1000) - 60_000
    # Three separate produce calls, so the records land in separate batches too.
    for step in range(3):
        client.produce(
            topic_name,
            [
                Sent(
                    key=None,
                    value=f"{step}-{i}".encode(),
                    partition=0,
                    timestamp_ms=base + step * 10_000 + i,
                )
                for i in range(5)
            ],
        )

    assert client.offsets(topic_name, 0) == (0, 15)
    assert client.offset_for_time(topic_name, 0, base - 1) == 0
    assert client.offset_for_time(topic_name, 0, base + 10_000) == 5
    assert client.offset_for_time(topic_name, 0, base + 10_002) == 7
    assert client.offset_for_time(topic_name, 0, base + 20_004) == 14
    assert client.offset_for_time(topic_name, 0, base + 30_000) == -1


def test_a_deleted_topic_is_gone_from_a_fresh_clients_listing_at_once(
    client: KafkaClient, topic_name: str
) -> None:
    """DeleteTopics answers only once the topic is gone from metadata (its timeout is
    how long the broker may take): a client listing topics right after never sees it."""
    for round_ in range(10):
        topic = f"{topic_name}-{round_}"
        client.create_topic(topic, 3)
        client.produce(topic, [Sent(key=b"k", value=b"v")])
        client.delete_topic(topic)
        assert topic not in client.topics(), f"round {round_}: {topic} still listed"
