"""Assembling and running process roles: each worker, the projector, or all of them.

Every role can run as its own process (``agentlog worker orchestrator``); ``agentlog up``
runs them together in one process for local use.
"""

from __future__ import annotations

import asyncio
import logging

from faststream import FastStream

from projections.database import OUTAGES, Database
from projections.migrate import BILLING_SCRIPTS, CORE_SCRIPTS, LogSource, bind_to_log, upgrade
from projections.ops import BILLING
from projections.projector import Projector
from projections.secrets import SecretStore
from projections.store import ProjectionStore
from streams import tracing
from streams.catalog import Catalog, cluster_id, ensure_topics
from streams.consumer import ConsumerRuntime, first_of
from streams.embedded import resolve
from streams.handler import Closes, Handler
from streams.heap import freeze_startup_objects
from streams.logs import configure_logging
from streams.metrics import ProbeServer
from streams.publisher import Publisher
from streams.settings import Settings
from streams.subscriber import kafka_broker

from .command_decisions import TurnLimits
from .command_handler import CommandHandler
from .invoicer import Invoicer
from .model_worker import ModelWorker
from .orchestrator import Orchestrator
from .tool_network import ToolNetworkPolicy
from .tool_worker import ToolWorker

log = logging.getLogger(__name__)

ROLES = ("projector", "commands", "orchestrator", "model", "tool", "billing", "invoicer")
# A projector catches up after an outage while its readers wait on it. Each of its
# fetches brings up to 4 MiB of a partition, not Kafka's 1 MiB: a fetch for partitions
# at their end (the commands topic, read to its end first) held the others back for a
# second every 1 MiB (catch-up at 2,900 events/s, 6,700 with 4 MiB: bench_rebuild).
PROJECTOR_FETCH_BYTES = 4 << 20


async def prepare(settings: Settings, *, reset_foreign: bool = False) -> None:
    """Topics and database schemas, created or migrated; safe to run again. Read models
    of another log are refused, or dropped with ``reset_foreign``."""
    catalog = Catalog.from_settings(settings)
    await ensure_topics(settings.kafka_bootstrap_servers, catalog, settings.topic_partitions)
    source = LogSource(await cluster_id(settings.kafka_bootstrap_servers), settings.topic_prefix)
    for schema, scripts in (
        (settings.database_schema, CORE_SCRIPTS),
        (settings.billing_schema, BILLING_SCRIPTS),
    ):
        await asyncio.to_thread(upgrade, settings.database_url, schema, scripts)
        await bind_to_log(
            settings.database_url, schema, source, reset=reset_foreign, scripts=scripts
        )
    secrets = SecretStore.from_settings(settings)
    try:
        await secrets.ensure()
    finally:
        await secrets.close()


def build_handler(role: str, settings: Settings) -> Handler:
    bootstrap = settings.kafka_bootstrap_servers
    catalog = Catalog.from_settings(settings)
    if role == "projector":
        store = ProjectionStore(settings.database_url, settings.database_schema)
        return Projector.core(store, catalog)
    if role == "billing":
        store = ProjectionStore(settings.database_url, settings.billing_schema, BILLING)
        return Projector.billing(store, catalog)
    if role == "invoicer":
        return Invoicer(
            bootstrap, catalog, Database(settings.database_url, settings.billing_schema)
        )
    if role == "commands":
        limits = TurnLimits(
            max_message_bytes=settings.max_message_bytes,
            max_steps=settings.max_steps_per_turn,
            max_tool_calls=settings.max_tool_calls_per_turn,
            history_messages=settings.history_max_messages,
        )
        return CommandHandler(bootstrap, catalog, _database(settings), limits)
    if role == "orchestrator":
        return Orchestrator(
            bootstrap, catalog, _database(settings), deadline_s=settings.turn_deadline_s
        )
    if role == "model":
        return ModelWorker(bootstrap, catalog, settings)
    if role == "tool":
        return ToolWorker(
            bootstrap,
            catalog,
            SecretStore.from_settings(settings),
            settings.tool_result_max_bytes,
            ToolNetworkPolicy.from_settings(settings),
        )
    raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def _database(settings: Settings, schema: str | None = None) -> Database:
    return Database(settings.database_url, schema or settings.database_schema)


