"""The consumer runtime's Prometheus metrics, and the HTTP port every worker role serves
them on with its probes.

A role process (``agentlog worker <role>``, ``agentlog projector``, ``faststream run``)
serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``AGENTLOG_METRICS_HOST`` and
``AGENTLOG_METRICS_PORT``; ``agentlog up`` runs every role beside the gateway, whose
``/metrics`` then shows them all (one registry per process).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

RECORDS_HANDLED = Counter(
    "agentlog_records_handled", "Records handed to a role's handler", ["role", "topic"]
)
RECORDS_DEAD_LETTERED = Counter(
    "agentlog_records_dead_lettered",
    "Records sent to the dead-letter topic: unreadable, or failed by the handler",
    ["role", "topic", "reason"],
)
HANDLER_SECONDS = Histogram(
    "agentlog_handler_seconds",
    "Time to handle a batch and publish what it caused",
    ["role"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge(
    "agentlog_consumer_lag",
    "Records of a partition not yet handed to its consumer: log end minus position",
    ["role", "group", "topic", "partition"],
)


class ConsumerLag:
    """``CONSUMER_LAG`` of one consumer: each assigned partition's log end (as last
    fetched) minus the consumer's position. A partition given away drops its series."""

    def __init__(self, role: str, group: str) -> None:
        self.role = role
        self.group = group
        self._series: set[tuple[str, str, str, str]] = set()

    async def measure(self, consumer: AIOKafkaConsumer) -> None:
        series: set[tuple[str, str, str, str]] = set()
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue  # nothing fetched yet
            try:
                async with asyncio.timeout(1):
                    position = await consumer.position(tp)
            except (KafkaError, TimeoutError, AssertionError):
                continue  # unassigned meanwhile, or no position yet
            labels = (self.role, self.group, tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(max(0, end - position))
            series.add(labels)
        for gone in self._series - series:
            CONSUMER_LAG.remove(*gone)
        self._series = series


Probe = Callable[[], Awaitable[None]]


class ProbeServer:
    """``/metrics``, ``/healthz`` (the event loop answers) and ``/readyz`` (``ready``
    returns within 2 s) on a port of their own: a plain ASGI app under uvicorn, in the
    role's event loop."""

    def __init__(self, host: str, port: int, ready: Probe) -> None:
        self._ready = ready
        self._sock = socket.create_server((host, port))
        self._sock.setblocking(False)
        bound = self._sock.getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        config = uvicorn.Config(
            self._app, interface="asgi3", log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._serving = asyncio.create_task(
            self._server.serve(sockets=[self._sock]), name="probe-server"
        )

    async def stop(self) -> None:
        if self._serving is not None:
            self._server.should_exit = True
            await asyncio.gather(self._serving, return_exceptions=True)
        self._sock.close()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            status, body, kind = 200, generate_latest(), CONTENT_TYPE_LATEST
        elif path == "/healthz":
            status, body, kind = 200, b'{"status":"ok"}', "application/json"
        elif path == "/readyz":
            status, body, kind = await self._readiness()
        else:
            status, body, kind = 404, b'{"status":"not found"}', "application/json"
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _readiness(self) -> tuple[int, bytes, str]:
        try:
            async with asyncio.timeout(2):
                await self._ready()
        except Exception as exc:
            log.warning("not ready", extra={"error": repr(exc)})
            return 503, b'{"status":"not ready"}', "application/json"
        return 200, b'{"status":"ready"}', "application/json"
