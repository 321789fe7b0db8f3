"""Read models of billing's configuration: operators (by key hash), price plan versions
and the tenants' plan assignments."""

from __future__ import annotations

import datetime
from typing import Any

from schemas import billing
from schemas.billing import PricePlan

from .ops import Context, Notify, Op, Upsert, folds
from .rows import Reader, Row


class PlanRow(Row):
    plan_id: str
    version: int
    currency: str
    plan: PricePlan
    published_at: datetime.datetime


class AssignmentRow(Row):
    tenant_id: str
    effective_from: datetime.datetime
    plan_id: str
    version: int
    billing_partition: int
    billing_offset: int
    assigned_at: datetime.datetime
    withdrawn_at: datetime.datetime | None = None


# -- folds ----------------------------------------------------------------------------


@folds(billing.OperatorCreated)
def _operator_created(data: billing.OperatorCreated, ctx: Context) -> list[Op]:
    row = {
        "operator_id": data.operator_id,
        "display_name": data.display_name,
        "key_id": data.key_id,
        "key_prefix": data.key_prefix,
        "key_hash": data.key_hash,
        "created_at": ctx.time,
    }
    return [Upsert("operators", ("operator_id",), row)]


@folds(billing.PricePlanPublished)
def _plan_published(data: billing.PricePlanPublished, ctx: Context) -> list[Op]:
    row = {
        "plan_id": data.plan_id,
        "version": data.version,
        "currency": data.plan.currency,
        "plan": data.plan.model_dump(mode="json"),
        "operator_id": data.operator_id,
        "published_at": ctx.time,
    }
    # A version is never rewritten: a second publication of it keeps the first.
    return [
        Upsert("price_plans", ("plan_id", "version"), row),
        Notify(f"plan:{data.plan_id}:{data.version}"),
    ]


@folds(billing.TenantPlanAssigned)
def _plan_assigned(data: billing.TenantPlanAssigned, ctx: Context) -> list[Op]:
    row = {
        "tenant_id": data.tenant_id,
        "effective_from": data.effective_from,
        "plan_id": data.plan_id,
        "version": data.version,
        "operator_id": data.operator_id,
        "billing_partition": ctx.partition,
        "billing_offset": ctx.offset,
        "assigned_at": ctx.time,
    }
    return [
        Upsert("plan_assignments", ("tenant_id", "effective_from"), row),
        Notify(f"assignment:{ctx.event_id}"),
    ]


@folds(billing.TenantPlanWithdrawn)
def _plan_withdrawn(data: billing.TenantPlanWithdrawn, ctx: Context) -> list[Op]:
    row = {
        "tenant_id": data.tenant_id,
        "effective_from": data.effective_from,
        "operator_id": data.operator_id,
        "billing_partition": ctx.partition,
        "billing_offset": ctx.offset,
        "withdrawn_at": ctx.time,
    }
    key = ("tenant_id", "effective_from", "billing_partition", "billing_offset")
    return [Upsert("plan_withdrawals", key, row), Notify(f"withdrawal:{ctx.event_id}")]


# -- queries --------------------------------------------------------------------------

# The withdrawals of assignment ``a``: those of its instant recorded after it (both are
# keyed by the tenant, so one partition's offsets order them). The first one counts.
WITHDRAWN = (
    "w.tenant_id = a.tenant_id AND w.effective_from = a.effective_from"
    " AND w.billing_offset > a.billing_offset"
)


async def operator_for_key_hash(db: Reader, key_hash: str) -> str | None:
    found: Any = await db.value(
        None, "SELECT operator_id FROM {s}.operators WHERE key_hash = %s", key_hash
    )
    return None if found is None else str(found)


async def operator_exists(db: Reader, operator_id: str) -> bool:
    found: Any = await db.value(
        None, "SELECT 1 FROM {s}.operators WHERE operator_id = %s", operator_id
    )
    return found is not None


async def plan(db: Reader, plan_id: str, version: int) -> PlanRow | None:
    return await db.row(
        PlanRow,
        None,
        "SELECT * FROM {s}.price_plans WHERE plan_id = %s AND version = %s",
        plan_id,
        version,
    )


async def plan_versions(db: Reader, plan_id: str) -> list[PlanRow]:
    return await db.rows(
        PlanRow, None, "SELECT * FROM {s}.price_plans WHERE plan_id = %s ORDER BY version", plan_id
    )


async def plans(db: Reader, limit: int, after: tuple[str, int] | None) -> list[PlanRow]:
    where = "WHERE (plan_id, version) > (%s, %s)" if after else ""
    return await db.rows(
        PlanRow,
        None,
        f"SELECT * FROM {{s}}.price_plans {where} ORDER BY plan_id, version LIMIT %s",
        *(after or ()),
        limit,
    )


async def assignments(
    db: Reader,
    tenant_id: str,
    *,
    before: tuple[int, int] | None = None,
    withdrawn: bool = False,
) -> list[AssignmentRow]:
    """The tenant's assignments in force, in order of effective time; with ``before``,
    as they stood before that (partition, offset) of the billing topic (recorded, and
    not withdrawn, before it); with ``withdrawn``, the withdrawn ones too."""
    first, where = WITHDRAWN, "a.tenant_id = %s"
    first_params: list[Any] = []
    params: list[Any] = [tenant_id]
    if before is not None:  # assignments are keyed by tenant, as requests are: one partition
        first += " AND w.billing_offset < %s"
        first_params.append(before[1])
        where += " AND a.billing_partition = %s AND a.billing_offset < %s"
        params.extend(before)
    if not withdrawn:
        where += " AND w.withdrawn_at IS NULL"
    return await db.rows(
        AssignmentRow,
        tenant_id,
        "SELECT a.*, w.withdrawn_at FROM {s}.plan_assignments a LEFT JOIN LATERAL"
        f" (SELECT withdrawn_at FROM {{s}}.plan_withdrawals w WHERE {first}"
        " ORDER BY w.billing_offset LIMIT 1) w ON true"
        f" WHERE {where} ORDER BY a.effective_from",
        *first_params,
        *params,
    )


async def tenants_on_plans(db: Reader, before: datetime.datetime) -> list[str]:
    """The tenants with a plan assigned effective before ``before``."""
    rows = await db.rows(
        _TenantRow,
        None,
        "SELECT DISTINCT tenant_id FROM {s}.plan_assignments a WHERE effective_from < %s"
        f" AND NOT EXISTS (SELECT FROM {{s}}.plan_withdrawals w WHERE {WITHDRAWN})"
        " ORDER BY tenant_id",
        before,
    )
    return [r.tenant_id for r in rows]


class _TenantRow(Row):
    tenant_id: str
