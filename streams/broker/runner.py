"""Run the broker as a process until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import CollectorRegistry, start_http_server

from .server import Broker, BrokerConfig

log = logging.getLogger(__name__)


async def serve(
    config: BrokerConfig, metrics_port: int | None = None, *, announce: bool = False
) -> None:
    registry = CollectorRegistry()
    broker = Broker(config, registry)
    if metrics_port is not None:  # before the broker: "broker started" means all is up
        metrics, _thread = start_http_server(metrics_port, addr=config.host, registry=registry)
        log.info("metrics served", extra={"port": metrics.server_port})
    await broker.start()
    if announce:
        print(f"agentlog is up: Kafka bootstrap servers {config.host}:{broker.port}", flush=True)
        print("press Ctrl-C to stop", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()
