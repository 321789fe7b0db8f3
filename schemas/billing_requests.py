"""Billing's requested commands, on the billing topic, and the fact that one was refused.

An operator's change of a price plan or of a tenant's plans, and a new operator, is
recorded as the fact that it was requested; the billing decider (the invoicer role,
single writer per key) decides it against the state it keeps from the log and records
the outcome: the change itself (``PricePlanPublished``, ``TenantPlanAssigned``,
``TenantPlanWithdrawn``, ``OperatorCreated``, each caused by its request) or
``BillingCommandRejected``. Two requests racing for one tenant are
decided one after the other, so both can never be accepted.
"""

from __future__ import annotations

import datetime

from pydantic import Field

from .base import Fact
from .billing import PricePlan


class PricePlanPublishRequested(Fact):
    """``agentlog.price_plan.publish_requested.v1``: an operator asked for the next
    version of a plan (keyed by the plan: its versions are decided in order)."""

    subsystem = "price_plan"
    name = "publish_requested"
    subject_field = "plan_id"
    plan_id: str
    plan: PricePlan
    operator_id: str


class _TenantPlanRequest(Fact):
    subsystem = "tenant_plan"
    subject_field = "tenant_id"
    tenant_id: str
    effective_from: datetime.datetime
    operator_id: str
    reprice_drafted: bool = False


class TenantPlanAssignRequested(_TenantPlanRequest):
    """``agentlog.tenant_plan.assign_requested.v1``: an operator asked to put the tenant
    on a plan version from ``effective_from``."""

    name = "assign_requested"
    plan_id: str
    version: int


class TenantPlanWithdrawRequested(_TenantPlanRequest):
    """``agentlog.tenant_plan.withdraw_requested.v1``: an operator asked to withdraw the
    tenant's assignment effective from ``effective_from``."""

    name = "withdraw_requested"


class OperatorCreateRequested(Fact):
    """``agentlog.operator.create_requested.v1``: the platform's command line asked for
    an operator named ``display_name``, with a key of which only the hash is kept. Keyed
    by the name: the requests for one name are decided one after the other, and a name
    names one operator."""

    subsystem = "operator"
    name = "create_requested"
    subject_field = "display_name"
    operator_id: str
    display_name: str = Field(min_length=1, max_length=200)
    key_id: str
    key_prefix: str
    key_hash: str


class BillingCommandRejected(Fact):
    """``agentlog.billing_command.rejected.v1``: a billing request was refused, with a
    registered code and why; keyed like the request (``aggregate_id``: its plan, tenant,
    operator's name or dead letter)."""

    subsystem = "billing_command"
    name = "rejected"
    subject_field = "aggregate_id"
    aggregate_id: str
    command_id: str
    code: str
    detail: str
