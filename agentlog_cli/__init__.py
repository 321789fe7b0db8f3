"""The ``agentlog`` command: one entry point, one sub-command per process role."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from streams.broker.cli import add_broker_options
from streams.broker.cli import run as run_broker
from streams.logs import configure_logging

if TYPE_CHECKING:
    from streams.settings import Settings


# A sub-command's work: ``run(settings, args)``, run once the settings are resolved.
Run = Callable[["Settings", argparse.Namespace], None]


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    run: Run,
    *,
    service: str | None = None,
    starts_services: bool = False,
) -> argparse.ArgumentParser:
    """A sub-command that ``run`` carries out. ``service`` names a long-running process
    for tracing (``service.name``); ``starts_services``: it starts the local services it
    needs, or needs none, so they are not looked for before it runs."""
    parser = sub.add_parser(name, help=summary)
    parser.set_defaults(run=run, service=service, starts_services=starts_services)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentlog", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("AGENTLOG_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    # Run by ``main`` itself, before any settings are read: the broker reads none.
    add_broker_options(sub.add_parser("broker", help="run the embedded Kafka-protocol broker"))
    _add_local_options(
        _command(
            sub,
            "up",
            "run the whole platform on local defaults",
            _up,
            service="agentlog",
            starts_services=True,
        )
    )
    services = sub.add_parser("services", help="local services for separate role processes")
    services_sub = services.add_subparsers(dest="action", required=True)
    _add_local_options(
        _command(
            services_sub,
            "up",
            "run the embedded broker, Postgres and Redis, and print their URLs",
            _services_up,
            starts_services=True,
        )
    )
    migrate = _command(sub, "migrate", "create topics and migrate the read-model schema", _migrate)
    migrate.add_argument(
        "--reset",
        action="store_true",
        help="drop read models folded from another Kafka cluster or topic prefix",
    )
    model_server = _command(
        sub,
        "model-server",
        "serve the dev model over the OpenAI and Anthropic protocols (for offline use)",
        _model_server,
        starts_services=True,
    )
    model_server.add_argument("--host", default="127.0.0.1")
    model_server.add_argument("--port", type=int, default=8400)
    _command(sub, "gateway", "run the HTTP gateway", _gateway, service="agentlog-gateway")
    _command(sub, "projector", "run the projector", _roles, service="agentlog-projector")
    worker = _command(sub, "worker", "run one worker role", _roles, service="agentlog-{role}")
    worker.add_argument(
        "role", choices=("commands", "orchestrator", "model", "tool", "billing", "invoicer")
    )
    tenants = sub.add_parser("tenants", help="manage tenants")
    tenants_sub = tenants.add_subparsers(dest="action", required=True)
    create = _command(
        tenants_sub, "create", "create a tenant and print its first API key", _create_tenant
    )
    create.add_argument("name")
    keys = tenants_sub.add_parser("keys", help="list, create or revoke a tenant's API keys")
    keys_sub = keys.add_subparsers(dest="keys_action", required=True)
    for action, what in (
        ("list", "list the tenant's keys"),
        ("create", "create a key and print it (shown once)"),
        ("revoke", "revoke a key: no gateway accepts it once this returns"),
    ):
        parser_ = _command(keys_sub, action, what, _tenant_keys)
        parser_.add_argument("tenant", help="the tenant's id")
        if action == "revoke":
            parser_.add_argument("key_id")
    secrets_cmd = sub.add_parser("secrets", help="manage the key that seals tool secrets")
    secrets_sub = secrets_cmd.add_subparsers(dest="action", required=True)
    _command(
        secrets_sub,
        "rotate",
        "seal every tool secret again under the first AGENTLOG_SECRETS_KEY",
        _rotate_secrets,
    )
    projections = sub.add_parser("projections", help="manage projections")
    projections_sub = projections.add_subparsers(dest="action", required=True)
    rebuild = _command(projections_sub, "rebuild", "rebuild a projection from offset 0", _rebuild)
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
    operator = _command(
        operators_sub, "create", "create an operator and print its key", _create_operator
    )
    operator.add_argument("name", help="a name no other operator has")
    billing = sub.add_parser("billing", help="billing: verify drafts")
    billing_sub = billing.add_subparsers(dest="action", required=True)
    verify = _command(
        billing_sub,
        "verify",
        "compute an invoice draft again from the topics and compare",
        _verify,
    )
    verify.add_argument("invoice_id")
    verify.add_argument("--revision", type=int, help="default: the latest")
    replay = _command(sub, "replay", "replay topics into read models beside the live ones", _replay)
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


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "broker":
        run_broker(args)
        return
    from streams.settings import Settings

    settings = Settings()
    if args.service is not None:
        from streams import tracing

        tracing.configure(args.service.format(role=getattr(args, "role", "")))
    if not args.starts_services:
        from streams.embedded import ServiceUnavailable, resolve

        try:
            settings = resolve(settings, start=False).settings
        except ServiceUnavailable as exc:
            raise SystemExit(f"agentlog: {exc}") from None
    args.run(settings, args)


# -- the sub-commands, each importing what it needs only when it runs ----------------


def _up(settings: Settings, args: argparse.Namespace) -> None:
    from .up import up

    up(settings, args)


def _services_up(settings: Settings, args: argparse.Namespace) -> None:
    from .up import services_up

    services_up(settings, args)


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    from workers.runner import prepare

    uvloop.run(prepare(settings, reset_foreign=args.reset))


def _model_server(settings: Settings, args: argparse.Namespace) -> None:
    from workers.providers.protocol_server import ModelServer

    server = ModelServer(args.host, args.port)
    print(f"model server on {server.url} (OpenAI: {server.url}/v1)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def _gateway(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.server import listen, server_config, url_of

    sock = listen(settings)
    print(f"gateway {url_of(sock)}", flush=True)
    uvicorn.Server(server_config(create_app(settings), settings)).run(sockets=[sock])


def _roles(settings: Settings, args: argparse.Namespace) -> None:
    role = "projector" if args.command == "projector" else args.role
    uvloop.run(_run_roles(settings, [role]))


def _create_tenant(settings: Settings, args: argparse.Namespace) -> None:
    from .tenants import create_tenant

    print(uvloop.run(create_tenant(settings, args.name)))


def _tenant_keys(settings: Settings, args: argparse.Namespace) -> None:
    from .tenants import keys_command

    uvloop.run(keys_command(settings, args))


def _rotate_secrets(settings: Settings, args: argparse.Namespace) -> None:
    print(f"sealed again: {uvloop.run(_rotate(settings))} tools")


def _rebuild(settings: Settings, args: argparse.Namespace) -> None:
    from .rebuild import rebuild_command

    uvloop.run(rebuild_command(settings, args))


def _create_operator(settings: Settings, args: argparse.Namespace) -> None:
    from .operators import create_operator

    print(uvloop.run(create_operator(settings, args.name)))


def _verify(settings: Settings, args: argparse.Namespace) -> None:
    from .billing import verify_command

    raise SystemExit(uvloop.run(verify_command(settings, args)))


def _replay(settings: Settings, args: argparse.Namespace) -> None:
    from .billing import replay_command

    args.period = args.period or datetime.datetime.now(datetime.UTC).strftime("%Y-%m")
    raise SystemExit(uvloop.run(replay_command(settings, args)))


async def _run_roles(settings: Settings, roles: list[str]) -> None:
    from workers.runner import run_roles

    from .signals import stop_event

    await run_roles(settings, roles, stop_event(settings.shutdown_timeout_s))


async def _rotate(settings: Settings) -> int:
    from projections.secrets import SecretStore

    store = SecretStore.from_settings(settings)
    try:
        await store.ensure()
        return await store.rotate()
    finally:
        await store.close()
