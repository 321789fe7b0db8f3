"""What became of each billing request (plans, operators and re-drives): accepted (the change it
caused) or rejected (with its code). The operator's HTTP request waits on this row,
notified by key ``billing-command:<request id>``, as a core command waits on its
outcome."""

from __future__ import annotations

from schemas import billing, billing_requests

from .ops import Context, Notify, Op, Upsert, folds
from .rows import ALL_TENANTS, Reader, Row


class BillingOutcomeRow(Row):
    command_id: str
    tenant_id: str
    event_id: str
    accepted: bool
    code: str | None
    detail: str | None
    version: int | None


def notification(command_id: str) -> str:
    return f"billing-command:{command_id}"


def _outcome(ctx: Context, command_id: str, **values: object) -> list[Op]:
    row: dict[str, object] = {
        "command_id": command_id,
        "tenant_id": ctx.tenant_id,
        "event_id": ctx.event_id,
        "accepted": True,
        "code": None,
        "detail": None,
        "version": None,
        **values,
    }
    # The first outcome of a request counts; a decider repeating itself writes the same.
    return [Upsert("billing_outcomes", ("command_id",), row), Notify(notification(command_id))]


Accepted = (
    billing.PricePlanPublished
    | billing.TenantPlanAssigned
    | billing.TenantPlanWithdrawn
    | billing.DeadLetterRedriven
    | billing.OperatorCreated
)


@folds(
    billing.PricePlanPublished,
    billing.TenantPlanAssigned,
    billing.TenantPlanWithdrawn,
    billing.DeadLetterRedriven,
    billing.OperatorCreated,
)
def _accepted(data: Accepted, ctx: Context) -> list[Op]:
    if ctx.causation_id == ctx.event_id:
        return []  # recorded with no request behind it (as gateways did before deciders)
    version = data.version if isinstance(data, billing.PricePlanPublished) else None
    return _outcome(ctx, ctx.causation_id, version=version)


@folds(billing_requests.BillingCommandRejected)
def _rejected(data: billing_requests.BillingCommandRejected, ctx: Context) -> list[Op]:
    return _outcome(ctx, data.command_id, accepted=False, code=data.code, detail=data.detail)


async def outcome(db: Reader, command_id: str) -> BillingOutcomeRow | None:
    return await db.row(
        BillingOutcomeRow,
        ALL_TENANTS,
        "SELECT * FROM {s}.billing_outcomes WHERE command_id = %s",
        command_id,
    )
