"""Read models of usage: the ledger (one row per usage event, deduplicated by event id)
and its aggregates by tenant, day, agent and (kind, resource, unit)."""

from __future__ import annotations

import datetime
from typing import Any, Literal

from schemas import usage
from schemas.errors import DomainError, ErrorCode
from schemas.usage import UNITS, unbillable

from .ops import Add, Context, Op, Upsert, folds
from .rows import Reader, Row, scoped

# What ``usage_summary`` may group by, each a column of ``usage_daily``.
Dimension = Literal["tenant", "day", "agent", "kind", "resource", "unit"]
COLUMNS: dict[str, str] = {
    "tenant": "tenant_id",
    "day": "day",
    "agent": "agent_id",
    "kind": "kind",
    "resource": "resource",
    "unit": "unit",
}


class LedgerRow(Row):
    event_id: str
    tenant_id: str
    kind: str
    resource: str
    quantities: dict[str, int]
    used_at: datetime.datetime
    agent_id: str
    agent_version: int
    session_id: str
    turn_id: str
    step: int
    call_id: str
    trace_id: str
    usage_partition: int
    usage_offset: int


class UsageGroup(Row):
    """Usage summed over the dimensions not grouped by."""

    tenant_id: str | None = None
    day: datetime.date | None = None
    agent_id: str | None = None
    kind: str | None = None
    resource: str | None = None
    unit: str | None = None
    quantity: int
    events: int


# -- folds ----------------------------------------------------------------------------


@folds(usage.UsageRecordedV1)
def _recorded_v1(data: usage.UsageRecordedV1, ctx: Context) -> list[Op]:
    return _recorded(data.upcast(ctx.time), ctx)


@folds(usage.UsageRecorded)
def _recorded(data: usage.UsageRecorded, ctx: Context) -> list[Op]:
    reason = unbillable(data)
    if reason is not None:  # set aside: the record goes to the dead-letter topic
        raise DomainError(ErrorCode.USAGE_UNBILLABLE, reason)
    row = {
        "event_id": ctx.event_id,
        "tenant_id": data.tenant_id,
        "kind": data.kind,
        "resource": data.resource,
        "quantities": dict(sorted(data.quantities.items())),
        "used_at": data.used_at,
        "agent_id": data.agent_id,
        "agent_version": data.agent_version,
        "session_id": data.session_id,
        "turn_id": data.turn_id,
        "step": data.step,
        "call_id": data.call_id,
        "trace_id": data.trace_id,
        "usage_partition": ctx.partition,
        "usage_offset": ctx.offset,
    }
    day = data.used_at.astimezone(datetime.UTC).date()
    ops: list[Op] = [Upsert("usage_ledger", ("event_id",), row)]
    for unit in UNITS:
        quantity = data.quantities.get(unit, 0)
        if quantity:
            daily = {
                "tenant_id": data.tenant_id,
                "day": day,
                "agent_id": data.agent_id,
                "kind": data.kind,
                "resource": data.resource,
                "unit": unit,
                "quantity": quantity,
                "events": 1,
            }
            key = ("tenant_id", "day", "agent_id", "kind", "resource", "unit")
            ops.append(Add("usage_daily", key, daily, ("quantity", "events")))
    return ops


# -- queries --------------------------------------------------------------------------


async def usage_summary(
    db: Reader,
    tenant_id: str,
    start: datetime.date,
    end: datetime.date,
    group_by: list[Dimension],
    limit: int,
    after: list[Any] | None,
) -> list[UsageGroup]:
    """Usage of days [start, end) summed by ``group_by``, in the order of its key; a
    page of ``limit`` groups after the key ``after``. ``tenant_id`` is the tenant, or
    ``ALL_TENANTS`` (an operator's)."""
    columns = [COLUMNS[d] for d in group_by]
    where, params = scoped(tenant_id, "day >= %s AND day < %s", [start, end])
    selected = ", ".join(columns)
    if after is not None and columns:
        where += f" AND ({selected}) > ({', '.join(['%s'] * len(columns))})"
        params.extend(after)
    group = f" GROUP BY {selected} ORDER BY {selected}" if columns else ""
    query = (
        f"SELECT {selected + ', ' if columns else ''}"
        "coalesce(sum(quantity), 0) AS quantity,"
        " coalesce(sum(events), 0)::bigint AS events"
        f" FROM {{s}}.usage_daily WHERE {where}{group} LIMIT %s"
    )
    rows = await db.rows(UsageGroup, tenant_id, query, *params, limit)
    return [r for r in rows if r.events]  # no usage at all sums to one empty row


async def ledger_page(
    db: Reader,
    tenant_id: str,
    start: datetime.datetime,
    end: datetime.datetime,
    limit: int,
    after: tuple[datetime.datetime, str] | None,
) -> list[LedgerRow]:
    """Usage events of [start, end) in order of use, after (used_at, event_id)."""
    where, params = scoped(tenant_id, "used_at >= %s AND used_at < %s", [start, end])
    if after is not None:
        where += " AND (used_at, event_id) > (%s, %s)"
        params.extend(after)
    query = f"SELECT * FROM {{s}}.usage_ledger WHERE {where} ORDER BY used_at, event_id LIMIT %s"
    return await db.rows(LedgerRow, tenant_id, query, *params, limit)


async def ledger_event(db: Reader, tenant_id: str, event_id: str) -> LedgerRow | None:
    """The ledger's row of one usage event, if it was applied."""
    return await db.row(
        LedgerRow,
        tenant_id,
        "SELECT * FROM {s}.usage_ledger WHERE tenant_id = %s AND event_id = %s",
        tenant_id,
        event_id,
    )
