"""The invoices read model: its folds as plain values; against real Postgres, an
invoice shows its latest revision and keeps every one, each request says what became of
it, and the drafted periods are those a plan change from an instant would price again."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from projections import invoices
from projections.invoices import DraftStatus
from projections.ops import Notify, Update, Upsert, project
from projections.rows import ALL_TENANTS
from schemas import billing
from schemas.billing import InvoiceLine, LineChange, PlanWindow

from .billing_models import BillingModels, billing_models, recorded
from .fold_context import CTX, T

NOV = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
DEC = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
LINE = InvoiceLine(
    number=1,
    kind="model",
    resource="m-1",
    unit="input_tokens",
    plan_id="plan-1",
    plan_version=2,
    window_start=NOV,
    window_end=DEC,
    quantity=1500,
    free=500,
    billable=1000,
    unit_price=Decimal("0.000002"),
    amount=Decimal("0.002000"),
    unpriced=False,
    events=3,
)
CHANGE = LineChange(
    kind="model",
    resource="m-1",
    unit="input_tokens",
    plan_version=2,
    window_start=NOV,
    quantity_before=1000,
    quantity_after=1500,
    amount_before=Decimal("0.001"),
    amount_after=Decimal("0.002"),
)


@pytest.fixture
async def billing_db() -> AsyncIterator[BillingModels]:
    async with billing_models() as models:
        yield models


def drafted(
    tenant_id: str,
    period: str,
    *,
    revision: int = 1,
    request_id: str = "req-1",
    invoice_id: str | None = None,
    total: Decimal = Decimal("5.00"),
) -> billing.InvoiceDrafted:
    return billing.InvoiceDrafted(
        tenant_id=tenant_id,
        invoice_id=invoice_id or f"inv-{tenant_id}-{period}",
        revision=revision,
        request_id=request_id,
        period=period,
        currency="EUR",
        lines=[LINE],
        subtotal=Decimal("0.002"),
        total=total,
        plans=[PlanWindow(plan_id="plan-1", version=2, start=NOV, end=DEC)],
        offsets={1: 10, 0: 7},
        usage_events=3,
        content_hash=f"hash-{revision}",
        changes=[CHANGE],
    )


def request(tenant_id: str, period: str) -> billing.InvoiceDraftRequested:
    return billing.InvoiceDraftRequested(
        tenant_id=tenant_id,
        invoice_id=f"inv-{tenant_id}-{period}",
        period=period,
        operator_id="op-1",
    )


# -- folds ----------------------------------------------------------------------------


def test_a_draft_request_is_recorded_as_requested_where_it_is_in_the_log() -> None:
    assert project(request("tenant-a", "2026-11"), CTX) == [
        Upsert(
            "draft_requests",
            ("request_id",),
            {
                "request_id": "evt-1",
                "tenant_id": "tenant-a",
                "invoice_id": "inv-tenant-a-2026-11",
                "period": "2026-11",
                "status": "requested",
                "billing_partition": 2,
                "billing_offset": 41,
                "requested_at": T,
            },
        )
    ]


def test_a_draft_adds_its_revision_moves_the_invoice_to_it_and_answers_its_request() -> None:
    data = drafted("tenant-a", "2026-11", revision=2, request_id="req-2")

    assert project(data, CTX) == [
        Upsert(
            "invoice_revisions",
            ("invoice_id", "revision"),
            {
                "invoice_id": "inv-tenant-a-2026-11",
                "revision": 2,
                "tenant_id": "tenant-a",
                "request_id": "req-2",
                "period": "2026-11",
                "currency": "EUR",
                "subtotal": Decimal("0.002"),
                "total": Decimal("5.00"),
                "lines": [
                    {
                        "number": 1,
                        "kind": "model",
                        "resource": "m-1",
                        "unit": "input_tokens",
                        "plan_id": "plan-1",
                        "plan_version": 2,
                        "window_start": "2026-11-01T00:00:00Z",
                        "window_end": "2026-12-01T00:00:00Z",
                        "quantity": 1500,
                        "free": 500,
                        "billable": 1000,
                        "unit_price": "0.000002",
                        "amount": "0.002000",
                        "unpriced": False,
                        "events": 3,
                    }
                ],
                "plans": [
                    {
                        "plan_id": "plan-1",
                        "version": 2,
                        "start": "2026-11-01T00:00:00Z",
                        "end": "2026-12-01T00:00:00Z",
                    }
                ],
                "offsets": {"0": 7, "1": 10},
                "usage_events": 3,
                "content_hash": "hash-2",
                "changes": [
                    {
                        "kind": "model",
                        "resource": "m-1",
                        "unit": "input_tokens",
                        "plan_version": 2,
                        "window_start": "2026-11-01T00:00:00Z",
                        "quantity_before": 1000,
                        "quantity_after": 1500,
                        "amount_before": "0.001",
                        "amount_after": "0.002",
                    }
                ],
                "event_id": "evt-1",
                "drafted_at": T,
            },
        ),
        Upsert(
            "invoices",
            ("invoice_id",),
            {
                "invoice_id": "inv-tenant-a-2026-11",
                "tenant_id": "tenant-a",
                "period": "2026-11",
                "currency": "EUR",
                "revision": 2,
                "total": Decimal("5.00"),
                "content_hash": "hash-2",
                "drafted_at": T,
            },
            overwrite=("revision", "total", "content_hash", "drafted_at"),
        ),
        Update("draft_requests", {"request_id": "req-2"}, {"status": "drafted", "revision": 2}),
        Notify("draft:req-2"),
    ]


def test_a_rejected_draft_answers_its_request_with_the_code() -> None:
    data = billing.InvoiceDraftRejected(
        tenant_id="tenant-a",
        invoice_id="inv-1",
        request_id="req-3",
        code="PLAN_NOT_FOUND",
        detail="plan-1 v9",
    )

    assert project(data, CTX) == [
        Update(
            "draft_requests",
            {"request_id": "req-3"},
            {"status": "rejected", "code": "PLAN_NOT_FOUND", "detail": "plan-1 v9"},
        ),
        Notify("draft:req-3"),
    ]


# -- queries over the store -----------------------------------------------------------


def at(n: int) -> datetime.datetime:
    return datetime.datetime(2026, 12, 2, 9, tzinfo=datetime.UTC) + datetime.timedelta(minutes=n)


async def test_an_invoice_shows_its_latest_revision_and_every_request_its_outcome(
    billing_db: BillingModels,
) -> None:
    first, second, third = (recorded(request("a", "2026-11"), at(n)) for n in (0, 2, 4))
    rejected = billing.InvoiceDraftRejected(
        tenant_id="a",
        invoice_id="inv-a-2026-11",
        request_id=third.id,
        code="PLAN_NOT_FOUND",
        detail="plan-1 v9",
    )
    await billing_db.apply(
        first,
        recorded(drafted("a", "2026-11", revision=1, request_id=first.id), at(1)),
        second,
        recorded(
            drafted("a", "2026-11", revision=2, request_id=second.id, total=Decimal("7.5")), at(3)
        ),
        third,
        recorded(rejected, at(5)),
    )
    db = billing_db.db

    invoice = await invoices.invoice(db, "a", "inv-a-2026-11")
    assert invoice is not None
    assert (invoice.revision, invoice.total, invoice.content_hash, invoice.drafted_at) == (
        2,
        Decimal("7.5"),
        "hash-2",
        at(3),
    )
    assert await invoices.invoice(db, "b", "inv-a-2026-11") is None
    assert await invoices.invoice(db, ALL_TENANTS, "inv-a-2026-11") == invoice
    revisions = await invoices.revisions(db, "a", "inv-a-2026-11")
    assert [(r.revision, r.request_id, r.total) for r in revisions] == [
        (1, first.id, Decimal("5.00")),
        (2, second.id, Decimal("7.5")),
    ]
    assert (revisions[1].lines, revisions[1].changes, revisions[1].offsets) == (
        [LINE],
        [CHANGE],
        {0: 7, 1: 10},
    )
    outcomes = [await invoices.draft_request(db, "a", r.id) for r in (first, second, third)]
    assert [
        (o.status, o.revision, o.code, o.billing_offset) for o in outcomes if o is not None
    ] == [
        (DraftStatus.DRAFTED, 1, None, 0),
        (DraftStatus.DRAFTED, 2, None, 2),
        (DraftStatus.REJECTED, None, "PLAN_NOT_FOUND", 4),
    ]


async def test_drafted_periods_are_those_a_change_from_an_instant_would_price_again(
    billing_db: BillingModels,
) -> None:
    await billing_db.apply(
        recorded(drafted("a", "2026-10"), at(0)),
        recorded(drafted("a", "2026-11"), at(1)),
        recorded(drafted("a", "2026-11", revision=2), at(2)),
        recorded(drafted("a", "2027-01"), at(3)),
        recorded(request("a", "2026-12"), at(4)),  # requested, never drafted
        recorded(drafted("b", "2026-12"), at(5)),
        recorded(drafted("a", "9999-12"), at(6)),  # written by another producer:
        recorded(drafted("a", "Nov 2026"), at(7)),  # no month a plan change reprices
    )

    instants = [
        datetime.datetime(2026, 10, 31, 23, 59, tzinfo=datetime.UTC),
        NOV,
        datetime.datetime(2026, 11, 15, tzinfo=datetime.UTC),
        DEC,
        datetime.datetime(2027, 2, 1, tzinfo=datetime.UTC),
    ]

    periods = [await invoices.drafted_periods(billing_db.db, "a", since) for since in instants]

    assert periods == [
        ["2026-10", "2026-11", "2027-01"],
        ["2026-11", "2027-01"],  # October ends as November begins: not priced again
        ["2026-11", "2027-01"],
        ["2027-01"],
        [],
    ]
