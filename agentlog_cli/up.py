"""``agentlog up``: the whole platform in one process beside an embedded broker (and, where
this machine has none, embedded Postgres and Redis), for local use. Each role can also run
as its own process (``agentlog worker …``) beside ``agentlog services up``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator

import uvloop

from gateway.app import create_app
from gateway.server import EmbeddedServer, listen, server_config, url_of
from streams.embedded import LocalServices, ServiceUnavailable, resolve
from streams.settings import Settings
from workers.runner import ROLES, prepare, run_roles

from .broker_child import BrokerChild
from .signals import begin_shutdown, stop_event
from .tenants import create_tenant

# Tools `agentlog up` may reach when AGENTLOG_TOOL_ALLOWED_NETWORKS is unset: local ones.
LOCAL_TOOL_NETWORKS = "127.0.0.0/8,::1/128"


def up(settings: Settings, args: argparse.Namespace) -> None:
    local_tools = "AGENTLOG_TOOL_ALLOWED_NETWORKS" not in os.environ
    if local_tools:
        settings = settings.model_copy(update={"tool_allowed_networks": LOCAL_TOOL_NETWORKS})
    with local_services(settings, args) as (services, kafka, broker):
        uvloop.run(
            _serve_everything(
                services.settings,
                [kafka, *services.lines],
                broker,
                local_tools=local_tools,
            )
        )


def services_up(settings: Settings, args: argparse.Namespace) -> None:
    """The broker, Postgres and Redis for a development cluster of separate role
    processes; their URLs are printed for the roles' environment."""
    with local_services(settings, args) as (services, kafka, broker):
        resolved = services.settings
        exports = {
            "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": resolved.kafka_bootstrap_servers,
            "AGENTLOG_DATABASE_URL": resolved.database_url,
            "AGENTLOG_REDIS_URL": resolved.redis_url,
        }
        lines = "\n".join(f"  {line}" for line in [kafka, *services.lines])
        environment = "\n".join(f"export {name}={value}" for name, value in exports.items())
        uvloop.run(
            _serve_services(
                resolved,
                broker,
                f"agentlog services are up\n{lines}\nfor the roles' environment:\n"
                f"{environment}\npress Ctrl-C to stop",
            )
        )


@contextlib.contextmanager
def local_services(
    settings: Settings, args: argparse.Namespace
) -> Iterator[tuple[LocalServices, str, BrokerChild | None]]:
    """The embedded broker (unless ``--no-broker``), Postgres and Redis as this process's
    children, stopped when the block ends; with a line that says where Kafka is."""
    broker = None
    services: LocalServices | None = None
    kafka = f"{'kafka':<10}{settings.kafka_bootstrap_servers}"
    try:
        if not args.no_broker:
            broker = BrokerChild(settings, args.data_dir)
            kafka += f"  (embedded broker, data in {args.data_dir})"
        services = resolve(settings, start=True)
        yield services, kafka, broker
    except ServiceUnavailable as exc:
        raise SystemExit(f"agentlog: {exc}") from None
    finally:
        if broker is not None:
            broker.stop()
        if services is not None:
            services.stop()


@contextlib.asynccontextmanager
async def _stopping(settings: Settings, broker: BrokerChild | None) -> AsyncIterator[asyncio.Event]:
    """The event that stops this process: a signal, or the embedded broker dying too
    often in a row, which exits with status 1 once everything has stopped."""
    stop = stop_event(settings.shutdown_timeout_s)
    if broker is None:
        yield stop
        return

    async def supervise() -> bool:
        kept = await broker.watch(stop)
        if not kept:
            begin_shutdown(stop, settings.shutdown_timeout_s)
        return kept

    watching = asyncio.create_task(supervise())
    try:
        yield stop
    except BaseException:
        watching.cancel()
        raise
    if not await watching:
        raise SystemExit(1)


async def _serve_everything(
    settings: Settings, services: list[str], broker: BrokerChild | None, *, local_tools: bool
) -> None:
    await _wait_for_kafka(settings.kafka_bootstrap_servers)
    # The embedded broker started here is this platform's log: read models left from
    # another one (an earlier data directory) are folded again from it.
    await prepare(settings, reset_foreign=broker is not None)
    async with _stopping(settings, broker) as stop:
        await _serve_until(settings, services, stop, local_tools=local_tools)


async def _serve_until(
    settings: Settings, services: list[str], stop: asyncio.Event, *, local_tools: bool
) -> None:
    roles = asyncio.create_task(run_roles(settings, list(ROLES), stop, probes=False))
    sock = listen(settings)
    server = EmbeddedServer(server_config(create_app(settings), settings))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    key = await create_tenant(settings, "local")
    url = url_of(sock)
    tools = (
        f"  tools     may call loopback (AGENTLOG_TOOL_ALLOWED_NETWORKS={LOCAL_TOOL_NETWORKS})\n"
        if local_tools
        else ""
    )
    lines = "".join(f"  {line}\n" for line in services)
    print(
        f"agentlog is up\n  gateway   {url}  (API docs: {url}/docs)\n"
        f"{lines}{tools}  api key   {key}\n"
        "press Ctrl-C to stop",
        flush=True,
    )
    await stop.wait()
    server.should_exit = True
    await asyncio.gather(serving, roles, return_exceptions=True)


async def _serve_services(
    settings: Settings, broker: BrokerChild | None, announcement: str
) -> None:
    await _wait_for_kafka(settings.kafka_bootstrap_servers)
    async with _stopping(settings, broker) as stop:
        print(announcement, flush=True)
        await stop.wait()


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
