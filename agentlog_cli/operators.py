"""Operators of the platform, from the command line: recorded on the billing topic and
waited for until the billing projection shows them, so a key printed here works at once."""

from __future__ import annotations

from gateway.auth import issue_operator_key
from projections import plans
from projections.database import Database
from projections.ops import BILLING
from schemas.billing import PLATFORM
from schemas.envelope import envelope
from streams.settings import Settings

from .recording import SOURCE, record_and_wait


async def create_operator(settings: Settings, name: str) -> str:
    """Record an operator and its key; return the key (shown once, stored hashed)."""
    key, fact = issue_operator_key(name)

    async def applied(db: Database) -> str | None:
        return await plans.operator_for_key_hash(db, fact.key_hash)

    await record_and_wait(
        settings,
        [envelope(fact, source=SOURCE, tenant_id=PLATFORM)],
        f"operator:{fact.operator_id}",
        applied,
        schema=settings.billing_schema,
        projection=BILLING,
    )
    return key
