"""The platform operator's resources: price plans, the tenants' plan assignments, and
usage recorded from outside. Only an operator's key is accepted here (403 otherwise)."""

from __future__ import annotations

import datetime
import hashlib
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from projections import invoices, plans, tenants, usage
from projections.plans import AssignmentRow, PlanRow
from schemas import billing
from schemas.billing import PLATFORM, PricePlan
from schemas.envelope import derived_id
from schemas.errors import ErrorCode
from schemas.usage import UsageRecorded, unbillable

from ..billing_models import (
    AssignmentPublic,
    PlanAssign,
    PlanId,
    PlanWithdraw,
    PricePlanCreate,
    PricePlanPublic,
    ReplayCreate,
    ReplayPublic,
    UsageCreate,
    UsageRecordedPublic,
)
from ..connections import Gateway
from ..deps import GatewayDep, OperatorDep
from ..fields import Id, Version
from ..models import Page
from ..openapi import documented
from ..pagination import Key, page
from ..problems import ProblemError

router = APIRouter(prefix="/v1/admin", tags=["admin"])
APPLIED_WAIT_S = 10.0
_ON_BILLING = "`{}` on `agentlog.billing`, keyed by the {}"


def plan_public(row: PlanRow) -> PricePlanPublic:
    return PricePlanPublic(
        plan_id=row.plan_id,
        version=row.version,
        published_at=row.published_at,
        **row.plan.model_dump(),
    )


def _assignment_public(row: AssignmentRow) -> AssignmentPublic:
    return AssignmentPublic.model_validate(row, from_attributes=True)


def _applied(found: object, what: str) -> None:
    if found is None:
        raise ProblemError(ErrorCode.UNAVAILABLE, f"the {what} was recorded but not applied yet")


@router.post(
    "/price-plans",
    status_code=201,
    response_model=PricePlanPublic,
    **documented(
        "Publish a price plan version",
        "Publishes the next version of the plan (version 1 for a new plan id). A version"
        " never changes once published: a change is a new version, and usage is priced by"
        " the version in force when it was used.",
        records=_ON_BILLING.format("PricePlanPublished", "plan"),
        problems=[
            ErrorCode.CURRENCY_UNKNOWN,
            ErrorCode.PLAN_VERSION_CONFLICT,
            ErrorCode.VALIDATION_FAILED,
        ],
    ),
)
async def publish_plan(
    body: PricePlanCreate, operator_id: OperatorDep, gw: GatewayDep
) -> PricePlanPublic:
    if not body.known_currency():
        raise ProblemError(ErrorCode.CURRENCY_UNKNOWN, f"unknown currency {body.currency!r}")
    versions = await plans.plan_versions(gw.billing_db, body.plan_id)
    version = versions[-1].version + 1 if versions else 1
    plan = PricePlan(**body.model_dump(exclude={"plan_id"}))
    fact = billing.PricePlanPublished(
        plan_id=body.plan_id, version=version, plan=plan, operator_id=operator_id
    )
    # One id per plan version: two publishers racing for a version record one event.
    await gw.record(PLATFORM, fact, id=derived_id(body.plan_id, f"plan/{version}"))
    row = await gw.billing_waiter.until(
        f"plan:{body.plan_id}:{version}",
        lambda: plans.plan(gw.billing_db, body.plan_id, version),
        APPLIED_WAIT_S,
    )
    _applied(row, "plan")
    assert row is not None
    if row.plan != plan:
        raise ProblemError(
            ErrorCode.PLAN_VERSION_CONFLICT, f"version {version} was published meanwhile"
        )
    return plan_public(row)


_BY_PLAN: Key[tuple[str, int]] = Key(tuple[PlanId, Version])


