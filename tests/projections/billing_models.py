"""Billing's read models in a schema of the test's own (migrated, dropped afterwards),
with the store that folds into it and a database that queries it. Facts are applied at
the positions a ``Log`` hands out, at the times the test gives them."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from projections.database import Database
from projections.migrate import BILLING_SCRIPTS, upgrade
from projections.ops import BILLING
from projections.store import ProjectionStore
from schemas.base import Fact
from schemas.billing import PLATFORM
from schemas.envelope import Envelope, envelope
from streams.handler import Item

from .conftest import DATABASE_URL
from .conversation import SOURCE, Log


def recorded(fact: Fact, at: datetime.datetime) -> Envelope[Any]:
    """``fact`` as the log holds it, at ``at``: under its tenant, or the platform's."""
    return envelope(fact, source=SOURCE, tenant_id=getattr(fact, "tenant_id", PLATFORM)).at(at)


@dataclass
class BillingModels:
    schema: str
    store: ProjectionStore
    db: Database
    log: Log = field(default_factory=Log)

    async def apply(self, *envs: Envelope[Any], partition: int = 0) -> list[Item]:
        """Append ``envs`` to their topics' ``partition`` and fold them, in one batch."""
        items = self.log.extend(envs, partition)
        await self.store.apply(items)
        return items


@asynccontextmanager
async def billing_models() -> AsyncIterator[BillingModels]:
    schema = f"bill_{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.to_thread(upgrade, DATABASE_URL, schema, BILLING_SCRIPTS)
        store = ProjectionStore(DATABASE_URL, schema, BILLING, live=False)
        db = Database(DATABASE_URL, schema, pool_size=1)
        try:
            yield BillingModels(schema, store, db)
        finally:
            await db.close()
            await store.close()
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            name = sql.Identifier(schema)
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))