def role_app(role: str) -> FastStream:
    """One role as a FastStream application, with settings from the environment:
    ``faststream run workers.<role>:app`` runs what ``agentlog worker <role>`` runs, and
    logs as it does (JSON, redacted, repeats limited)."""
    settings = Settings()
    configure_logging(settings.log_level)
    tracing.configure(f"agentlog-{role}")
    return RoleSet(resolve(settings, start=False).settings, [role]).app()


async def run_roles(
    settings: Settings, roles: list[str], stop: asyncio.Event, *, probes: bool = True
) -> None:
    """Run the given roles until ``stop`` is set; a role that fails stops them all.
    ``probes``: serve ``/metrics``, ``/healthz`` and ``/readyz`` on the metrics port
    (``agentlog up`` does not: its gateway serves them)."""
    app = RoleSet(settings, roles, probes=probes)
    await app.start()
    log.info("roles running", extra={"roles": roles})
    try:
        await first_of(stop.wait(), *(r.failed.wait() for r in app.runtimes))
    finally:
        await app.stop()
    app.raise_failure()


class RoleSet:
    """Roles as subscribers of one FastStream broker, with the publisher their handlers'
    outputs go through. ``app()`` is the same as a FastStream application."""

    def __init__(self, settings: Settings, roles: list[str], *, probes: bool = True) -> None:
        self.probes = (
            ProbeServer(settings.metrics_host, settings.metrics_port, self.ready)
            if probes
            else None
        )
        self.publisher = Publisher(
            settings.kafka_bootstrap_servers, Catalog.from_settings(settings)
        )
        self.broker = kafka_broker(settings.kafka_bootstrap_servers)
        self.handlers = [build_handler(role, settings) for role in roles]
        self.runtimes = [
            ConsumerRuntime(
                handler,
                self.publisher,
                transient=OUTAGES,
                session_timeout_ms=settings.consumer_session_timeout_ms,
                max_partition_fetch_bytes=(
                    PROJECTOR_FETCH_BYTES if isinstance(handler, Projector) else 1 << 20
                ),
            )
            for handler in self.handlers
        ]
        for runtime in self.runtimes:
            runtime.subscribe(self.broker)
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.publisher.start()
        await self.broker.start()
        await self._started()

    async def _started(self) -> None:
        for runtime in self.runtimes:
            await runtime.started()
        if self.probes is not None:
            await self.probes.start()
            print(f"metrics {self.probes.url}/metrics", flush=True)
        freeze_startup_objects()

    async def ready(self) -> None:
        """Raise unless every role runs and Kafka answers."""
        for runtime in self.runtimes:
            if runtime.failed.is_set():
                raise RuntimeError(f"{runtime.handler.name} has stopped")
        await self.publisher.ping()

    async def stop(self) -> None:
        await self._stopping()
        await self.broker.stop()
        await self._stopped()

    async def _stopping(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        for runtime in self.runtimes:
            await runtime.stopping()

    async def _stopped(self) -> None:
        if self.probes is not None:
            await self.probes.stop()
        for handler in self.handlers:
            if isinstance(handler, Closes):
                await handler.close()
        await self.publisher.stop()

    def app(self) -> FastStream:
        """A FastStream application of these roles (``faststream run``). A role that
        fails stops it, and the failure is raised once everything has stopped."""

        async def exit_on_failure() -> None:
            async def watch() -> None:
                await first_of(*(r.failed.wait() for r in self.runtimes))
                app.exit()

            self._watching = asyncio.create_task(watch(), name="roles-failure-watch")

        app = FastStream(
            self.broker,
            on_startup=[self.publisher.start],
            after_startup=[self._started, exit_on_failure],
            on_shutdown=[self._stopping],
            after_shutdown=[self._stopped, self.raise_failure],
        )
        return app

    def raise_failure(self) -> None:
        """Raise the first role's failure, if one failed."""
        for runtime in self.runtimes:
            runtime.raise_failure()
