"""``agentlog up``: the whole platform in one process beside an embedded broker, for local
use. Each role can also run as its own process (``agentlog worker …``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import uvloop

from gateway.app import create_app
from gateway.server import EmbeddedServer, listen, server_config, url_of
from streams.settings import Settings
from workers.runner import ROLES, prepare, run_roles

from .signals import CHILDREN, stop_event
from .tenants import create_tenant

# Tools `agentlog up` may reach when AGENTLOG_TOOL_ALLOWED_NETWORKS is unset: local ones.
LOCAL_TOOL_NETWORKS = "127.0.0.0/8,::1/128"


def up(settings: Settings, args: argparse.Namespace) -> None:
    local_tools = "AGENTLOG_TOOL_ALLOWED_NETWORKS" not in os.environ
    if local_tools:
        settings = settings.model_copy(update={"tool_allowed_networks": LOCAL_TOOL_NETWORKS})
    broker = None
    if not args.no_broker:
        host, port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
        broker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.broker",
                "--host",
                host,
                "--port",
                port,
                "--data-dir",
                str(args.data_dir),
                "--default-partitions",
                str(settings.topic_partitions),
            ]
        )
        CHILDREN.append(broker)
    try:
        uvloop.run(_serve_everything(settings, no_broker=args.no_broker, local_tools=local_tools))
    finally:
        if broker is not None:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)


async def _serve_everything(settings: Settings, *, no_broker: bool, local_tools: bool) -> None:
    await _wait_for_kafka(settings.kafka_bootstrap_servers)
    # The embedded broker started here is this platform's log: read models left from
    # another one (an earlier data directory) are folded again from it.
    await prepare(settings, reset_foreign=not no_broker)
    stop = stop_event(settings.shutdown_timeout_s)
    roles = asyncio.create_task(run_roles(settings, list(ROLES), stop))
    sock = listen(settings)
    server = EmbeddedServer(server_config(create_app(settings), settings))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    key = await create_tenant(settings, "local")
    url = url_of(sock)
    tools = (
        f"  tools    may call loopback (AGENTLOG_TOOL_ALLOWED_NETWORKS={LOCAL_TOOL_NETWORKS})\n"
        if local_tools
        else ""
    )
    print(
        f"agentlog is up\n  gateway  {url}  (API docs: {url}/docs)\n"
        f"  kafka    {settings.kafka_bootstrap_servers}\n{tools}  api key  {key}\n"
        "press Ctrl-C to stop",
        flush=True,
    )
    await stop.wait()
    server.should_exit = True
    await asyncio.gather(serving, roles, return_exceptions=True)


async def _wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"no Kafka at {bootstrap}") from None
            await asyncio.sleep(0.1)
