"""The usage read models against real Postgres: a day sums past what a ``bigint`` holds,
and a record billing cannot count is refused by the fold, whoever wrote it."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from projections import usage as usage_model
from projections.database import Database
from projections.migrate import BILLING_SCRIPTS, upgrade
from projections.ops import BILLING, project
from projections.rows import ALL_TENANTS
from projections.store import ProjectionStore
from schemas.envelope import envelope
from schemas.errors import DomainError, ErrorCode
from schemas.usage import MAX_QUANTITY, UsageRecorded
from streams.consumer import Position

from .conftest import DATABASE_URL
from .fold_context import CTX

DAY = datetime.datetime(2026, 11, 5, 9, tzinfo=datetime.UTC)
BIGINT_MAX = 2**63 - 1


@pytest.fixture
def billing_schema() -> Iterator[str]:
    name = f"bill_{uuid.uuid4().hex[:12]}"
    try:
        upgrade(DATABASE_URL, name, BILLING_SCRIPTS)
        yield name
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
async def billing_store(billing_schema: str) -> AsyncIterator[ProjectionStore]:
    store = ProjectionStore(DATABASE_URL, billing_schema, BILLING, live=False)
    yield store
    await store.close()


def used(tenant_id: str, n: int, quantity: int) -> UsageRecorded:
    return UsageRecorded(
        tenant_id=tenant_id,
        kind="model",
        resource="openai:gpt-test",
        quantities={"input_tokens": quantity},
        used_at=DAY + datetime.timedelta(seconds=n),
        call_id=f"call-{n}",
    )


async def test_a_days_usage_sums_past_what_a_bigint_holds(
    billing_store: ProjectionStore, billing_schema: str
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    events = BIGINT_MAX // MAX_QUANTITY + 2  # each at the bound; together past a bigint
    for first in range(0, events, 2000):
        batch = [
            (
                envelope(used(tenant, n, MAX_QUANTITY), source="tests", tenant_id=tenant),
                Position("usage", 0, n),
            )
            for n in range(first, min(first + 2000, events))
        ]
        assert await billing_store.apply(batch) == len(batch)

    db = Database(DATABASE_URL, billing_schema, pool_size=1)
    try:
        (group,) = await usage_model.usage_summary(
            db,
            ALL_TENANTS,
            DAY.date(),
            DAY.date() + datetime.timedelta(days=1),
            ["tenant"],
            10,
            None,
        )
    finally:
        await db.close()
    assert group.tenant_id == tenant
    assert group.events == events
    assert group.quantity == events * MAX_QUANTITY > BIGINT_MAX


@pytest.mark.parametrize(
    "changes",
    [
        {"quantities": {"input_tokens": MAX_QUANTITY + 1}},
        {"resource": "x" * 3000},  # past what a btree index row holds, too
        {"step": 2**40},
        {"used_at": "0001-01-01T00:00:00+05:00"},
    ],
)
def test_the_fold_refuses_usage_billing_cannot_count(changes: dict[str, object]) -> None:
    fact = UsageRecorded.model_validate({**used("tenant-a", 1, 5).model_dump(), **changes})
    with pytest.raises(DomainError) as refused:
        project(fact, CTX)
    assert refused.value.code == ErrorCode.USAGE_UNBILLABLE
