"""The gateway's connections to the platform, made once and shared by every request:
the log it records commands on, the read models it answers from, and the caches in
front of them."""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache

from projections import sessions
from projections.database import Database
from projections.ops import BILLING
from projections.secrets import SecretStore
from projections.sessions import SessionRow
from projections.tenants import KEY_REVOKED
from projections.waiter import Waiter
from schemas.base import Fact
from schemas.envelope import Envelope, envelope
from schemas.errors import ErrorCode
from streams.catalog import Catalog
from streams.publisher import RECORD_TOO_LARGE, Publisher
from streams.settings import Settings
from workers.tool_network import ToolNetworkPolicy

from .auth import ApiKeys
from .dead_letters import DeadLetters
from .idempotency import IdempotencyKeys
from .pipeline import Pipeline
from .problems import ProblemError
from .replays import Replays
from .streaming import Streams

SOURCE = "/gateway"


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog.from_settings(settings)
        # A request waits for its record at most write_timeout_s: past it, a 503.
        self.publisher = Publisher(
            settings.kafka_bootstrap_servers, self.catalog, timeout_s=settings.write_timeout_s
        )
        self.db = Database(
            settings.database_url,
            settings.database_schema,
            tenant_scoped=True,
            pool_size=settings.database_pool_size,
            timeout=settings.database_pool_timeout_s,
        )
        self.waiter = Waiter(self.db)
        self.billing_db = Database(
            settings.database_url,
            settings.billing_schema,
            tenant_scoped=True,
            pool_size=max(settings.database_pool_size // 2, 1),
            timeout=settings.database_pool_timeout_s,
        )
        self.billing_waiter = Waiter(self.billing_db, projection=BILLING)
        # The dashboard's reads (every tenant's, ``ALL_TENANTS``): pools of their own,
        # so an operator's queries never hold a connection the API needs.
        self.operator_db = Database(
            settings.database_url, settings.database_schema, tenant_scoped=True, pool_size=4
        )
        self.operator_billing_db = Database(
            settings.database_url, settings.billing_schema, tenant_scoped=True, pool_size=2
        )
        self.pipeline = Pipeline(settings.kafka_bootstrap_servers, self.catalog)
        self.dead_letters = DeadLetters(
            settings.kafka_bootstrap_servers, self.catalog, timeout_s=settings.write_timeout_s
        )
        self.keys = ApiKeys(self.db, self.billing_db)
        self.idempotency = IdempotencyKeys(settings.redis_url)
        self.replays = Replays(settings, self.idempotency.redis)
        self.secrets = SecretStore.from_settings(settings)
        self.tool_network = ToolNetworkPolicy.from_settings(settings)
        self.streams = Streams(settings.kafka_bootstrap_servers, settings.sse_streams_per_tenant)
        # Sessions for good: a session never changes tenant or agent.
        self._sessions: LRUCache[tuple[str, str], SessionRow] = LRUCache(maxsize=100_000)

    async def start(self) -> None:
        await self.publisher.start()
        await self.streams.start()
        await self.secrets.ensure()
        self.waiter.subscribe(KEY_REVOKED, self.keys.forget)
        self.waiter.start()
        self.billing_waiter.start()

    async def close(self) -> None:
        await self.replays.close()
        await self.waiter.close()
        await self.billing_waiter.close()
        await self.idempotency.close()
        await self.publisher.stop()
        await self.streams.close()
        await self.db.close()
        await self.billing_db.close()
        await self.operator_db.close()
        await self.operator_billing_db.close()
        await self.pipeline.close()
        await self.dead_letters.close()
        await self.secrets.close()

    async def session(self, tenant_id: str, session_id: str) -> SessionRow | None:
        row = self._sessions.get((tenant_id, session_id))
        if row is None:
            row = await sessions.session(self.db, tenant_id, session_id)
            if row is not None:
                self._sessions[(tenant_id, session_id)] = row
        return row

    async def record(self, tenant_id: str, data: Fact, **kwargs: Any) -> Envelope[Any]:
        """Record a command (or fact) from outside the log, for the tenant (a fact of
        the platform's own, such as a price plan, names no tenant: ``""``)."""
        env = envelope(data, source=SOURCE, tenant_id=tenant_id, **kwargs)
        try:
            await self.publisher.publish(env)
        except RECORD_TOO_LARGE:
            raise ProblemError(
                ErrorCode.RECORD_TOO_LARGE,
                "the request makes a record larger than the log accepts",
            ) from None
        return env
