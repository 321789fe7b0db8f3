"""The plans read model: its folds as plain values; against real Postgres, a plan
version is the one published first, and the assignments a draft counts are those in
force when it was requested (withdrawals recorded after the request do not count)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from projections import plans
from projections.ops import Notify, Upsert, project
from schemas import billing
from schemas.billing import ModelRates, PricePlan, ToolRates

from .billing_models import BillingModels, billing_models, recorded
from .fold_context import CTX, T

# Recorded with no request behind it: only the read model of plans keeps it (one a
# request caused is its outcome too: tests/projections/test_billing_outcomes.py).
UNCAUSED = replace(CTX, causation_id=CTX.event_id)

PLAN = PricePlan(
    currency="EUR",
    models={"m-1": ModelRates(input=Decimal("0.000002"), output=Decimal("0.00001"))},
    tools={"t-1": ToolRates(per_call=Decimal("0.01"), free_calls=3)},
    monthly_minimum=Decimal("5"),
)
JAN, FEB, MAR, APR = (datetime.datetime(2026, m, 1, tzinfo=datetime.UTC) for m in (1, 2, 3, 4))


def at(n: int) -> datetime.datetime:
    """The time of the n-th record a test writes."""
    return datetime.datetime(2026, 5, 1, 9, tzinfo=datetime.UTC) + datetime.timedelta(minutes=n)


@pytest.fixture
async def billing_db() -> AsyncIterator[BillingModels]:
    async with billing_models() as models:
        yield models


# -- folds ----------------------------------------------------------------------------


def test_operator_created_adds_the_operator_by_its_key_hash() -> None:
    data = billing.OperatorCreated(
        operator_id="op-1",
        display_name="Operations",
        key_id="key-1",
        key_prefix="alop_1234",
        key_hash="hash-1",
    )

    assert project(data, UNCAUSED) == [
        Upsert(
            "operators",
            ("operator_id",),
            {
                "operator_id": "op-1",
                "display_name": "Operations",
                "key_id": "key-1",
                "key_prefix": "alop_1234",
                "key_hash": "hash-1",
                "created_at": T,
            },
        )
    ]


def test_a_plan_version_is_inserted_and_never_overwritten() -> None:
    data = billing.PricePlanPublished(plan_id="plan-1", version=2, plan=PLAN, operator_id="op-1")

    # No columns to overwrite: a second publication of the version keeps the first.
    assert project(data, UNCAUSED) == [
        Upsert(
            "price_plans",
            ("plan_id", "version"),
            {
                "plan_id": "plan-1",
                "version": 2,
                "currency": "EUR",
                "plan": {
                    "currency": "EUR",
                    "models": {
                        "m-1": {
                            "input": "0.000002",
                            "output": "0.00001",
                            "cached_input": "0",
                            "free_input_tokens": 0,
                            "free_output_tokens": 0,
                            "free_cached_input_tokens": 0,
                        }
                    },
                    "tools": {"t-1": {"per_call": "0.01", "free_calls": 3}},
                    "monthly_minimum": "5",
                },
                "operator_id": "op-1",
                "published_at": T,
            },
        ),
        Notify("plan:plan-1:2"),
    ]


def test_an_assignment_records_where_in_the_billing_log_it_was_recorded() -> None:
    data = billing.TenantPlanAssigned(
        tenant_id="tenant-a",
        plan_id="plan-1",
        version=2,
        effective_from=FEB,
        operator_id="op-1",
        repriced_periods=["2026-02"],
    )

    assert project(data, UNCAUSED) == [
        Upsert(
            "plan_assignments",
            ("tenant_id", "effective_from"),
            {
                "tenant_id": "tenant-a",
                "effective_from": FEB,
                "plan_id": "plan-1",
                "version": 2,
                "operator_id": "op-1",
                "billing_partition": 2,
                "billing_offset": 41,
                "assigned_at": T,
            },
        ),
        Notify("assignment:evt-1"),
    ]


def test_a_withdrawal_is_kept_beside_the_assignment_never_written_over_it() -> None:
    data = billing.TenantPlanWithdrawn(
        tenant_id="tenant-a", effective_from=FEB, operator_id="op-1", repriced_periods=[]
    )

    # Keyed by its own position too: every withdrawal of an instant is kept.
    assert project(data, UNCAUSED) == [
        Upsert(
            "plan_withdrawals",
            ("tenant_id", "effective_from", "billing_partition", "billing_offset"),
            {
                "tenant_id": "tenant-a",
                "effective_from": FEB,
                "operator_id": "op-1",
                "billing_partition": 2,
                "billing_offset": 41,
                "withdrawn_at": T,
            },
        ),
        Notify("withdrawal:evt-1"),
    ]


# -- queries over the store -----------------------------------------------------------


async def test_an_operator_is_found_by_its_key_hash(billing_db: BillingModels) -> None:
    created = billing.OperatorCreated(
        operator_id="op-1", display_name="Ops", key_id="key-1", key_prefix="p", key_hash="hash-1"
    )
    await billing_db.apply(recorded(created, at(0)))

    assert await plans.operator_for_key_hash(billing_db.db, "hash-1") == "op-1"
    assert await plans.operator_for_key_hash(billing_db.db, "hash-2") is None
    assert await plans.operator_exists(billing_db.db, "op-1")
    assert not await plans.operator_exists(billing_db.db, "op-2")


async def test_the_first_publication_of_a_plan_version_is_the_version(
    billing_db: BillingModels,
) -> None:
    other = PLAN.model_copy(update={"currency": "USD", "monthly_minimum": Decimal("9")})
    await billing_db.apply(
        recorded(
            billing.PricePlanPublished(plan_id="p", version=1, plan=PLAN, operator_id="a"), at(0)
        ),
        recorded(
            billing.PricePlanPublished(plan_id="p", version=1, plan=other, operator_id="b"), at(1)
        ),
    )
    await billing_db.apply(
        recorded(
            billing.PricePlanPublished(plan_id="p", version=2, plan=other, operator_id="b"), at(2)
        )
    )

    first = await plans.plan(billing_db.db, "p", 1)
    assert first is not None
    assert (first.currency, first.plan, first.published_at) == ("EUR", PLAN, at(0))
    versions = await plans.plan_versions(billing_db.db, "p")
    assert [(v.version, v.currency) for v in versions] == [(1, "EUR"), (2, "USD")]
    assert await plans.plan(billing_db.db, "p", 3) is None
    assert [p.version for p in await plans.plans(billing_db.db, 10, ("p", 1))] == [2]


def assigned(tenant_id: str, effective_from: datetime.datetime, version: int) -> Any:
    return billing.TenantPlanAssigned(
        tenant_id=tenant_id,
        plan_id=f"plan-{tenant_id}",
        version=version,
        effective_from=effective_from,
        operator_id="op-1",
    )


def withdrawn(tenant_id: str, effective_from: datetime.datetime) -> Any:
    return billing.TenantPlanWithdrawn(
        tenant_id=tenant_id, effective_from=effective_from, operator_id="op-1"
    )


def requested(tenant_id: str) -> Any:
    return billing.InvoiceDraftRequested(
        tenant_id=tenant_id, invoice_id=f"inv-{tenant_id}", period="2026-03", operator_id="op-1"
    )


Seen = list[tuple[datetime.datetime, int, datetime.datetime | None]]


async def assignments(billing_db: BillingModels, tenant_id: str, **options: Any) -> Seen:
    rows = await plans.assignments(billing_db.db, tenant_id, **options)
    return [(a.effective_from, a.version, a.withdrawn_at) for a in rows]


async def test_assignments_as_they_stood_when_each_draft_was_requested(
    billing_db: BillingModels,
) -> None:
    facts = [
        assigned("a", JAN, 1),
        assigned("a", FEB, 2),
        requested("a"),  # 2: counts January and February
        withdrawn("a", FEB),  # 3
        requested("a"),  # 4: counts January only
        assigned("a", MAR, 3),
        withdrawn("a", FEB),  # 6: withdrawn again; the first withdrawal is the one
        requested("a"),  # 7
    ]
    items = await billing_db.apply(*(recorded(f, at(n)) for n, f in enumerate(facts)))
    # Another tenant's, on another partition: neither counted for "a" nor withdrawn by it.
    await billing_db.apply(recorded(assigned("b", FEB, 1), at(20)), partition=1)
    r1, r2, r3 = [
        (p.partition, p.offset)
        for env, p in items
        if isinstance(env.data, billing.InvoiceDraftRequested)
    ]

    assert (r1, r2, r3) == ((0, 2), (0, 4), (0, 7))
    assert await assignments(billing_db, "a", before=r1) == [(JAN, 1, None), (FEB, 2, None)]
    assert await assignments(billing_db, "a", before=r1, withdrawn=True) == [
        (JAN, 1, None),
        (FEB, 2, None),  # withdrawn after the request: not as it stood then
    ]
    assert await assignments(billing_db, "a", before=r2) == [(JAN, 1, None)]
    assert await assignments(billing_db, "a", before=r2, withdrawn=True) == [
        (JAN, 1, None),
        (FEB, 2, at(3)),
    ]
    assert await assignments(billing_db, "a", before=r3) == [(JAN, 1, None), (MAR, 3, None)]
    assert await assignments(billing_db, "a") == [(JAN, 1, None), (MAR, 3, None)]
    assert await assignments(billing_db, "a", withdrawn=True) == [
        (JAN, 1, None),
        (FEB, 2, at(3)),
        (MAR, 3, None),
    ]
    assert await assignments(billing_db, "b") == [(FEB, 1, None)]


async def test_a_withdrawal_recorded_before_its_assignment_does_not_withdraw_it(
    billing_db: BillingModels,
) -> None:
    await billing_db.apply(
        recorded(withdrawn("a", APR), at(0)),
        recorded(assigned("a", APR, 1), at(1)),
        recorded(requested("a"), at(2)),
    )

    assert await assignments(billing_db, "a") == [(APR, 1, None)]
    assert await assignments(billing_db, "a", before=(0, 2)) == [(APR, 1, None)]
    assert await assignments(billing_db, "a", before=(0, 1)) == []


async def test_tenants_on_plans_are_those_with_an_assignment_in_force_before_an_instant(
    billing_db: BillingModels,
) -> None:
    await billing_db.apply(
        recorded(assigned("a", JAN, 1), at(0)),
        recorded(assigned("b", FEB, 1), at(1)),
        recorded(assigned("c", JAN, 1), at(2)),
        recorded(withdrawn("c", JAN), at(3)),
    )

    assert await plans.tenants_on_plans(billing_db.db, FEB) == ["a"]
    assert await plans.tenants_on_plans(billing_db.db, MAR) == ["a", "b"]
    assert await plans.tenants_on_plans(billing_db.db, JAN) == []
