"""Operators of the platform, from the command line: recorded on the billing topic and
waited for until the billing projection shows them, so a key printed here works at once."""

from __future__ import annotations

from gateway.auth import issue_operator_key
from projections import plans
from projections.database import Database
from projections.ops import BILLING
from projections.waiter import Waiter
from schemas.billing import PLATFORM
from schemas.envelope import envelope
from streams.catalog import Catalog
from streams.publisher import Publisher
from streams.settings import Settings

from .tenants import APPLIED_WAIT_S, SOURCE


async def create_operator(settings: Settings, name: str) -> str:
    """Record an operator and its key; return the key (shown once, stored hashed)."""
    key, fact = issue_operator_key(name)
    publisher = Publisher(settings.kafka_bootstrap_servers, Catalog.from_settings(settings))
    await publisher.start()
    try:
        await publisher.publish(envelope(fact, source=SOURCE, tenant_id=PLATFORM))
    finally:
        await publisher.stop()
    db = Database(settings.database_url, settings.billing_schema, pool_size=1)
    waiter = Waiter(db, projection=BILLING)
    waiter.start()
    try:
        found = await waiter.until(
            f"operator:{fact.operator_id}",
            lambda: plans.operator_for_key_hash(db, fact.key_hash),
            APPLIED_WAIT_S,
        )
    finally:
        await waiter.close()
        await db.close()
    if found is None:
        raise SystemExit("the billing projector did not apply it: is it running?")
    return key
