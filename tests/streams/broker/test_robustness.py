"""Bad frames close only the connection that sent them; corrupt batches are refused."""

from __future__ import annotations

import datetime
import os
import struct
import threading
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.types import TopicName
from kio.static.primitive import Records, i16, i32

from tests.kafka import BrokerProcess
from tests.streams.clients import ConfluentClient, Sent
from tests.streams.wire import WireClient, record_batch

pytestmark = pytest.mark.broker_internal


def produce_request(topic: str, batch: bytes) -> ProduceRequest:
    return ProduceRequest(
        acks=i16(1),
        timeout=datetime.timedelta(seconds=5),  # type: ignore[arg-type]
        topic_data=(
            TopicProduceData(
                name=TopicName(topic),
                partition_data=(PartitionProduceData(index=i32(0), records=Records(batch)),),
            ),
        ),
    )


def test_bad_frames_do_not_disturb_a_healthy_client(
    broker_factory: type[BrokerProcess], tmp_path: Path, topic_name: str
) -> None:
    broker = broker_factory(tmp_path / "data", "--max-request-bytes", "1048576").start()
    healthy = ConfluentClient(broker.bootstrap)
    healthy.create_topic(topic_name, 2)
    sent = [Sent(key=str(i).encode(), value=str(i).encode()) for i in range(3000)]
    traffic = threading.Thread(target=healthy.produce, args=(topic_name, sent))
    traffic.start()

    bad_frames = {
        "garbage body": struct.pack(">i", 40) + struct.pack(">hhi", 3, 12, 1) + os.urandom(32),
        "unknown api key": struct.pack(">i", 12) + struct.pack(">hhi", 999, 0, 1) + b"\0\0\0\0",
        "unsupported version": struct.pack(">i", 12) + struct.pack(">hhi", 0, 99, 1) + b"\0\0\0\0",
        "oversized frame": struct.pack(">i", 64 * 1024 * 1024),
        "negative length": struct.pack(">i", -5),
        "short header": struct.pack(">i", 3) + b"\0\0\0",
    }
    for name, frame in bad_frames.items():
        with WireClient(broker.bootstrap) as wire:
            wire.send_raw(frame)
            assert wire.closed_by_peer(), f"{name}: connection left open"
    with WireClient(broker.bootstrap) as wire:
        wire.send_raw(struct.pack(">i", 500) + b"\0" * 20)  # truncated, then we hang up

    traffic.join(60)
    got = healthy.consume(topic_name, len(sent))
    assert sorted(int(r.value) for r in got) == list(range(3000))
    # Logged, once per repeat interval: a flood of bad frames is not a flood of lines.
    assert "closing connection: malformed request" in broker.logs()


def test_corrupt_batch_is_refused_and_the_connection_keeps_serving(
    broker_factory: type[BrokerProcess], tmp_path: Path, topic_name: str
) -> None:
    broker = broker_factory(tmp_path / "data").start()
    ConfluentClient(broker.bootstrap).create_topic(topic_name, 1)
    good = record_batch([b"one", b"two"])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF

    with WireClient(broker.bootstrap) as wire:
        refused = wire.request(produce_request(topic_name, bytes(corrupt)))
        accepted = wire.request(produce_request(topic_name, good))

    assert refused.responses[0].partition_responses[0].error_code is ErrorCode.corrupt_message
    result = accepted.responses[0].partition_responses[0]
    assert (result.error_code, result.base_offset) == (ErrorCode.none, 0)
    assert [r.value for r in ConfluentClient(broker.bootstrap).consume(topic_name, 2)] == [
        b"one",
        b"two",
    ]
