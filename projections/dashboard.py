"""The operators' view: what ``/dashboard`` reads, across tenants, from the core and
billing read models. Every query is bounded: by a time window the caller chooses from a
few, and by a page size; none reads a whole table.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any, Literal

from .rows import ALL_TENANTS, Reader, Row
from .turns import TurnRow

# The windows the overview offers, in minutes.
WINDOWS = {"15m": 15, "1h": 60, "6h": 360, "24h": 1440}
TurnFilter = Literal["completed", "failed", "cancelled", "rejected", "running"]


class MinuteRow(Row):
    minute: datetime.datetime
    completed: int
    failed: int
    cancelled: int


class LatencyRow(Row):
    finished: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None


class TenantTurnsRow(Row):
    tenant_id: str
    name: str
    turns: int
    failed: int
    input_tokens: int
    output_tokens: int


class FailureRow(Row):
    error_code: str
    turns: int


class TurnListRow(Row):
    turn_id: str
    tenant_id: str
    tenant_name: str | None
    session_id: str
    agent_id: str | None
    status: str
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
    kind: str
    resource: str
    unit: str
    quantity: int


class InvoiceListRow(Row):
    tenant_id: str
    invoice_id: str
    period: str
    revision: int
    currency: str
    total: Decimal
    drafted_at: datetime.datetime


async def turns_per_minute(db: Reader, since: datetime.datetime) -> list[MinuteRow]:
    """Turns that ended in each minute since ``since``, by how they ended."""
    return await db.rows(
        MinuteRow,
        ALL_TENANTS,
        "SELECT date_trunc('minute', finished_at) AS minute,"
        " count(*) FILTER (WHERE status = 'completed') AS completed,"
        " count(*) FILTER (WHERE status = 'failed') AS failed,"
        " count(*) FILTER (WHERE status = 'cancelled') AS cancelled"
        " FROM {s}.turns WHERE finished_at >= %s GROUP BY 1 ORDER BY 1",
        since,
    )


async def latency(db: Reader, since: datetime.datetime) -> LatencyRow:
    """How many turns ended since ``since``, how many failed, and the p50 and p99 of
    their time from request to end (turns rejected at once aside)."""
    row = await db.row(
        LatencyRow,
        ALL_TENANTS,
        # Both percentiles from one sort.
        "SELECT finished, failed, p[1] * 1000 AS p50_ms, p[2] * 1000 AS p99_ms FROM ("
        " SELECT count(*) AS finished, count(*) FILTER (WHERE status = 'failed') AS failed,"
        " percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM finished_at - requested_at)) AS p"
        " FROM {s}.turns WHERE finished_at >= %s AND status <> 'rejected') summed",
        since,
    )
    assert row is not None  # an aggregate has one row
    return row


async def tenants_since(db: Reader, since: datetime.datetime, limit: int) -> list[TenantTurnsRow]:
    """The busiest tenants since ``since``: turns ended, failures and tokens."""
    return await db.rows(
        TenantTurnsRow,
        ALL_TENANTS,
        # Counted first, named after: the join then touches only the tenants shown.
        "SELECT t.tenant_id, coalesce(n.display_name, t.tenant_id) AS name, t.turns,"
        " t.failed, t.input_tokens, t.output_tokens FROM ("
        " SELECT tenant_id, count(*) AS turns, count(*) FILTER (WHERE status = 'failed')"
        " AS failed, coalesce(sum(input_tokens), 0)::bigint AS input_tokens,"
        " coalesce(sum(output_tokens), 0)::bigint AS output_tokens"
        " FROM {s}.turns WHERE finished_at >= %s GROUP BY tenant_id"
        " ORDER BY turns DESC, tenant_id LIMIT %s) t"
        " LEFT JOIN {s}.tenants n ON n.tenant_id = t.tenant_id"
        " ORDER BY t.turns DESC, t.tenant_id",
        since,
        limit,
    )


async def failures(db: Reader, since: datetime.datetime, limit: int) -> list[FailureRow]:
    return await db.rows(
        FailureRow,
        ALL_TENANTS,
        "SELECT coalesce(error_code, 'UNKNOWN') AS error_code, count(*) AS turns"
        " FROM {s}.turns WHERE finished_at >= %s AND status = 'failed'"
        " GROUP BY 1 ORDER BY turns DESC, error_code LIMIT %s",
        since,
        limit,
    )


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
    if status == "running":
        where.append("t.status IN ('accepted', 'running', 'requested')")
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
        "SELECT tenant_id, kind, resource, unit, sum(quantity)::bigint AS quantity"
        " FROM {s}.usage_daily WHERE tenant_id = ANY(%s) AND day >= %s AND day < %s"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        tenant_ids,
        start,
        end,
    )


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


async def command_outcomes(db: Reader, command_ids: list[str]) -> dict[str, str]:
    """What became of the given commands (``agent_created``, ``rejected``, …), by id."""
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
    outcome: str


class ModelUsageRow(Row):
    model: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


async def models_on(billing: Reader, day: datetime.date, limit: int) -> list[ModelUsageRow]:
    """Tokens of ``day`` per model, across tenants (the usage records)."""
    return await billing.rows(
        ModelUsageRow,
        ALL_TENANTS,
        "SELECT resource AS model,"
        " coalesce(sum(quantity) FILTER (WHERE unit = 'input_tokens'), 0)::bigint"
        " AS input_tokens,"
        " coalesce(sum(quantity) FILTER (WHERE unit = 'cached_input_tokens'), 0)::bigint"
        " AS cached_input_tokens,"
        " coalesce(sum(quantity) FILTER (WHERE unit = 'output_tokens'), 0)::bigint"
        " AS output_tokens"
        " FROM {s}.usage_daily WHERE day = %s AND kind = 'model'"
        " GROUP BY resource ORDER BY output_tokens DESC, resource LIMIT %s",
        day,
        limit,
    )
