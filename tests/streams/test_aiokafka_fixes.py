"""aiokafka as the roles run it, with the fixes of ``streams.aiokafka_fixes``: a
connection whose transport uvloop closed fails as a broken connection, and a consumer
stopped while a fetch backs off after a failure stops instead of raising
``CancelledError``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient

import streams  # noqa: F401  (applies the fixes, as every role's import of streams does)
from tests.kafka import BrokerProcess
from tests.streams.clients import ConfluentClient


async def closed_under_it(bootstrap: str) -> tuple[bool, bool, bool]:
    """Whether the connection still said it was connected once its transport was
    closed, whether the metadata update then answered (True or False) instead of
    raising, and whether the metadata task is still running."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = client.cluster.brokers().pop().nodeId
        conn = await client._get_conn(node)
        assert conn is not None
        conn._writer.transport._force_close(ConnectionResetError(104, "reset by the peer"))
        await asyncio.sleep(0)  # the loss is delivered; aiokafka's reader has not run
        connected = conn.connected()
        answered = isinstance(await client._metadata_update(client.cluster, []), bool)
        return connected, answered, not client._sync_task.done()
    finally:
        await client.close()


def test_a_write_to_a_transport_uvloop_closed_breaks_the_connection(bootstrap: str) -> None:
    connected, answered, syncing = uvloop.run(closed_under_it(bootstrap))

    assert connected  # the window the fix is for: aiokafka has not seen the loss yet
    assert answered
    assert syncing


async def stopped_while_backing_off(broker: BrokerProcess, topic: str) -> tuple[int, bool]:
    """How many fetches were pending when the consumer was stopped with the broker
    down, and whether the stop went on to close its client (its metadata task ended)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, retry_backoff_ms=60_000
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    await consumer.getmany(timeout_ms=500)
    broker.kill()
    await asyncio.sleep(1.0)  # the fetch in flight fails, and sleeps its minute of back-off
    pending = len(consumer._fetcher._pending_tasks)
    await asyncio.wait_for(consumer.stop(), 30)
    return pending, consumer._client._sync_task is None


@pytest.mark.broker_internal
def test_a_consumer_stopped_while_a_fetch_backs_off_stops(
    broker_factory: type[BrokerProcess], tmp_path: Path, topic_name: str
) -> None:
    broker = broker_factory(tmp_path / "kafka").start()
    ConfluentClient(broker.bootstrap).create_topic(topic_name, 1)

    started = time.monotonic()
    pending, closed = uvloop.run(stopped_while_backing_off(broker, topic_name))

    assert pending  # the window the fix is for: a fetch in its back-off
    assert closed
    assert time.monotonic() - started < 30  # it did not wait the back-off out
