"""What became of a billing request, as its outcome's folds record it: the change a
request caused, or its rejection, keyed by the request and notified to who waits."""

from __future__ import annotations

import datetime

from projections.billing_outcomes import notification
from projections.ops import Notify, Upsert, project
from schemas import billing, billing_requests

from .fold_context import CTX

FEB = datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC)


def _outcome(accepted: bool, **values: object) -> list[object]:
    command_id: str = CTX.causation_id if accepted else "cmd-9"
    row = {
        "command_id": command_id,
        "tenant_id": CTX.tenant_id,
        "event_id": CTX.event_id,
        "accepted": accepted,
        "code": None,
        "detail": None,
        "version": None,
        **values,
    }
    return [
        Upsert("billing_outcomes", ("command_id",), row),
        Notify(notification(command_id)),
    ]


def test_a_change_a_request_caused_is_that_requests_accepted_outcome() -> None:
    assigned = billing.TenantPlanAssigned(
        tenant_id="tenant-a", plan_id="p", version=1, effective_from=FEB, operator_id="op"
    )
    withdrawn = billing.TenantPlanWithdrawn(
        tenant_id="tenant-a", effective_from=FEB, operator_id="op"
    )
    for fact in (assigned, withdrawn):
        assert project(fact, CTX)[:2] == _outcome(True)
    published = billing.PricePlanPublished(
        plan_id="p", version=3, plan=billing.PricePlan(currency="USD"), operator_id="op"
    )
    assert project(published, CTX)[:2] == _outcome(True, version=3)
    operator = billing.OperatorCreated(
        operator_id="op-1", display_name="on-call", key_id="k", key_prefix="alop_1", key_hash="h"
    )
    assert project(operator, CTX)[:2] == _outcome(True)


def test_a_rejection_is_its_requests_outcome_with_the_code_and_why() -> None:
    rejected = billing_requests.BillingCommandRejected(
        aggregate_id="tenant-a", command_id="cmd-9", code="CURRENCY_MISMATCH", detail="no"
    )
    assert project(rejected, CTX) == _outcome(False, code="CURRENCY_MISMATCH", detail="no")
