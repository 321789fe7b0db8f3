"""Read models of invoice drafts: each invoice with its latest revision, every revision
with its lines, and the draft requests with what became of them."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from enum import StrEnum
from typing import Any

from schemas import billing
from schemas.billing import InvoiceLine, LineChange, PlanWindow, PricePlan, period_bounds
from schemas.errors import DomainError, ErrorCode

from . import plans
from .ops import Context, Notify, Op, Update, Upsert, folds
from .pricing import Assignment, Draft, UsageItem, price
from .rows import Reader, Row, scoped
from .tenant_plans import TenantPlans
from .usage import LedgerRow


class DraftStatus(StrEnum):
    REQUESTED = "requested"
    DRAFTED = "drafted"
    REJECTED = "rejected"


class InvoiceRow(Row):
    invoice_id: str
    tenant_id: str
    period: str
    currency: str
    revision: int
    total: Decimal
    content_hash: str
    drafted_at: datetime.datetime


class RevisionRow(Row):
    invoice_id: str
    revision: int
    tenant_id: str
    request_id: str
    period: str
    currency: str
    subtotal: Decimal
    total: Decimal
    lines: list[InvoiceLine]
    plans: list[PlanWindow]
    offsets: dict[int, int]
    usage_events: int
    content_hash: str
    changes: list[LineChange]
    drafted_at: datetime.datetime


class DraftRequestRow(Row):
    request_id: str
    tenant_id: str
    invoice_id: str
    period: str
    status: DraftStatus
    revision: int | None
    code: str | None
    detail: str | None
    billing_partition: int
    billing_offset: int
    requested_at: datetime.datetime


# -- folds ----------------------------------------------------------------------------


@folds(billing.InvoiceDraftRequested)
def _requested(data: billing.InvoiceDraftRequested, ctx: Context) -> list[Op]:
    row = {
        "request_id": ctx.event_id,
        "tenant_id": data.tenant_id,
        "invoice_id": data.invoice_id,
        "period": data.period,
        "status": DraftStatus.REQUESTED.value,
        "billing_partition": ctx.partition,
        "billing_offset": ctx.offset,
        "requested_at": ctx.time,
    }
    return [Upsert("draft_requests", ("request_id",), row)]


@folds(billing.InvoiceDrafted)
def _drafted(data: billing.InvoiceDrafted, ctx: Context) -> list[Op]:
    summary = {
        "invoice_id": data.invoice_id,
        "tenant_id": data.tenant_id,
        "period": data.period,
        "currency": data.currency,
        "revision": data.revision,
        "total": data.total,
        "content_hash": data.content_hash,
        "drafted_at": ctx.time,
    }
    revision = {
        "invoice_id": data.invoice_id,
        "revision": data.revision,
        "tenant_id": data.tenant_id,
        "request_id": data.request_id,
        "period": data.period,
        "currency": data.currency,
        "subtotal": data.subtotal,
        "total": data.total,
        "lines": [line.model_dump(mode="json") for line in data.lines],
        "plans": [p.model_dump(mode="json") for p in data.plans],
        "offsets": {str(p): end for p, end in sorted(data.offsets.items())},
        "usage_events": data.usage_events,
        "content_hash": data.content_hash,
        "changes": [c.model_dump(mode="json") for c in data.changes],
        "event_id": ctx.event_id,
        "drafted_at": ctx.time,
    }
    status = {"status": DraftStatus.DRAFTED.value, "revision": data.revision}
    return [
        Upsert("invoice_revisions", ("invoice_id", "revision"), revision),
        Upsert(
            "invoices",
            ("invoice_id",),
            summary,
            overwrite=("revision", "total", "content_hash", "drafted_at"),
        ),
        Update("draft_requests", {"request_id": data.request_id}, status),
        Notify(f"draft:{data.request_id}"),
    ]


@folds(billing.InvoiceDraftRejected)
def _rejected(data: billing.InvoiceDraftRejected, ctx: Context) -> list[Op]:
    status = {"status": DraftStatus.REJECTED.value, "code": data.code, "detail": data.detail}
    return [
        Update("draft_requests", {"request_id": data.request_id}, status),
        Notify(f"draft:{data.request_id}"),
    ]


# -- queries --------------------------------------------------------------------------
# ``tenant_id`` is the tenant asking, or ``ALL_TENANTS`` for an operator.


def _offsets(offsets: dict[int, int]) -> str:
    """Offsets as the JSON object the queries compare a ledger row's position with."""
    return json.dumps({str(p): end for p, end in offsets.items()})


async def invoice(db: Reader, tenant_id: str, invoice_id: str) -> InvoiceRow | None:
    where, params = scoped(tenant_id, "invoice_id = %s", [invoice_id])
    return await db.row(
        InvoiceRow, tenant_id, f"SELECT * FROM {{s}}.invoices WHERE {where}", *params
    )


async def invoices(
    db: Reader, tenant_id: str, limit: int, after: tuple[str, str] | None
) -> list[InvoiceRow]:
    """Invoices by period, then id; a page after (period, invoice_id)."""
    where, params = scoped(tenant_id, "true", [])
    if after is not None:
        where += " AND (period, invoice_id) > (%s, %s)"
        params.extend(after)
    return await db.rows(
        InvoiceRow,
        tenant_id,
        f"SELECT * FROM {{s}}.invoices WHERE {where} ORDER BY period, invoice_id LIMIT %s",
        *params,
        limit,
    )


