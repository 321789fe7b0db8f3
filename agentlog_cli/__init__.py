"""The ``agentlog`` command: one entry point, one sub-command per process role."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from streams.broker.cli import add_broker_options
from streams.broker.cli import run as run_broker
from streams.logs import configure_logging

if TYPE_CHECKING:
    from streams.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentlog", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("AGENTLOG_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    add_broker_options(sub.add_parser("broker", help="run the embedded Kafka-protocol broker"))
    _add_local_options(sub.add_parser("up", help="run the whole platform on local defaults"))
    services = sub.add_parser("services", help="local services for separate role processes")
    services_sub = services.add_subparsers(dest="action", required=True)
    _add_local_options(
        services_sub.add_parser(
            "up", help="run the embedded broker, Postgres and Redis, and print their URLs"
        )
    )
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
    worker.add_argument(
        "role", choices=("commands", "orchestrator", "model", "tool", "billing", "invoicer")
    )
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
    rebuild.add_argument("name", choices=("core", "billing"))
    rebuild.add_argument("--no-swap", action="store_true", help="build and verify only")
    rebuild.add_argument(
        "--changed",
        default="",
        metavar="TABLE,…",
        help="tables a changed fold writes otherwise: they may differ from the live ones",
    )
    operators = sub.add_parser("operators", help="manage the platform's operators")
    operators_sub = operators.add_subparsers(dest="action", required=True)
    operator = operators_sub.add_parser("create", help="create an operator and print its key")
    operator.add_argument("name")
    billing = sub.add_parser("billing", help="billing: verify drafts")
    billing_sub = billing.add_subparsers(dest="action", required=True)
    verify = billing_sub.add_parser(
        "verify", help="compute an invoice draft again from the topics and compare"
    )
    verify.add_argument("invoice_id")
    verify.add_argument("--revision", type=int, help="default: the latest")
    replay = sub.add_parser("replay", help="replay topics into read models beside the live ones")
    replay.add_argument("name", choices=("billing",))
    replay.add_argument("--swap", action="store_true", help="swap the replayed tables in")
    replay.add_argument("--plan", type=Path, help="price past usage under this plan (JSON)")
    replay.add_argument("--period", help="YYYY-MM, with --plan (default: this month)")
    replay.add_argument("--json", action="store_true", help="with --plan: print JSON")
    return parser


def _add_local_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-broker",
        action="store_true",
        help="use the Kafka at AGENTLOG_KAFKA_BOOTSTRAP_SERVERS instead",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".agentlog/broker"), help="the broker's data"
    )


# The long-running processes, by command, as tracing names them (``service.name``).
_SERVICES = {
    "up": "agentlog",
    "gateway": "agentlog-gateway",
    "projector": "agentlog-projector",
    "worker": "agentlog-{role}",
}
# Commands that start the services they need, or need none.
_STARTING_SERVICES = ("up", "services", "model-server")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "broker":
        run_broker(args)
        return
    from streams.settings import Settings

    settings = Settings()
    service = _SERVICES.get(args.command)
    if service is not None:
        from streams import tracing

        tracing.configure(service.format(role=getattr(args, "role", "")))
    if args.command not in _STARTING_SERVICES:
        from streams.embedded import ServiceUnavailable, resolve

        try:
            settings = resolve(settings, start=False).settings
        except ServiceUnavailable as exc:
            raise SystemExit(f"agentlog: {exc}") from None
    if args.command == "up":
        from .up import up

        up(settings, args)
    elif args.command == "services":
        from .up import services_up

        services_up(settings, args)
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
        from gateway.server import listen, server_config, url_of

        sock = listen(settings)
        print(f"gateway {url_of(sock)}", flush=True)
        uvicorn.Server(server_config(create_app(settings), settings)).run(sockets=[sock])
    elif args.command in ("projector", "worker"):
        role = "projector" if args.command == "projector" else args.role
        uvloop.run(_run_roles(settings, [role]))
    elif args.command == "tenants" and args.action == "keys":
        from .tenants import keys_command

        uvloop.run(keys_command(settings, args))
    elif args.command == "tenants":
        from .tenants import create_tenant

        print(uvloop.run(create_tenant(settings, args.name)))
    elif args.command == "secrets":
        print(f"sealed again: {uvloop.run(_rotate_secrets(settings))} tools")
    elif args.command == "projections":
        from projections.rebuild import BILLING_MODELS, CORE, rebuild

        models = BILLING_MODELS if args.name == "billing" else CORE
        changed = frozenset(t for t in args.changed.split(",") if t)
        uvloop.run(rebuild(settings, swap=not args.no_swap, models=models, changed=changed))
    elif args.command == "operators":
        from .operators import create_operator

        print(uvloop.run(create_operator(settings, args.name)))
    elif args.command == "billing":
        from .billing import verify_command

        raise SystemExit(uvloop.run(verify_command(settings, args)))
    elif args.command == "replay":
        from .billing import replay_command

        args.period = args.period or datetime.datetime.now(datetime.UTC).strftime("%Y-%m")
        raise SystemExit(uvloop.run(replay_command(settings, args)))


async def _run_roles(settings: Settings, roles: list[str]) -> None:
    from workers.runner import run_roles

    from .signals import stop_event

    await run_roles(settings, roles, stop_event(settings.shutdown_timeout_s))


async def _rotate_secrets(settings: Settings) -> int:
    from projections.secrets import SecretStore

    store = SecretStore.from_settings(settings)
    try:
        await store.ensure()
        return await store.rotate()
    finally:
        await store.close()
