"""The operators' view: what ``/dashboard`` reads, across tenants, from the core and
billing read models (the figures per minute are ``activity``'s). Every query is bounded:
by a time window the caller chooses from a few, and by a page size; none reads a whole
table.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from schemas.billing import PricePlan
from schemas.errors import DomainError
from schemas.usage import Unit, UsageKind

from .outcomes import Outcome
from .plans import WITHDRAWN
from .pricing import list_cost
from .rows import ALL_TENANTS, Reader, Row
from .turns import TurnRow, TurnStatus

# The windows the overview offers, in minutes.
WINDOWS = {"15m": 15, "1h": 60, "6h": 360, "24h": 1440}
# The statuses the turns list is filtered by: ``running`` stands for every turn not
# finished (requested, accepted or running).
TurnFilter = Literal[
    TurnStatus.COMPLETED,
    TurnStatus.FAILED,
    TurnStatus.CANCELLED,
    TurnStatus.REJECTED,
    TurnStatus.RUNNING,
]
TURN_FILTERS: tuple[TurnStatus, ...] = get_args(TurnFilter)
_UNFINISHED_SQL = ", ".join(f"'{status}'" for status in TurnStatus if not status.finished)


class TurnListRow(Row):
    turn_id: str
    tenant_id: str
    tenant_name: str | None
    session_id: str
    agent_id: str | None
    status: TurnStatus
    error_code: str | None
    requested_at: datetime.datetime
    finished_at: datetime.datetime | None
    duration_ms: float | None
    steps: int
    input_tokens: int
    output_tokens: int


class TenantRow(Row):
    tenant_id: str
    display_name: str
    created_at: datetime.datetime


class UsageRow(Row):
    tenant_id: str
    kind: UsageKind
    resource: str
    unit: Unit
    quantity: int


class InvoiceListRow(Row):
    tenant_id: str
    invoice_id: str
    period: str
    revision: int
    currency: str
    total: Decimal
    drafted_at: datetime.datetime


async def turns_page(
    db: Reader,
    *,
    tenant_id: str | None,
    agent_id: str | None,
    status: TurnFilter | None,
    before: tuple[datetime.datetime, str] | None,
    limit: int,
) -> list[TurnListRow]:
    """The most recent turns first, filtered; a page of ``limit`` after the key
    (``requested_at``, ``turn_id``) ``before``."""
    where, params = ["TRUE"], list[Any]()
    if tenant_id:
        where.append("t.tenant_id = %s")
        params.append(tenant_id)
    if agent_id:
        where.append("s.agent_id = %s")
        params.append(agent_id)
    if status is TurnStatus.RUNNING:
        where.append(f"t.status IN ({_UNFINISHED_SQL})")
    elif status:
        where.append("t.status = %s")
        params.append(status)
    if before is not None:
        where.append("(t.requested_at, t.turn_id) < (%s, %s)")
        params.extend(before)
    return await db.rows(
        TurnListRow,
        ALL_TENANTS,
        "SELECT t.turn_id, t.tenant_id, n.display_name AS tenant_name, t.session_id,"
        " s.agent_id, t.status, t.error_code, t.requested_at, t.finished_at,"
        " extract(epoch FROM t.finished_at - t.requested_at) * 1000 AS duration_ms,"
        " t.steps, t.input_tokens, t.output_tokens"
        " FROM {s}.turns t LEFT JOIN {s}.sessions s ON s.session_id = t.session_id"
        " LEFT JOIN {s}.tenants n ON n.tenant_id = t.tenant_id"
        f" WHERE {' AND '.join(where)}"
        " ORDER BY t.requested_at DESC, t.turn_id DESC LIMIT %s",
        *params,
        limit,
    )


async def tenants_page(db: Reader, after: str | None, limit: int) -> list[TenantRow]:
    return await db.rows(
        TenantRow,
        ALL_TENANTS,
        "SELECT tenant_id, display_name, created_at FROM {s}.tenants"
        " WHERE tenant_id > %s ORDER BY tenant_id LIMIT %s",
        after or "",
        limit,
    )


async def usage_of(
    billing: Reader, tenant_ids: list[str], start: datetime.date, end: datetime.date
) -> list[UsageRow]:
    """Usage of days [start, end) of the given tenants, by kind, resource and unit."""
    return await billing.rows(
        UsageRow,
        ALL_TENANTS,
        "SELECT tenant_id, kind, resource, unit, sum(quantity) AS quantity"
        " FROM {s}.usage_daily WHERE tenant_id = ANY(%s) AND day >= %s AND day < %s"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        tenant_ids,
        start,
        end,
    )


class PlanInForce(Row):
    tenant_id: str
    plan: PricePlan


async def plans_in_force(
    billing: Reader, tenant_ids: list[str], at: datetime.datetime
) -> dict[str, PricePlan]:
    """The plan each of the given tenants is on at ``at`` (tenants on none left out)."""
    rows = await billing.rows(
        PlanInForce,
        ALL_TENANTS,
        "SELECT DISTINCT ON (a.tenant_id) a.tenant_id, p.plan FROM {s}.plan_assignments a"
        " JOIN {s}.price_plans p USING (plan_id, version)"
        " WHERE a.tenant_id = ANY(%s) AND a.effective_from <= %s"
        f" AND NOT EXISTS (SELECT FROM {{s}}.plan_withdrawals w WHERE {WITHDRAWN})"
        " ORDER BY a.tenant_id, a.effective_from DESC, a.billing_offset DESC",
        tenant_ids,
        at,
    )
    return {row.tenant_id: row.plan for row in rows}


async def spent_today(
    billing: Reader, tenant_ids: list[str], now: datetime.datetime
) -> dict[str, str]:
    """What each tenant's usage of today (UTC) costs at the rates of the plan it is on,
    before free allowances and minimums (``pricing.list_cost``), as "12.345678 USD";
    tenants on no plan are left out; a cost beyond what can be priced is its code."""
    if not tenant_ids:
        return {}
    today = now.date()
    used = await usage_of(billing, tenant_ids, today, today + datetime.timedelta(days=1))
    plans = await plans_in_force(billing, tenant_ids, now)
    by_tenant: dict[str, list[tuple[UsageKind, str, Unit, int]]] = {}
    for row in used:
        by_tenant.setdefault(row.tenant_id, []).append(
            (row.kind, row.resource, row.unit, row.quantity)
        )
    spent = {}
    for tenant, plan in plans.items():
        try:
            spent[tenant] = f"{list_cost(plan, by_tenant.get(tenant, []))} {plan.currency}"
        except DomainError as exc:  # a plan recorded before rates were bounded
            spent[tenant] = exc.code
    return spent


async def invoices_of(billing: Reader, tenant_ids: list[str], limit: int) -> list[InvoiceListRow]:
    """The latest invoice drafts of the given tenants, newest period first."""
    return await billing.rows(
        InvoiceListRow,
        ALL_TENANTS,
        "SELECT tenant_id, invoice_id, period, revision, currency, total, drafted_at"
        " FROM {s}.invoices WHERE tenant_id = ANY(%s)"
        " ORDER BY period DESC, tenant_id, invoice_id LIMIT %s",
        tenant_ids,
        limit,
    )


async def turn_anywhere(db: Reader, turn_id: str) -> TurnRow | None:
    """A turn of any tenant."""
    return await db.row(TurnRow, ALL_TENANTS, "SELECT * FROM {s}.turns WHERE turn_id = %s", turn_id)


async def trace_of(billing: Reader, turn_id: str) -> str | None:
    """The trace id a turn ran in, as its usage records name it (None before any)."""
    found = await billing.value(
        ALL_TENANTS,
        "SELECT trace_id FROM {s}.usage_ledger WHERE turn_id = %s AND trace_id <> '' LIMIT 1",
        turn_id,
    )
    return None if found is None else str(found)


async def command_outcomes(db: Reader, command_ids: list[str]) -> dict[str, Outcome]:
    """What the command handler decided on the given commands (accepted or rejected), by
    id; a command not decided yet is left out."""
    if not command_ids:
        return {}
    rows = await db.rows(
        OutcomeRow,
        ALL_TENANTS,
        "SELECT command_id, outcome FROM {s}.command_outcomes WHERE command_id = ANY(%s)",
        command_ids,
    )
    return {r.command_id: r.outcome for r in rows}


class OutcomeRow(Row):
    command_id: str
    outcome: Outcome
