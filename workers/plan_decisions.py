"""The billing decider's decisions about plans, operators and re-drives: each request,
against the state it concerns, to the fact recorded as its outcome.

Pure functions of typed state (a tenant's ``TenantPlans``, the plan versions, the
operators' names, the dead letters re-driven): no Kafka, no database, no clock.
``plan_decider`` keeps the state from the log and records what these return.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from projections.tenant_plans import TenantPlans
from schemas import billing, billing_requests
from schemas.base import Fact
from schemas.billing import PricePlan
from schemas.errors import ErrorCode

Plans = Mapping[tuple[str, int], PricePlan]


def rejected(aggregate_id: str, code: ErrorCode, detail: str) -> Fact:
    """A rejection; ``command_id`` is the request's event id, which the runtime sets."""
    return billing_requests.BillingCommandRejected(
        aggregate_id=aggregate_id, command_id="", code=code, detail=detail
    )


def publish_plan(cmd: billing_requests.PricePlanPublishRequested, latest: int) -> Fact:
    """The next version of the plan (``latest``: its newest version, 0 for none)."""
    return billing.PricePlanPublished(
        plan_id=cmd.plan_id, version=latest + 1, plan=cmd.plan, operator_id=cmd.operator_id
    )


def _repriced(
    tenant: TenantPlans,
    cmd: billing_requests.TenantPlanAssignRequested | billing_requests.TenantPlanWithdrawRequested,
) -> tuple[list[str], Fact | None]:
    """The drafted periods the change prices again, or its rejection if the operator
    did not allow that."""
    periods = tenant.drafted_since(cmd.effective_from)
    if periods and not cmd.reprice_drafted:
        return periods, rejected(
            cmd.tenant_id,
            ErrorCode.PERIOD_DRAFTED,
            f"drafted periods would be priced again: {', '.join(periods)}; send"
            " reprice_drafted: true to do so",
        )
    return periods, None


def assign_plan(
    cmd: billing_requests.TenantPlanAssignRequested, tenant: TenantPlans, plans: Plans
) -> Fact:
    """Put the tenant on a plan version: one that exists, from later than its latest
    assignment in force, at an instant no assignment ever took, in the same currency,
    and repricing no drafted period unless asked to."""
    plan = plans.get((cmd.plan_id, cmd.version))
    if plan is None:
        return rejected(
            cmd.tenant_id, ErrorCode.PLAN_NOT_FOUND, f"no plan {cmd.plan_id} v{cmd.version}"
        )
    in_force = tenant.in_force()
    if in_force and cmd.effective_from <= in_force[-1].effective_from:
        return rejected(
            cmd.tenant_id,
            ErrorCode.PLAN_ASSIGNMENT_OVERLAPS,
            f"the tenant's latest assignment is effective from {in_force[-1].effective_from}",
        )
    if cmd.effective_from in tenant.assignments:
        return rejected(
            cmd.tenant_id,
            ErrorCode.PLAN_ASSIGNMENT_OVERLAPS,
            f"an assignment effective from {cmd.effective_from} was withdrawn; an instant"
            " names one assignment for good: choose another",
        )
    if in_force:
        latest = plans.get((in_force[-1].plan_id, in_force[-1].version))
        if latest is not None and latest.currency != plan.currency:
            return rejected(
                cmd.tenant_id,
                ErrorCode.CURRENCY_MISMATCH,
                f"the tenant is billed in {latest.currency}, the plan charges {plan.currency}",
            )
    periods, refused = _repriced(tenant, cmd)
    if refused is not None:
        return refused
    return billing.TenantPlanAssigned(
        tenant_id=cmd.tenant_id,
        plan_id=cmd.plan_id,
        version=cmd.version,
        effective_from=cmd.effective_from,
        operator_id=cmd.operator_id,
        repriced_periods=periods,
    )


def withdraw_plan(cmd: billing_requests.TenantPlanWithdrawRequested, tenant: TenantPlans) -> Fact:
    """Withdraw the tenant's assignment in force at ``effective_from``, repricing no
    drafted period unless asked to."""
    if not any(a.effective_from == cmd.effective_from for a in tenant.in_force()):
        return rejected(
            cmd.tenant_id,
            ErrorCode.PLAN_ASSIGNMENT_NOT_FOUND,
            f"the tenant has no assignment in force effective from {cmd.effective_from}",
        )
    periods, refused = _repriced(tenant, cmd)
    if refused is not None:
        return refused
    return billing.TenantPlanWithdrawn(
        tenant_id=cmd.tenant_id,
        effective_from=cmd.effective_from,
        operator_id=cmd.operator_id,
        repriced_periods=periods,
    )


def create_operator(
    cmd: billing_requests.OperatorCreateRequested, operators: Mapping[str, str]
) -> Fact:
    """A new operator, under a name no other operator has (``operators``: name -> id).
    The request's outcome is keyed by the operator, on another partition than the
    request, so its owner after a restart may not know it was decided: decided again,
    it is accepted again, the same fact under the same id."""
    taken = operators.get(cmd.display_name)
    if taken is not None and taken != cmd.operator_id:
        return rejected(
            cmd.display_name,
            ErrorCode.OPERATOR_NAME_TAKEN,
            f"operator {taken} is named {cmd.display_name!r}: choose another name",
        )
    return billing.OperatorCreated(**cmd.model_dump())  # the same fields


def redrive(cmd: billing.DeadLetterRedriveRequested, redriven: Collection[str]) -> Fact | None:
    """A dead letter is re-driven once: the rejection of a second request, or None (the
    decider writes the record back, then records ``DeadLetterRedriven``)."""
    if cmd.dead_letter in redriven:
        detail = f"{cmd.dead_letter} was re-driven already"
        return rejected(cmd.dead_letter, ErrorCode.DEAD_LETTER_REDRIVEN, detail)
    return None
