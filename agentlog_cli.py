"""The ``agentlog`` command: one entry point, one sub-command per process role."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

from streams.logs import configure_logging

if TYPE_CHECKING:
    from schemas.envelope import Envelope
    from streams.settings import Settings

# Tools `agentlog up` may reach when AGENTLOG_TOOL_ALLOWED_NETWORKS is unset: local ones.
LOCAL_TOOL_NETWORKS = "127.0.0.0/8,::1/128"


def _add_broker_options(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--host", default=env("AGENTLOG_BROKER_HOST", "127.0.0.1"))
    p.add_argument(
        "--port",
        type=int,
        default=int(env("AGENTLOG_BROKER_PORT", "9092")),
        help="port to listen on (0 = any free port)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=Path(env("AGENTLOG_BROKER_DATA_DIR", ".agentlog/broker"))
    )
    p.add_argument("--advertised-host", help="host clients are told to connect to")
    p.add_argument(
        "--fsync",
        choices=("always", "interval"),
        default=env("AGENTLOG_BROKER_FSYNC", "interval"),
        help="always: fsync before acknowledging; interval: every --fsync-interval-ms",
    )
    p.add_argument("--fsync-interval-ms", type=int, default=1000)
    p.add_argument("--max-request-bytes", type=int, default=100 * 1024 * 1024)
    p.add_argument("--default-partitions", type=int, default=1)
    p.add_argument(
        "--no-auto-create-topics",
        dest="auto_create_topics",
        action="store_false",
        help="do not create unknown topics on metadata requests",
    )
    p.add_argument("--retention-check-interval-ms", type=int, default=5000)
    p.add_argument("--group-initial-rebalance-delay-ms", type=int, default=0)
    p.add_argument("--group-min-session-timeout-ms", type=int, default=6000)
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentlog", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("AGENTLOG_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    _add_broker_options(sub.add_parser("broker", help="run the embedded Kafka-protocol broker"))
    up = sub.add_parser("up", help="run the whole platform on local defaults")
    up.add_argument(
        "--no-broker",
        action="store_true",
        help="use the Kafka at AGENTLOG_KAFKA_BOOTSTRAP_SERVERS instead",
    )
    up.add_argument("--data-dir", type=Path, default=Path(".agentlog/broker"))
    migrate = sub.add_parser("migrate", help="create topics and migrate the read-model schema")
    migrate.add_argument(
        "--reset",
        action="store_true",
        help="drop read models folded from another Kafka cluster or topic prefix",
    )
    model_server = sub.add_parser(
        "model-server",
        help="serve the dev model over the OpenAI and Anthropic protocols (for offline use)",
    )
    model_server.add_argument("--host", default="127.0.0.1")
    model_server.add_argument("--port", type=int, default=8400)
    sub.add_parser("gateway", help="run the HTTP gateway")
    sub.add_parser("projector", help="run the projector")
    worker = sub.add_parser("worker", help="run one worker role")
    worker.add_argument("role", choices=("commands", "orchestrator", "model", "tool"))
    tenants = sub.add_parser("tenants", help="manage tenants")
    tenants_sub = tenants.add_subparsers(dest="action", required=True)
    create = tenants_sub.add_parser("create", help="create a tenant and print its first API key")
    create.add_argument("name")
    keys = tenants_sub.add_parser("keys", help="list, create or revoke a tenant's API keys")
    keys_sub = keys.add_subparsers(dest="keys_action", required=True)
    for action, what in (
        ("list", "list the tenant's keys"),
        ("create", "create a key and print it (shown once)"),
        ("revoke", "revoke a key: no gateway accepts it once this returns"),
    ):
        parser_ = keys_sub.add_parser(action, help=what)
        parser_.add_argument("tenant", help="the tenant's id")
        if action == "revoke":
            parser_.add_argument("key_id")
    secrets_cmd = sub.add_parser("secrets", help="manage the key that seals tool secrets")
    secrets_sub = secrets_cmd.add_subparsers(dest="action", required=True)
    secrets_sub.add_parser(
        "rotate", help="seal every tool secret again under the first AGENTLOG_SECRETS_KEY"
    )
    projections = sub.add_parser("projections", help="manage projections")
    projections_sub = projections.add_subparsers(dest="action", required=True)
    rebuild = projections_sub.add_parser("rebuild", help="rebuild a projection from offset 0")
    rebuild.add_argument("name", choices=("core",))
    rebuild.add_argument("--no-swap", action="store_true", help="build and verify only")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "broker":
        _run_broker(args)
        return
    from streams.settings import Settings

    settings = Settings()
    if args.command == "up":
        _up(settings, args)
    elif args.command == "migrate":
        from workers.runner import prepare

        uvloop.run(prepare(settings, reset_foreign=args.reset))
    elif args.command == "model-server":
        from workers.providers.protocol_server import ModelServer

        server = ModelServer(args.host, args.port)
        print(f"model server on {server.url} (OpenAI: {server.url}/v1)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    elif args.command == "gateway":
        import uvicorn

        from gateway.app import create_app
        from gateway.server import server_config

        uvicorn.Server(server_config(create_app(settings), settings)).run()
    elif args.command in ("projector", "worker"):
        role = "projector" if args.command == "projector" else args.role
        uvloop.run(_run_roles(settings, [role]))
    elif args.command == "tenants" and args.action == "keys":
        uvloop.run(_keys_command(settings, args))
    elif args.command == "tenants":
        print(uvloop.run(create_tenant(settings, args.name)))
    elif args.command == "secrets":
        print(f"sealed again: {uvloop.run(_rotate_secrets(settings))} tools")
    elif args.command == "projections":
        from projections.rebuild import rebuild

        uvloop.run(rebuild(settings, swap=not args.no_swap))


def _run_broker(args: argparse.Namespace) -> None:
    from streams.broker import BrokerConfig
    from streams.broker.runner import serve

    config = BrokerConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        advertised_host=args.advertised_host,
        fsync=args.fsync,
        fsync_interval_ms=args.fsync_interval_ms,
        max_request_bytes=args.max_request_bytes,
        auto_create_topics=args.auto_create_topics,
        default_partitions=args.default_partitions,
        retention_check_interval_ms=args.retention_check_interval_ms,
        group_initial_rebalance_delay_ms=args.group_initial_rebalance_delay_ms,
        group_min_session_timeout_ms=args.group_min_session_timeout_ms,
    )
    uvloop.run(serve(config, args.metrics_port))


def _stop_event(shutdown_timeout_s: float) -> asyncio.Event:
    """Set on SIGTERM or SIGINT. Shutdown then has ``shutdown_timeout_s`` to finish
    (consumers commit, producers flush): past it, or on a second signal, the process
    exits anyway, whether or not Kafka and Postgres still answer."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            _exit_now("a second signal")
        stop.set()
        loop.call_later(shutdown_timeout_s, _exit_now, f"{shutdown_timeout_s:g} s")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return stop


