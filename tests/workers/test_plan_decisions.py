"""The billing decider's decisions on plans and re-drives, as plain values: a request and
the state it concerns in, the fact recorded out."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from projections.tenant_plans import TenantPlans, evolve
from schemas import billing, billing_requests
from schemas.billing import ModelRates, PricePlan
from workers import plan_decisions as decide

UTC = datetime.UTC
NOV = datetime.datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime.datetime(2026, 12, 1, tzinfo=UTC)
RATES = ModelRates(input=Decimal("0.000002"), output=Decimal("0.00001"))
PLANS = {
    ("std", 1): PricePlan(currency="USD", models={"dev": RATES}),
    ("std", 2): PricePlan(currency="USD", models={"dev": RATES}),
    ("euro", 1): PricePlan(currency="EUR", models={"dev": RATES}),
}
TENANT = "tenant-a"


def assign(
    at: datetime.datetime, plan_id: str = "std", *, reprice_drafted: bool = False
) -> billing_requests.TenantPlanAssignRequested:
    return billing_requests.TenantPlanAssignRequested(
        tenant_id=TENANT,
        plan_id=plan_id,
        version=1,
        effective_from=at,
        operator_id="op",
        reprice_drafted=reprice_drafted,
    )


def withdraw(
    at: datetime.datetime, *, reprice_drafted: bool = False
) -> billing_requests.TenantPlanWithdrawRequested:
    return billing_requests.TenantPlanWithdrawRequested(
        tenant_id=TENANT, effective_from=at, operator_id="op", reprice_drafted=reprice_drafted
    )


def state(*facts: billing.TenantPlanAssigned | billing.TenantPlanWithdrawn) -> TenantPlans:
    plans = TenantPlans(TENANT)
    for offset, fact in enumerate(facts):
        plans = evolve(plans, fact, offset)
    return plans


def assigned(at: datetime.datetime, plan_id: str = "std") -> billing.TenantPlanAssigned:
    return billing.TenantPlanAssigned(
        tenant_id=TENANT, plan_id=plan_id, version=1, effective_from=at, operator_id="op"
    )


def withdrawn(at: datetime.datetime) -> billing.TenantPlanWithdrawn:
    return billing.TenantPlanWithdrawn(tenant_id=TENANT, effective_from=at, operator_id="op")


def rejection(fact: object) -> billing_requests.BillingCommandRejected:
    assert isinstance(fact, billing_requests.BillingCommandRejected), fact
    return fact


def code(fact: object) -> str:
    return rejection(fact).code


def test_a_first_assignment_of_a_known_plan_is_assigned() -> None:
    fact = decide.assign_plan(assign(NOV), state(), PLANS)
    assert fact == assigned(NOV)


def test_an_unknown_plan_version_is_refused() -> None:
    request = billing_requests.TenantPlanAssignRequested(
        tenant_id=TENANT, plan_id="std", version=9, effective_from=NOV, operator_id="op"
    )
    fact = decide.assign_plan(request, state(), PLANS)
    assert (rejection(fact).code, rejection(fact).detail) == ("PLAN_NOT_FOUND", "no plan std v9")


@pytest.mark.parametrize("at", [NOV, NOV - datetime.timedelta(days=3)])
def test_an_assignment_not_later_than_the_latest_in_force_overlaps(at: datetime.datetime) -> None:
    assert code(decide.assign_plan(assign(at), state(assigned(NOV)), PLANS)) == (
        "PLAN_ASSIGNMENT_OVERLAPS"
    )


def test_a_withdrawn_instant_is_never_taken_again_but_an_earlier_one_is_free() -> None:
    history = state(assigned(NOV), assigned(DEC), withdrawn(DEC))
    assert code(decide.assign_plan(assign(DEC), history, PLANS)) == "PLAN_ASSIGNMENT_OVERLAPS"
    later = DEC + datetime.timedelta(microseconds=1)
    assert decide.assign_plan(assign(later), history, PLANS) == assigned(later)


def test_a_plan_in_another_currency_than_the_latest_is_refused() -> None:
    fact = decide.assign_plan(assign(DEC, "euro"), state(assigned(NOV)), PLANS)
    assert code(fact) == "CURRENCY_MISMATCH"
    assert "billed in USD" in rejection(fact).detail
    assert "charges EUR" in rejection(fact).detail
    # Once the USD assignment is withdrawn, the tenant may be billed in euros.
    repaired = state(assigned(NOV), withdrawn(NOV))
    assert decide.assign_plan(assign(DEC, "euro"), repaired, PLANS) == assigned(DEC, "euro")


def test_a_change_inside_a_drafted_month_needs_the_operators_word_and_names_it() -> None:
    drafted = TenantPlans(TENANT, drafted=frozenset({"2026-11", "2026-10"}))
    mid_nov = NOV + datetime.timedelta(days=14)
    assert code(decide.assign_plan(assign(mid_nov), drafted, PLANS)) == "PERIOD_DRAFTED"
    fact = decide.assign_plan(assign(mid_nov, reprice_drafted=True), drafted, PLANS)
    assert isinstance(fact, billing.TenantPlanAssigned)
    assert fact.repriced_periods == ["2026-11"]  # October ended before
    # From December on, no drafted month is priced again.
    assert decide.assign_plan(assign(DEC), drafted, PLANS) == assigned(DEC)


def test_only_an_assignment_in_force_is_withdrawn() -> None:
    history = state(assigned(NOV), assigned(DEC), withdrawn(DEC))
    assert decide.withdraw_plan(withdraw(NOV), history) == withdrawn(NOV)
    for at in (DEC, NOV + datetime.timedelta(seconds=1)):
        assert code(decide.withdraw_plan(withdraw(at), history)) == "PLAN_ASSIGNMENT_NOT_FOUND"
    drafted = TenantPlans(TENANT, drafted=frozenset({"2026-11"}))
    drafted = evolve(drafted, assigned(NOV), 0)
    assert code(decide.withdraw_plan(withdraw(NOV), drafted)) == "PERIOD_DRAFTED"
    fact = decide.withdraw_plan(withdraw(NOV, reprice_drafted=True), drafted)
    assert isinstance(fact, billing.TenantPlanWithdrawn)
    assert fact.repriced_periods == ["2026-11"]


def test_a_plan_is_published_as_its_next_version() -> None:
    request = billing_requests.PricePlanPublishRequested(
        plan_id="std", plan=PLANS[("std", 1)], operator_id="op"
    )
    for latest in (0, 1, 41):
        fact = decide.publish_plan(request, latest)
        assert isinstance(fact, billing.PricePlanPublished)
        assert (fact.plan_id, fact.version, fact.plan) == ("std", latest + 1, request.plan)


def test_a_dead_letter_is_redriven_once() -> None:
    asked = billing.DeadLetterRedriveRequested(dead_letter="0:7", operator_id="op", topic="t")

    assert decide.redrive(asked, {"0:6", "1:7"}) is None  # written back by the decider
    refused = decide.redrive(asked, {"0:7"})
    assert isinstance(refused, billing_requests.BillingCommandRejected)
    assert (refused.aggregate_id, refused.code) == ("0:7", "DEAD_LETTER_REDRIVEN")


def test_a_name_names_one_operator() -> None:
    asked = billing_requests.OperatorCreateRequested(
        operator_id="op-2", display_name="on-call", key_id="k", key_prefix="alop_x", key_hash="h"
    )

    created = decide.create_operator(asked, {"finance": "op-1"})
    assert created == billing.OperatorCreated(**asked.model_dump())
    refused = decide.create_operator(asked, {"on-call": "op-1"})
    assert isinstance(refused, billing_requests.BillingCommandRejected)
    assert (refused.aggregate_id, refused.code) == ("on-call", "OPERATOR_NAME_TAKEN")
    # Decided again (its outcome is on another partition than the request): the same fact.
    assert decide.create_operator(asked, {"on-call": "op-2"}) == created
