"""Price plans and the tenants' plan assignments, an operator's resources. A change is
recorded as the fact that it was requested; the billing decider (the invoicer role, one
writer per plan and per tenant) decides it from the state it keeps from the log, and
the route answers with the outcome once the billing projection shows it. No route here
checks state and then records a change itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from projections import plans, tenants
from projections.plans import AssignmentRow, PlanRow
from schemas import billing_requests
from schemas.base import Fact
from schemas.billing import PLATFORM, PricePlan
from schemas.errors import ErrorCode

from ..billing_models import (
    AssignmentPublic,
    PlanAssign,
    PlanId,
    PlanWithdraw,
    PricePlanCreate,
    PricePlanPublic,
)
from ..commands import billing_decided
from ..connections import Gateway
from ..deps import GatewayDep, OperatorDep
from ..fields import Id, Version
from ..models import Page
from ..openapi import documented
from ..pagination import Key, page
from ..problems import ProblemError

router = APIRouter(prefix="/v1/admin", tags=["admin"])
OUTCOME_WAIT_S = 10.0
_REQUESTED = (
    "`{}` on `agentlog.billing`, keyed by the {}; the billing decider records `{}` or"
    " `BillingCommandRejected`"
)
_BY_PLAN: Key[tuple[str, int]] = Key(tuple[PlanId, Version])


def plan_public(row: PlanRow) -> PricePlanPublic:
    return PricePlanPublic(
        plan_id=row.plan_id,
        version=row.version,
        published_at=row.published_at,
        **row.plan.model_dump(),
    )


def _assignment_public(row: AssignmentRow) -> AssignmentPublic:
    return AssignmentPublic.model_validate(row, from_attributes=True)


async def tenant_or_404(gw: Gateway, tenant_id: str) -> None:
    if not await tenants.tenant_exists(gw.db, tenant_id):
        raise ProblemError(ErrorCode.TENANT_NOT_FOUND, f"no tenant {tenant_id}")


@router.post(
    "/price-plans",
    status_code=201,
    response_model=PricePlanPublic,
    **documented(
        "Publish a price plan version",
        "Publishes the next version of the plan (version 1 for a new plan id). A version"
        " never changes once published: a change is a new version, and usage is priced by"
        " the version in force when it was used.",
        records=_REQUESTED.format("PricePlanPublishRequested", "plan", "PricePlanPublished"),
        problems=[ErrorCode.CURRENCY_UNKNOWN, ErrorCode.VALIDATION_FAILED],
    ),
)
async def publish_plan(
    body: PricePlanCreate, operator_id: OperatorDep, gw: GatewayDep
) -> PricePlanPublic:
    if not body.known_currency():
        raise ProblemError(ErrorCode.CURRENCY_UNKNOWN, f"unknown currency {body.currency!r}")
    plan = PricePlan(**body.model_dump(exclude={"plan_id"}))
    request = billing_requests.PricePlanPublishRequested(
        plan_id=body.plan_id, plan=plan, operator_id=operator_id
    )
    env = await gw.record(PLATFORM, request)
    location = f"/v1/admin/price-plans/{body.plan_id}"
    outcome = await billing_decided(gw, env, location, plan_id=body.plan_id)
    assert outcome.version is not None
    row = await plans.plan(gw.billing_db, body.plan_id, outcome.version)
    assert row is not None  # applied in the outcome's transaction
    return plan_public(row)


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


async def _change_plans(
    gw: Gateway, tenant_id: str, request: Fact, effective_from: Any
) -> AssignmentPublic:
    """Record a request to change the tenant's plans and answer with the assignment it
    concerns once decided."""
    env = await gw.record(tenant_id, request)
    location = f"/v1/admin/tenants/{tenant_id}/plan"
    await billing_decided(gw, env, location, tenant_id=tenant_id)
    rows = await plans.assignments(gw.billing_db, tenant_id, withdrawn=True)
    found = next(r for r in rows if r.effective_from == effective_from)
    return _assignment_public(found)


@router.post(
    "/tenants/{tenant_id}/plan",
    status_code=201,
    response_model=AssignmentPublic,
    **documented(
        "Assign a price plan to a tenant",
        "The tenant is on this plan version from `effective_from` until its next"
        " assignment. An assignment is never rewritten: one must start later than the"
        " tenant's latest in force, at an instant no assignment took before, and charge in"
        " the same currency. One that would price a period already drafted again is refused"
        " unless `reprice_drafted` is true; the fact then names those periods.",
        records=_REQUESTED.format("TenantPlanAssignRequested", "tenant", "TenantPlanAssigned"),
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
    request = billing_requests.TenantPlanAssignRequested(
        tenant_id=tenant_id,
        plan_id=body.plan_id,
        version=body.version,
        effective_from=body.effective_from,
        operator_id=operator_id,
        reprice_drafted=body.reprice_drafted,
    )
    return await _change_plans(gw, tenant_id, request, body.effective_from)


@router.post(
    "/tenants/{tenant_id}/plan/withdrawals",
    status_code=201,
    response_model=AssignmentPublic,
    **documented(
        "Withdraw a tenant's plan assignment",
        "The assignment effective from `effective_from` no longer counts from now on (drafts"
        " requested before count it still); the assignment before it is in force in its"
        " stead. This repairs assignments that should never have been accepted"
        " (`docs/operations.md`). One that would price a period already drafted again is"
        " refused unless `reprice_drafted` is true.",
        records=_REQUESTED.format("TenantPlanWithdrawRequested", "tenant", "TenantPlanWithdrawn"),
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
    request = billing_requests.TenantPlanWithdrawRequested(
        tenant_id=tenant_id,
        effective_from=body.effective_from,
        operator_id=operator_id,
        reprice_drafted=body.reprice_drafted,
    )
    return await _change_plans(gw, tenant_id, request, body.effective_from)


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