@router.get(
    "/price-plans",
    response_model=Page,
    **documented("List price plans", "Every version of every plan, by plan id and version."),
)
async def list_plans(
    operator_id: OperatorDep,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page:
    rows = await plans.plans(gw.billing_db, limit + 1, _BY_PLAN.after(cursor))
    return page(rows, limit, lambda r: [r.plan_id, r.version], plan_public)


@router.get(
    "/price-plans/{plan_id}",
    response_model=list[PricePlanPublic],
    **documented(
        "Read a price plan", "Every version of the plan.", problems=[ErrorCode.PLAN_NOT_FOUND]
    ),
)
async def read_plan(plan_id: Id, operator_id: OperatorDep, gw: GatewayDep) -> list[PricePlanPublic]:
    rows = await plans.plan_versions(gw.billing_db, plan_id)
    if not rows:
        raise ProblemError(ErrorCode.PLAN_NOT_FOUND, f"no plan {plan_id}")
    return [plan_public(r) for r in rows]


async def tenant_or_404(gw: Gateway, tenant_id: str) -> None:
    if not await tenants.tenant_exists(gw.db, tenant_id):
        raise ProblemError(ErrorCode.TENANT_NOT_FOUND, f"no tenant {tenant_id}")


@router.post(
    "/tenants/{tenant_id}/plan",
    status_code=201,
    response_model=AssignmentPublic,
    **documented(
        "Assign a price plan to a tenant",
        "The tenant is on this plan version from `effective_from` until its next"
        " assignment. An assignment is never rewritten: one must start later than the"
        " tenant's latest in force, and charge in the same currency. One that would price"
        " a period already drafted again is refused unless `reprice_drafted` is true; the"
        " fact then names those periods.",
        records=_ON_BILLING.format("TenantPlanAssigned", "tenant"),
        problems=[
            ErrorCode.TENANT_NOT_FOUND,
            ErrorCode.PLAN_NOT_FOUND,
            ErrorCode.PLAN_ASSIGNMENT_OVERLAPS,
            ErrorCode.CURRENCY_MISMATCH,
            ErrorCode.PERIOD_DRAFTED,
        ],
    ),
)
async def assign_plan(
    tenant_id: Id, body: PlanAssign, operator_id: OperatorDep, gw: GatewayDep
) -> AssignmentPublic:
    await tenant_or_404(gw, tenant_id)
    row = await plans.plan(gw.billing_db, body.plan_id, body.version)
    if row is None:
        raise ProblemError(ErrorCode.PLAN_NOT_FOUND, f"no plan {body.plan_id} v{body.version}")
    every = await plans.assignments(gw.billing_db, tenant_id, withdrawn=True)
    existing = [a for a in every if a.withdrawn_at is None]
    if existing and body.effective_from <= existing[-1].effective_from:
        raise ProblemError(
            ErrorCode.PLAN_ASSIGNMENT_OVERLAPS,
            f"the tenant's latest assignment is effective from {existing[-1].effective_from}",
        )
    if any(a.effective_from == body.effective_from for a in every):
        raise ProblemError(
            ErrorCode.PLAN_ASSIGNMENT_OVERLAPS,
            f"an assignment effective from {body.effective_from} was withdrawn; an instant"
            " names one assignment for good: choose another",
        )
    if existing:
        latest = await plans.plan(gw.billing_db, existing[-1].plan_id, existing[-1].version)
        if latest is not None and latest.currency != row.currency:
            raise ProblemError(
                ErrorCode.CURRENCY_MISMATCH,
                f"the tenant is billed in {latest.currency}, the plan charges {row.currency}",
            )
    fact = billing.TenantPlanAssigned(
        tenant_id=tenant_id,
        plan_id=body.plan_id,
        version=body.version,
        effective_from=body.effective_from,
        operator_id=operator_id,
        repriced_periods=await _repriced(gw, tenant_id, body.effective_from, body.reprice_drafted),
    )
    env = await gw.record(tenant_id, fact)

    async def applied() -> AssignmentRow | None:
        rows = await plans.assignments(gw.billing_db, tenant_id, withdrawn=True)
        return next((r for r in rows if r.effective_from == body.effective_from), None)

    assigned = await gw.billing_waiter.until(f"assignment:{env.id}", applied, APPLIED_WAIT_S)
    _applied(assigned, "assignment")
    assert assigned is not None
    if (assigned.plan_id, assigned.version) != (body.plan_id, body.version):
        raise ProblemError(
            ErrorCode.PLAN_ASSIGNMENT_OVERLAPS,
            f"another assignment effective from {body.effective_from} was recorded first",
        )
    return _assignment_public(assigned)


async def _repriced(
    gw: Gateway, tenant_id: str, since: datetime.datetime, allowed: bool
) -> list[str]:
    """The drafted periods a change of plan effective from ``since`` prices again;
    refused unless the operator allowed it."""
    periods = await invoices.drafted_periods(gw.billing_db, tenant_id, since)
    if periods and not allowed:
        raise ProblemError(
            ErrorCode.PERIOD_DRAFTED,
            f"drafted periods would be priced again: {', '.join(periods)}; send"
            " reprice_drafted: true to do so",
            periods=periods,
        )
    return periods


@router.post(
    "/tenants/{tenant_id}/plan/withdrawals",
    status_code=201,
    response_model=AssignmentPublic,
    **documented(
        "Withdraw a tenant's plan assignment",
        "The assignment effective from `effective_from` no longer counts from now on (drafts"
        " requested before count it still); the assignment before it is in force in its"
        " stead. This repairs assignments that should never have been accepted, such as two"
        " in different currencies (`docs/operations.md`). One that would price a period"
        " already drafted again is refused unless `reprice_drafted` is true.",
        records=_ON_BILLING.format("TenantPlanWithdrawn", "tenant"),
        problems=[
            ErrorCode.TENANT_NOT_FOUND,
            ErrorCode.PLAN_ASSIGNMENT_NOT_FOUND,
            ErrorCode.PERIOD_DRAFTED,
        ],
    ),
)
async def withdraw_plan(
    tenant_id: Id, body: PlanWithdraw, operator_id: OperatorDep, gw: GatewayDep
) -> AssignmentPublic:
    await tenant_or_404(gw, tenant_id)
    existing = await plans.assignments(gw.billing_db, tenant_id)
    if not any(a.effective_from == body.effective_from for a in existing):
        raise ProblemError(
            ErrorCode.PLAN_ASSIGNMENT_NOT_FOUND,
            f"the tenant has no assignment in force effective from {body.effective_from}",
        )
    fact = billing.TenantPlanWithdrawn(
        tenant_id=tenant_id,
        effective_from=body.effective_from,
        operator_id=operator_id,
        repriced_periods=await _repriced(gw, tenant_id, body.effective_from, body.reprice_drafted),
    )
    env = await gw.record(tenant_id, fact)

    async def applied() -> AssignmentRow | None:
        rows = await plans.assignments(gw.billing_db, tenant_id, withdrawn=True)
        return next(
            (r for r in rows if r.effective_from == body.effective_from and r.withdrawn_at), None
        )

    withdrawn = await gw.billing_waiter.until(f"withdrawal:{env.id}", applied, APPLIED_WAIT_S)
    _applied(withdrawn, "withdrawal")
    assert withdrawn is not None
    return _assignment_public(withdrawn)


@router.get(
    "/tenants/{tenant_id}/plan",
    response_model=list[AssignmentPublic],
    **documented(
        "List a tenant's plan assignments",
        "In order of effective time, withdrawn ones too (with `withdrawn_at`).",
        problems=[ErrorCode.TENANT_NOT_FOUND],
    ),
)
async def list_assignments(
    tenant_id: Id, operator_id: OperatorDep, gw: GatewayDep
) -> list[AssignmentPublic]:
    await tenant_or_404(gw, tenant_id)
    rows = await plans.assignments(gw.billing_db, tenant_id, withdrawn=True)
    return [_assignment_public(r) for r in rows]


@router.post(
    "/usage",
    status_code=202,
    response_model=UsageRecordedPublic,
    **documented(
        "Record usage",
        "Usage the platform's own workers do not see (an import, stored bytes). The"
        " event's id derives from the tenant and `usage_id`: recording it again is the same"
        " event, counted once.",
        records="`UsageRecorded` on `agentlog.usage`, keyed by the tenant",
        problems=[ErrorCode.TENANT_NOT_FOUND, ErrorCode.VALIDATION_FAILED],
    ),
)
async def record_usage(
    body: UsageCreate, operator_id: OperatorDep, gw: GatewayDep
) -> UsageRecordedPublic:
    await tenant_or_404(gw, body.tenant_id)
    fact = UsageRecorded(
        tenant_id=body.tenant_id,
        kind=body.kind,
        resource=body.resource,
        quantities=body.quantities,
        used_at=body.used_at,
        call_id=body.usage_id,
    )
    reason = unbillable(fact)
    if reason is not None:
        raise ProblemError(ErrorCode.USAGE_UNBILLABLE, reason)
    fact = fact.model_copy(update={"used_at": fact.used_at.astimezone(datetime.UTC)})
    event_id = derived_id(body.tenant_id, body.usage_id)
    await _refuse_other_usage(gw, fact, event_id)
    env = await gw.record(body.tenant_id, fact, id=event_id)
    return UsageRecordedPublic(event_id=env.id)


async def _refuse_other_usage(gw: Gateway, fact: UsageRecorded, event_id: str) -> None:
    """Refuse a ``usage_id`` recorded before with other values: the event is the same
    (its id derives from the usage id), so its first values would count and these be
    dropped unseen. The ledger has every applied one; Redis, for a day, those recorded
    but not yet applied."""
    values = (fact.kind, fact.resource, dict(sorted(fact.quantities.items())), fact.used_at)
    found = await usage.ledger_event(gw.billing_db, fact.tenant_id, event_id)
    if found is not None and (found.kind, found.resource, found.quantities, found.used_at) != (
        values
    ):
        raise ProblemError(
            ErrorCode.USAGE_ID_REUSED, f"usage {fact.call_id!r} was recorded with other values"
        )
    fingerprint = hashlib.sha256(repr(values).encode()).hexdigest()
    # A space: no Idempotency-Key of the tenant's can name this entry.
    await gw.idempotency.check(
        fact.tenant_id, f"usage {fact.call_id}", fingerprint, ErrorCode.USAGE_ID_REUSED
    )


@router.post(
    "/replays",
    status_code=202,
    response_model=ReplayPublic,
    **documented(
        "Replay the billing read models",
        "Rebuilds the usage and invoice read models from offset 0 into tables beside the"
        " live ones, compares them with the live tables, computes every draft again from"
        " them, and with `swap` swaps them in, while the platform serves. Runs in the"
        " background: read its progress at `GET /v1/admin/replays/{id}`.",
        records="nothing on a topic: a replay reads the log and writes read models",
        problems=[ErrorCode.REPLAY_RUNNING],
    ),
)
async def start_replay(
    body: ReplayCreate, operator_id: OperatorDep, gw: GatewayDep
) -> JSONResponse:
    report = await gw.replays.start(body.swap, operator_id)
    return JSONResponse(
        report, status_code=202, headers={"Location": f"/v1/admin/replays/{report['replay_id']}"}
    )


@router.get(
    "/replays/{replay_id}",
    response_model=ReplayPublic,
    **documented(
        "Read a replay",
        "Its status (`running`, `succeeded`, `differs`, `failed`, `cancelled`), records"
        " read of how many, and once done what it found.",
        problems=[ErrorCode.REPLAY_NOT_FOUND],
    ),
)
async def read_replay(replay_id: Id, operator_id: OperatorDep, gw: GatewayDep) -> ReplayPublic:
    return ReplayPublic.model_validate(await gw.replays.status(replay_id))
