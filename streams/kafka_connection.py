"""A fix to aiokafka's connections under uvloop (aiokafka issue #1038).

When the broker dies with requests unanswered, the peer's reset reaches uvloop, which
closes the transport before aiokafka's reader has noticed: the connection still says it
is connected, and the next ``send`` writes to a closed transport. The standard event loop
drops such a write; uvloop raises ``RuntimeError``, which ``send`` does not expect (it
catches ``OSError`` only). Raised inside the client's metadata task, it ends that task
for good, and every later metadata update then waits for ever: a consumer group member
looking for its coordinator never joins its group again (the role stops consuming with
no error; in 3 of 43 restarts of a broker under four worker processes).

``send`` is wrapped so that such a write fails as a broken connection does: the
connection is closed and ``KafkaConnectionError`` raised, which every caller retries.
Applied once, on import of ``streams``.
"""

from __future__ import annotations

from typing import Any

from aiokafka import conn
from aiokafka.errors import KafkaConnectionError

_send = conn.AIOKafkaConnection.send


def _send_or_break(
    self: conn.AIOKafkaConnection, request: Any, expect_response: bool = True
) -> Any:
    try:
        return _send(self, request, expect_response)
    except RuntimeError as exc:  # uvloop: the transport was closed under it
        self.close(reason=conn.CloseReason.CONNECTION_BROKEN, exc=exc)
        raise KafkaConnectionError(f"Connection at {self.host}:{self.port} broken: {exc}") from exc


def apply() -> None:
    if conn.AIOKafkaConnection.send is not _send_or_break:
        conn.AIOKafkaConnection.send = _send_or_break
