"""aiokafka under uvloop, as the roles run: a connection whose transport the event loop
closed (the broker reset it) fails as a broken connection, so the client's metadata
task carries on instead of ending for good."""

from __future__ import annotations

import asyncio

import uvloop
from aiokafka.client import AIOKafkaClient

import streams  # noqa: F401  (applies the fix, as every role's import of streams does)


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