# Child processes (the embedded broker under `agentlog up`): asked to stop even when
# shutdown is cut short, so none outlives this process.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _exit_now(why: str) -> None:
    logging.getLogger("agentlog").error("shutdown did not finish: exiting after %s", why)
    logging.shutdown()
    for child in _CHILDREN:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    os._exit(1)


async def _run_roles(settings: Settings, roles: list[str]) -> None:
    from workers.runner import run_roles

    await run_roles(settings, roles, _stop_event(settings.shutdown_timeout_s))


async def _rotate_secrets(settings: object) -> int:
    from projections.secrets import SecretStore
    from streams.settings import Settings

    assert isinstance(settings, Settings)
    store = SecretStore.from_settings(settings)
    try:
        await store.ensure()
        return await store.rotate()
    finally:
        await store.close()


async def create_tenant(settings: Settings, name: str) -> str:
    """Record a tenant and its first API key; return the key (shown once, stored hashed)."""
    from schemas import events
    from schemas.envelope import envelope

    tenant_id = str(uuid.uuid4())
    created = envelope(
        events.TenantCreated(tenant_id=tenant_id, display_name=name),
        source="/cli",
        tenant_id=tenant_id,
    )
    return await _issue_key(settings, tenant_id, created)


async def _issue_key(settings: Settings, tenant_id: str, *before: Envelope[Any]) -> str:
    """Record a new key of the tenant (after the envelopes ``before``) and wait until the
    projection has it: the key works when this returns."""
    from gateway.keys import issue_key
    from schemas.envelope import envelope

    key, fact = issue_key(tenant_id)
    issued = (
        before[-1].follow(fact, step="first-key", source="/cli")
        if before
        else envelope(fact, source="/cli", tenant_id=tenant_id)
    )
    await _record_key_change(settings, [*before, issued], tenant_id, fact.key_id, revoked=False)
    return key