async def drafted_periods(db: Reader, tenant_id: str, since: datetime.datetime) -> list[str]:
    """The tenant's periods with a draft that end after ``since``: those a plan change
    effective from ``since`` would price again."""
    rows = await db.rows(
        _PeriodRow,
        tenant_id,
        "SELECT DISTINCT period FROM {s}.invoices WHERE tenant_id = %s ORDER BY period",
        tenant_id,
    )
    drafted = TenantPlans(tenant_id, drafted=frozenset(r.period for r in rows))
    return drafted.drafted_since(since)


class _PeriodRow(Row):
    period: str


async def revisions(db: Reader, tenant_id: str, invoice_id: str) -> list[RevisionRow]:
    where, params = scoped(tenant_id, "invoice_id = %s", [invoice_id])
    return await db.rows(
        RevisionRow,
        tenant_id,
        f"SELECT * FROM {{s}}.invoice_revisions WHERE {where} ORDER BY revision",
        *params,
    )


async def draft_request(db: Reader, tenant_id: str, request_id: str) -> DraftRequestRow | None:
    where, params = scoped(tenant_id, "request_id = %s", [request_id])
    return await db.row(
        DraftRequestRow, tenant_id, f"SELECT * FROM {{s}}.draft_requests WHERE {where}", *params
    )


async def line_usage(
    db: Reader,
    revision: RevisionRow,
    line: InvoiceLine,
    limit: int,
    after: tuple[datetime.datetime, str] | None,
) -> list[LedgerRow]:
    """The usage events a line of a revision counts, in order of use: the tenant's
    events of the line's (kind, resource, unit) used in its window, within the
    revision's offsets."""
    where = (
        "tenant_id = %s AND kind = %s AND resource = %s AND (quantities ->> %s)::numeric > 0"
        " AND used_at >= %s AND used_at < %s"
        " AND usage_offset < (%s::jsonb ->> usage_partition::text)::bigint"
    )
    params: list[Any] = [
        revision.tenant_id,
        line.kind,
        line.resource,
        line.unit,
        line.window_start,
        line.window_end,
        _offsets(revision.offsets),
    ]
    if after is not None:
        where += " AND (used_at, event_id) > (%s, %s)"
        params.extend(after)
    return await db.rows(
        LedgerRow,
        revision.tenant_id,
        f"SELECT * FROM {{s}}.usage_ledger WHERE {where} ORDER BY used_at, event_id LIMIT %s",
        *params,
        limit,
    )


async def price_draft(
    db: Reader,
    tenant_id: str,
    invoice_id: str,
    period: str,
    request: tuple[int, int] | None,
    offsets: dict[int, int] | None,
    *,
    replacing: tuple[str, PricePlan] | None = None,
) -> Draft:
    """The draft of a request at ``request`` (its billing partition and offset) over the
    usage within ``offsets``, from the read models: the invoicer's draft, and the same
    computed again to verify it. Without them: every assignment and every usage event
    so far. ``replacing`` prices the windows of that plan id with another plan
    (what-if)."""
    start, end = period_bounds(period)
    # What pricing reads of a ledger row (``pricing.UsageItem``, in its order), and no
    # more, as tuples: a draft prices a month of a tenant's usage, and every column or
    # check more is paid for every event of it.
    query, params = _drafted_query(
        "event_id, kind, resource, quantities, used_at", tenant_id, start, end, offsets
    )
    rows = await db.tuples(tenant_id, query, *params)
    assigned = await plans.assignments(db, tenant_id, before=request)
    versions: dict[tuple[str, int], PricePlan] = {}
    for a in assigned:
        found = await plans.plan(db, a.plan_id, a.version)
        if found is None:  # the gateway assigns published versions only
            raise DomainError(ErrorCode.PLAN_NOT_FOUND, f"{a.plan_id} v{a.version}")
        replaced = replacing is not None and replacing[0] == a.plan_id
        versions[(a.plan_id, a.version)] = replacing[1] if replacing and replaced else found.plan
    return price(
        tenant_id,
        invoice_id,
        period,
        (UsageItem(*r) for r in rows),
        [Assignment(a.effective_from, a.plan_id, a.version) for a in assigned],
        versions,
        offsets or {},
    )


def _drafted_query(
    columns: str,
    tenant_id: str,
    start: datetime.datetime,
    end: datetime.datetime,
    offsets: dict[int, int] | None,
) -> tuple[str, tuple[Any, ...]]:
    """The query of the tenant's usage events of [start, end) within ``offsets`` (None:
    all), as ``columns``: what a draft counts."""
    within = (
        ""
        if offsets is None
        else " AND usage_offset < coalesce((%s::jsonb ->> usage_partition::text)::bigint, 0)"
    )
    query = (
        f"SELECT {columns} FROM {{s}}.usage_ledger WHERE tenant_id = %s AND used_at >= %s"
        f" AND used_at < %s{within} ORDER BY used_at, event_id"
    )
    return query, (tenant_id, start, end, *(() if offsets is None else (_offsets(offsets),)))


async def drafted_usage(
    db: Reader,
    tenant_id: str,
    start: datetime.datetime,
    end: datetime.datetime,
    offsets: dict[int, int] | None,
) -> list[LedgerRow]:
    """The ledger rows a draft counts (``_drafted_query``)."""
    query, params = _drafted_query("*", tenant_id, start, end, offsets)
    return await db.rows(LedgerRow, tenant_id, query, *params)
