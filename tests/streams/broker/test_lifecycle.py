"""Version negotiation, metrics and graceful shutdown of the embedded broker."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import confluent_kafka
import pytest
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsV0
from kio.schema.api_versions.v4.request import ApiVersionsRequest as ApiVersionsV4
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from streams.broker.apis import APIS
from tests.kafka import BrokerProcess
from tests.streams.clients import ConfluentClient, Sent
from tests.streams.wire import WireClient

pytestmark = pytest.mark.broker_internal


def test_too_new_api_versions_request_gets_the_v0_error_response(
    broker_factory: type[BrokerProcess], tmp_path: Path
) -> None:
    broker = broker_factory(tmp_path / "data").start()
    with WireClient(broker.bootstrap) as wire:
        wire.send_raw(
            wire.encode(ApiVersionsV4(client_software_name="t", client_software_version="1"))
        )
        size = int.from_bytes(wire.recv_exactly(4), "big")
        frame = wire.recv_exactly(size)
    body, _ = entity_reader(ApiVersionsV0)(frame, 4)  # v0 header: correlation id only
    assert body.error_code is ErrorCode.unsupported_version
    listed = {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}
    assert listed == {key: (api.min_version, api.max_version) for key, api in APIS.items()}


def test_metrics_count_traffic_per_topic(
    broker_factory: type[BrokerProcess], tmp_path: Path, topic_name: str
) -> None:
    broker = broker_factory(tmp_path / "data", "--metrics-port", "0").start()
    port = broker.metrics_port
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic_name, 1)
    client.produce(topic_name, [Sent(key=None, value=b"v" * 100) for _ in range(10)])
    client.consume(topic_name, 10)

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'agentlog_broker_records_in_total{{topic="{topic_name}"}} 10.0' in text
    assert f'agentlog_broker_records_out_total{{topic="{topic_name}"}}' in text
    assert f'agentlog_broker_log_end_offset{{partition="0",topic="{topic_name}"}} 10.0' in text
    assert 'agentlog_broker_request_seconds_count{api="ProduceRequest"}' in text


def test_sigterm_answers_waiting_fetches_and_closes_cleanly(
    broker_factory: type[BrokerProcess], tmp_path: Path, topic_name: str
) -> None:
    broker = broker_factory(tmp_path / "data").start()
    client = ConfluentClient(broker.bootstrap)
    client.create_topic(topic_name, 1)
    client.produce(topic_name, [Sent(key=None, value=b"kept")])
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"g-{topic_name}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 30_000,
        }
    )
    consumer.subscribe([topic_name])
    while consumer.poll(0.5) is None:
        pass
    polling = threading.Thread(target=consumer.poll, args=(2.0,))
    polling.start()  # the consumer now has a long-polling fetch open at the broker
    # A fixed wait for the fetch to reach the broker: nothing outside it shows an open one.
    time.sleep(0.5)

    started = time.monotonic()
    assert broker.stop() == 0
    assert time.monotonic() - started < 10, "a 30 s long poll held up shutdown"
    assert "broker stopped" in broker.logs()
    polling.join()

    broker.start()
    consumer.close()  # with the broker back, so the consumer can leave its group
    assert [r.value for r in client.consume(topic_name, 1)] == [b"kept"]