async def _record_key_change(
    settings: Settings, envs: list[Envelope[Any]], tenant_id: str, key_id: str, *, revoked: bool
) -> dict[str, Any]:
    """Publish ``envs``, then wait until the projection shows the key (revoked, if so)."""
    from projections.changes import Changes
    from projections.queries import ReadModel
    from streams.publisher import Publisher

    publisher = Publisher(settings.kafka_bootstrap_servers)
    await publisher.start()
    try:
        await publisher.publish_all(envs)
    finally:
        await publisher.stop()
    read = ReadModel(settings.database_url, settings.database_schema)
    changes = Changes(settings.database_url, settings.database_schema)
    changes.start()

    async def applied() -> dict[str, Any] | None:
        row = await read.api_key(tenant_id, key_id)
        return row if row is not None and (row["revoked_at"] is not None) == revoked else None

    try:
        row = await changes.wait_for(f"key:{key_id}", applied, 30)
    finally:
        await changes.close()
        await read.close()
    if row is None:
        raise SystemExit("the projector did not apply it: is it running?")
    return row


async def _keys_command(settings: Settings, args: argparse.Namespace) -> None:
    from projections.queries import ReadModel
    from schemas import events
    from schemas.envelope import envelope

    if args.keys_action == "create":
        print(await _issue_key(settings, args.tenant))
        return
    if args.keys_action == "revoke":
        revoked = envelope(
            events.ApiKeyRevoked(tenant_id=args.tenant, key_id=args.key_id),
            source="/cli",
            tenant_id=args.tenant,
        )
        row = await _record_key_change(settings, [revoked], args.tenant, args.key_id, revoked=True)
        print(f"{args.key_id} revoked at {row['revoked_at']}")
        return
    read = ReadModel(settings.database_url, settings.database_schema)
    try:
        for row in await read.api_keys(args.tenant):
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
            print(f"{row['key_id']}  {row['key_prefix']}…  {row['created_at']}  {state}")
    finally:
        await read.close()


def _up(settings: object, args: argparse.Namespace) -> None:
    from streams.settings import Settings

    assert isinstance(settings, Settings)
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
        _CHILDREN.append(broker)
    try:
        uvloop.run(_serve_everything(settings, no_broker=args.no_broker, local_tools=local_tools))
    finally:
        if broker is not None:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)


async def _serve_everything(settings: object, *, no_broker: bool, local_tools: bool) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.server import server_config
    from streams.settings import Settings
    from workers.runner import ROLES, prepare, run_roles

    assert isinstance(settings, Settings)
    await _wait_for_kafka(settings.kafka_bootstrap_servers)
    # The embedded broker started here is this platform's log: read models left from
    # another one (an earlier data directory) are folded again from it.
    await prepare(settings, reset_foreign=not no_broker)
    stop = _stop_event(settings.shutdown_timeout_s)
    roles = asyncio.create_task(run_roles(settings, list(ROLES), stop))
    server = uvicorn.Server(server_config(create_app(settings), settings))
    serving = asyncio.create_task(server.serve())
    key = await create_tenant(settings, "local")
    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
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


if __name__ == "__main__":
    main()
