"""The usage read models: the fold as plain values (a ledger row and a daily sum per unit
used, v1 read as v2), and against real Postgres: an event recorded twice counts once,
sums group by the dimensions asked for, a day sums past what a ``bigint`` holds, and a
record billing cannot count is refused by the fold, whoever wrote it."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from projections import usage as usage_model
from projections.ops import Add, Upsert, project
from projections.rows import ALL_TENANTS
from schemas.envelope import envelope
from schemas.errors import DomainError, ErrorCode
from schemas.usage import MAX_QUANTITY, UsageRecorded, UsageRecordedV1
from streams.handler import Position

from .billing_models import BillingModels, billing_models, recorded
from .fold_context import CTX, T

DAY = datetime.datetime(2026, 11, 5, 9, tzinfo=datetime.UTC)
BIGINT_MAX = 2**63 - 1


@pytest.fixture
async def billing_db() -> AsyncIterator[BillingModels]:
    async with billing_models() as models:
        yield models


def used(tenant_id: str, n: int, quantity: int) -> UsageRecorded:
    return UsageRecorded(
        tenant_id=tenant_id,
        kind="model",
        resource="openai:gpt-test",
        quantities={"input_tokens": quantity},
        used_at=DAY + datetime.timedelta(seconds=n),
        call_id=f"call-{n}",
    )


async def test_a_days_usage_sums_past_what_a_bigint_holds(billing_db: BillingModels) -> None:
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
        assert await billing_db.store.apply(batch) == len(batch)

    (group,) = await usage_model.usage_summary(
        billing_db.db,
        ALL_TENANTS,
        DAY.date(),
        DAY.date() + datetime.timedelta(days=1),
        ["tenant"],
        10,
        None,
    )
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


# -- the fold ---------------------------------------------------------------------------

DAILY_KEY = ("tenant_id", "day", "agent_id", "kind", "resource", "unit")


def daily(day: datetime.date, agent_id: str, resource: str, unit: str, quantity: int) -> Add:
    row = {
        "tenant_id": "tenant-a",
        "day": day,
        "agent_id": agent_id,
        "kind": "model",
        "resource": resource,
        "unit": unit,
        "quantity": quantity,
        "events": 1,
    }
    return Add("usage_daily", DAILY_KEY, row, ("quantity", "events"))


def test_usage_adds_its_ledger_row_and_to_each_unit_it_used_on_its_utc_day() -> None:
    late_evening = datetime.datetime(
        2024, 5, 1, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-2))
    )
    data = UsageRecorded(
        tenant_id="tenant-a",
        kind="model",
        resource="openai:gpt-test",
        quantities={"output_tokens": 0, "input_tokens": 120, "cached_input_tokens": 30},
        used_at=late_evening,
        agent_id="agent-1",
        agent_version=3,
        session_id="session-1",
        turn_id="turn-1",
        step=2,
        call_id="call-1",
        trace_id="trace-1",
    )
    next_day = datetime.date(2024, 5, 2)  # 23:30 at UTC-2 is 01:30 UTC

    assert project(data, CTX) == [
        Upsert(
            "usage_ledger",
            ("event_id",),
            {
                "event_id": "evt-1",
                "tenant_id": "tenant-a",
                "kind": "model",
                "resource": "openai:gpt-test",
                "quantities": {"cached_input_tokens": 30, "input_tokens": 120, "output_tokens": 0},
                "used_at": late_evening,
                "agent_id": "agent-1",
                "agent_version": 3,
                "session_id": "session-1",
                "turn_id": "turn-1",
                "step": 2,
                "call_id": "call-1",
                "trace_id": "trace-1",
                "usage_partition": 2,
                "usage_offset": 41,
            },
        ),
        # A unit it used none of adds nothing to the day.
        daily(next_day, "agent-1", "openai:gpt-test", "input_tokens", 120),
        daily(next_day, "agent-1", "openai:gpt-test", "cached_input_tokens", 30),
    ]


def recorded_v1(usage_id: str, source: str, resource: str, **counts: int) -> UsageRecordedV1:
    return UsageRecordedV1.model_validate(
        {
            "tenant_id": "tenant-a",
            "usage_id": usage_id,
            "session_id": "session-1",
            "turn_id": "turn-1",
            "source": source,
            "resource": resource,
            **counts,
        }
    )


def test_usage_v1_counts_as_v2_used_when_it_was_recorded_by_no_known_agent() -> None:
    # v1 did not bound its counts; billing counts none of a negative one.
    model = recorded_v1("usage-1", "model", "dev", input_tokens=7, output_tokens=-3)
    tool = recorded_v1("usage-2", "tool", "weather", calls=2)

    assert project(model, CTX) == [
        Upsert(
            "usage_ledger",
            ("event_id",),
            {
                "event_id": "evt-1",
                "tenant_id": "tenant-a",
                "kind": "model",
                "resource": "dev",
                "quantities": {"input_tokens": 7, "output_tokens": 0},
                "used_at": T,
                "agent_id": "",
                "agent_version": 0,
                "session_id": "session-1",
                "turn_id": "turn-1",
                "step": 0,
                "call_id": "usage-1",
                "trace_id": "",
                "usage_partition": 2,
                "usage_offset": 41,
            },
        ),
        daily(T.date(), "", "dev", "input_tokens", 7),
    ]
    as_v2 = UsageRecorded(
        tenant_id="tenant-a",
        kind="tool",
        resource="weather",
        quantities={"calls": 2},
        used_at=T,
        session_id="session-1",
        turn_id="turn-1",
        call_id="usage-2",
    )
    assert project(tool, CTX) == project(as_v2, CTX)


# -- queries over the store ---------------------------------------------------------------

D1 = DAY.date()
D2 = D1 + datetime.timedelta(days=1)
D3 = D2 + datetime.timedelta(days=1)


def usage_of(
    tenant_id: str, agent_id: str, when: datetime.datetime, resource: str, **quantities: int
) -> UsageRecorded:
    return UsageRecorded(
        tenant_id=tenant_id,
        kind="tool" if "calls" in quantities else "model",
        resource=resource,
        quantities=quantities,  # type: ignore[arg-type]
        used_at=when,
        agent_id=agent_id,
        call_id=f"call-{uuid.uuid4().hex[:8]}",
    )


async def test_a_usage_event_recorded_again_counts_once(billing_db: BillingModels) -> None:
    again, other = recorded(used("a", 1, 100), DAY), recorded(used("a", 2, 5), DAY)
    await billing_db.apply(again, again)  # repeated within a batch
    await billing_db.apply(other, again)  # and in a later one

    row = await usage_model.ledger_event(billing_db.db, "a", again.id)
    ledger = await usage_model.ledger_page(
        billing_db.db, "a", DAY, DAY + datetime.timedelta(days=1), 10, None
    )
    (summed,) = await usage_model.usage_summary(billing_db.db, "a", D1, D2, ["unit"], 10, None)

    assert row is not None
    assert (row.usage_partition, row.usage_offset) == (0, 0)  # where it was first
    assert [r.event_id for r in ledger] == [again.id, other.id]
    assert (summed.unit, summed.quantity, summed.events) == ("input_tokens", 105, 2)


async def test_a_batch_whose_fold_fails_midway_leaves_nothing_applied(
    billing_db: BillingModels,
) -> None:
    """The fold of the batch's last record refuses it, after the batch's first
    statements were sent: nothing is committed, so the others, applied again without
    it (as a rebuild does), count."""
    good = [recorded(used("a", n, 10), DAY) for n in (1, 2)]
    bad = recorded(used("a", 3, MAX_QUANTITY + 1), DAY)
    with pytest.raises(DomainError):
        await billing_db.apply(*good, bad)
    assert await usage_model.ledger_event(billing_db.db, "a", good[0].id) is None

    assert await billing_db.store.apply(billing_db.log.extend(good, 0)) == 2
    (summed,) = await usage_model.usage_summary(billing_db.db, "a", D1, D2, ["unit"], 10, None)
    assert (summed.quantity, summed.events) == (20, 2)


def groups(found: list[usage_model.UsageGroup], *columns: str) -> list[tuple[Any, ...]]:
    return [(*(getattr(g, c) for c in columns), g.quantity) for g in found]


async def test_usage_sums_by_the_dimensions_asked_for_in_their_order(
    billing_db: BillingModels,
) -> None:
    hours = [DAY + datetime.timedelta(hours=h) for h in (0, 1, 24, 48)]
    await billing_db.apply(
        recorded(usage_of("a", "a1", hours[0], "m-1", input_tokens=100, output_tokens=10), DAY),
        recorded(usage_of("a", "a2", hours[1], "m-1", input_tokens=50, cached_input_tokens=5), DAY),
        recorded(usage_of("a", "a1", hours[2], "t-1", calls=2), DAY),
        recorded(usage_of("a", "a1", hours[3], "m-1", input_tokens=1000), DAY),  # on D3
        recorded(usage_of("a", "a1", DAY - datetime.timedelta(hours=10), "m-1", calls=9), DAY),
    )
    await billing_db.apply(
        recorded(usage_of("b", "b1", hours[0], "m-1", input_tokens=7), DAY), partition=1
    )
    db = billing_db.db

    by_day_and_unit = await usage_model.usage_summary(db, "a", D1, D3, ["day", "unit"], 10, None)
    assert by_day_and_unit == [
        usage_model.UsageGroup(day=D1, unit="cached_input_tokens", quantity=5, events=1),
        usage_model.UsageGroup(day=D1, unit="input_tokens", quantity=150, events=2),
        usage_model.UsageGroup(day=D1, unit="output_tokens", quantity=10, events=1),
        usage_model.UsageGroup(day=D2, unit="calls", quantity=2, events=1),
    ]
    by_agent = await usage_model.usage_summary(
        db, "a", D1, D3, ["agent", "kind", "resource"], 10, None
    )
    assert groups(by_agent, "agent_id", "kind", "resource") == [
        ("a1", "model", "m-1", 110),
        ("a1", "tool", "t-1", 2),
        ("a2", "model", "m-1", 55),
    ]
    every_tenant = await usage_model.usage_summary(
        db, ALL_TENANTS, D1, D2, ["tenant", "unit"], 10, None
    )
    assert groups(every_tenant, "tenant_id", "unit") == [
        ("a", "cached_input_tokens", 5),
        ("a", "input_tokens", 150),
        ("a", "output_tokens", 10),
        ("b", "input_tokens", 7),
    ]
    (total,) = await usage_model.usage_summary(db, "a", D1, D3, [], 10, None)
    assert (total.tenant_id, total.day, total.quantity) == (None, None, 167)
    assert await usage_model.usage_summary(db, "nobody", D1, D3, [], 10, None) == []
    # A page after a group's key goes on from the next group.
    after = await usage_model.usage_summary(
        db, "a", D1, D3, ["day", "unit"], 2, [D1, "input_tokens"]
    )
    assert after == by_day_and_unit[2:]
