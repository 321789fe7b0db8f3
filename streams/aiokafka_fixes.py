"""Two fixes to aiokafka, applied once on import of ``streams``. Remove each once
aiokafka has its own.

**A write to a transport uvloop closed** (aiokafka issue #1038). When the broker dies
with requests unanswered, the peer's reset reaches uvloop, which closes the transport
before aiokafka's reader has noticed: the connection still says it is connected, and the
next ``send`` writes to a closed transport. The standard event loop drops such a write;
uvloop raises ``RuntimeError``, which ``send`` does not expect (it catches ``OSError``
only). Raised inside the client's metadata task, it ends that task for good, and every
later metadata update then waits for ever: a consumer group member looking for its
coordinator never joins its group again (the role stops consuming with no error; in 3
of 43 restarts of a broker under four worker processes). ``send`` is wrapped so that
such a write fails as a broken connection does: the connection is closed and
``KafkaConnectionError`` raised, which every caller retries.

**A consumer stopped while a fetch backs off.** ``Fetcher.close`` cancels each pending
fetch and awaits it; a fetch that failed (the broker is down) sleeps its back-off outside
the ``except CancelledError`` that would end it quietly, so the ``CancelledError`` leaves
``close``, and ``AIOKafkaConsumer.stop`` with it, in a task nobody cancelled: the stop
never closes the client, and the caller (a decider reloading its state while the broker
was down) dies of a cancellation. ``close`` is wrapped: such a ``CancelledError``, when
the task running it is not itself being cancelled, ends the remaining fetches and the
close carries on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import conn
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import KafkaConnectionError

_send = conn.AIOKafkaConnection.send
_close = Fetcher.close


def _send_or_break(
    self: conn.AIOKafkaConnection, request: Any, expect_response: bool = True
) -> Any:
    try:
        return _send(self, request, expect_response)
    except RuntimeError as exc:  # uvloop: the transport was closed under it
        self.close(reason=conn.CloseReason.CONNECTION_BROKEN, exc=exc)
        raise KafkaConnectionError(f"Connection at {self.host}:{self.port} broken: {exc}") from exc


async def _close_despite_backoff(self: Fetcher) -> None:
    fetches = list(self._pending_tasks)
    try:
        await _close(self)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller is being cancelled: so is its close
        for fetch in fetches:  # the one awaited ended; end the others
            fetch.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)


def apply() -> None:
    if conn.AIOKafkaConnection.send is not _send_or_break:
        conn.AIOKafkaConnection.send = _send_or_break
    if Fetcher.close is not _close_despite_backoff:
        Fetcher.close = _close_despite_backoff
