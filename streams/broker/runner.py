"""Run the broker as a process until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import CollectorRegistry, start_http_server

from .server import Broker, BrokerConfig


async def serve(
    config: BrokerConfig, metrics_port: int | None = None, *, announce: bool = False
) -> None:
    registry = CollectorRegistry()
    broker = Broker(config, registry)
    await broker.start()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=config.host, registry=registry)
    if announce:
        print(f"agentlog is up: Kafka bootstrap servers {config.host}:{broker.port}", flush=True)
        print("press Ctrl-C to stop", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()
