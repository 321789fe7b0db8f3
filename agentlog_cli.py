"""The ``agentlog`` command: one entry point, one sub-command per process role."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import uvloop

from streams.logs import configure_logging


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

        uvicorn.run(
            create_app(settings),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_config=None,
        )
    elif args.command in ("projector", "worker"):
        role = "projector" if args.command == "projector" else args.role
        uvloop.run(_run_roles(settings, [role]))
    elif args.command == "tenants":
        key = uvloop.run(create_tenant(settings, args.name))
        print(key)
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


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _run_roles(settings: object, roles: list[str]) -> None:
    from workers.runner import run_roles

    await run_roles(settings, roles, _stop_event())  # type: ignore[arg-type]


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


async def create_tenant(settings: object, name: str) -> str:
    """Record a tenant and its first API key; return the key (shown once, stored hashed)."""
    from gateway.app import hash_key
    from projections.queries import ReadModel
    from schemas import events
    from schemas.envelope import envelope
    from streams.publisher import Publisher
    from streams.settings import Settings

    assert isinstance(settings, Settings)
    tenant_id = str(uuid.uuid4())
    key = f"al_{secrets.token_urlsafe(32)}"
    publisher = Publisher(settings.kafka_bootstrap_servers)
    await publisher.start()
    try:
        created = envelope(
            events.TenantCreated(tenant_id=tenant_id, display_name=name),
            source="/cli",
            tenant_id=tenant_id,
        )
        key_created = created.follow(
            events.ApiKeyCreated(
                tenant_id=tenant_id,
                key_id=str(uuid.uuid4()),
                key_prefix=key[:7],
                key_hash=hash_key(key),
            ),
            step="first-key",
            source="/cli",
        )
        await publisher.publish_all([created, key_created])
    finally:
        await publisher.stop()
    read = ReadModel(settings.database_url, settings.database_schema)
    deadline = time.monotonic() + 30
    try:
        while await read.tenant_for_key_hash(hash_key(key)) is None:
            if time.monotonic() > deadline:
                raise SystemExit("the projector did not record the key: is it running?")
            await asyncio.sleep(0.05)
    finally:
        await read.close()
    return key


def _up(settings: object, args: argparse.Namespace) -> None:
    from streams.settings import Settings

    assert isinstance(settings, Settings)
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
    try:
        uvloop.run(_serve_everything(settings, no_broker=args.no_broker))
    finally:
        if broker is not None:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)


async def _serve_everything(settings: object, *, no_broker: bool) -> None:
    import uvicorn

    from gateway.app import create_app
    from streams.settings import Settings
    from workers.runner import ROLES, prepare, run_roles

    assert isinstance(settings, Settings)
    await _wait_for_kafka(settings.kafka_bootstrap_servers)
    # The embedded broker started here is this platform's log: read models left from
    # another one (an earlier data directory) are folded again from it.
    await prepare(settings, reset_foreign=not no_broker)
    stop = _stop_event()
    roles = asyncio.create_task(run_roles(settings, list(ROLES), stop))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_config=None,
        )
    )
    serving = asyncio.create_task(server.serve())
    key = await create_tenant(settings, "local")
    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    print(
        f"agentlog is up\n  gateway  {url}  (API docs: {url}/docs)\n"
        f"  kafka    {settings.kafka_bootstrap_servers}\n  api key  {key}\n"
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
