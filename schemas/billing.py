"""Billing facts: operators, price plans, plan assignments and invoice drafts, and the
audit of dead-letter re-drives (the catalog's table puts all of them on the billing
topic); and the money values they carry.

Money is ``Decimal``, never a float, and always beside its currency. Rates are per
unit (one token, one call) and may carry any number of decimals; what rounding applies
where is ``projections.pricing``'s, and ``docs/billing.md`` states it.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, NonNegativeInt, PlainSerializer

from .base import Fact
from .usage import Unit, UsageKind

# ISO 4217 currencies and their minor units (digits after the decimal point).
CURRENCIES: dict[str, int] = {
    "AUD": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "INR": 2,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "NOK": 2,
    "NZD": 2,
    "PLN": 2,
    "SEK": 2,
    "SGD": 2,
    "USD": 2,
    "ZAR": 2,
}

# The tenant id that facts of the platform itself (operators, price plans) carry in
# their envelope: every record names a tenant, and no tenant's id looks like this.
PLATFORM = "_platform"

_PERIOD = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
# The months a draft may be asked for: those of the years usage may be in (1970-9998,
# ``schemas.usage``). Requests already recorded for others are read as they are.
_REQUESTABLE = (
    r"^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$"
)


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    return value


# How many digits a decimal may have on either side of the point and still be written
# in plain notation: far beyond any amount or rate the API takes, short of the billion
# zeros of "1e999999999" (which a fact recorded before money was bounded may carry).
PLAIN_DIGITS = 60


def plain_writable(value: Decimal) -> bool:
    """Whether ``value`` is finite and has at most ``PLAIN_DIGITS`` digits on either
    side of the point when written in plain notation."""
    exponent = value.as_tuple().exponent
    return (
        isinstance(exponent, int)
        and value.adjusted() < PLAIN_DIGITS
        and -exponent <= (PLAIN_DIGITS)
    )


def _plain(value: Decimal) -> str:
    return format(value, "f") if plain_writable(value) else str(value)


# A decimal written in JSON as a string in plain notation ("0.0000005", never "5E-7"),
# so that no reader turns it into a float and every reader reads the same digits; a
# value beyond ``PLAIN_DIGITS`` (only ever recorded before money was bounded) is
# written with an exponent.
PlainDecimal = Annotated[Decimal, PlainSerializer(_plain, return_type=str, when_used="json")]
# A non-negative amount or rate. Facts accept a JSON number too (what was recorded stays
# readable); the HTTP API takes strings only, bounded (``gateway.billing_models``).
Money = Annotated[PlainDecimal, Field(ge=0), AfterValidator(_finite)]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRates(_Value):
    """Per-token rates of one model, and the tokens of each kind free per period."""

    input: Money
    output: Money
    cached_input: Money = Decimal(0)
    free_input_tokens: NonNegativeInt = 0
    free_output_tokens: NonNegativeInt = 0
    free_cached_input_tokens: NonNegativeInt = 0


class ToolRates(_Value):
    """The rate of one call of a tool, and the calls free per period."""

    per_call: Money
    free_calls: NonNegativeInt = 0


class PricePlan(_Value):
    """What a plan version charges. A model or tool it does not name is priced at zero
    and listed on the draft as unpriced."""

    currency: str = Field(description="ISO 4217 code, e.g. USD")
    models: dict[str, ModelRates] = Field(default_factory=dict)
    tools: dict[str, ToolRates] = Field(default_factory=dict)
    monthly_minimum: Money = Decimal(0)

    def rate(self, kind: UsageKind, resource: str, unit: Unit) -> tuple[Decimal, int] | None:
        """The unit rate and the free quantity per period of (kind, resource, unit), or
        None where the plan has no rate for it."""
        if kind == "model" and resource in self.models:
            rates = self.models[resource]
            match unit:
                case "input_tokens":
                    return rates.input, rates.free_input_tokens
                case "output_tokens":
                    return rates.output, rates.free_output_tokens
                case "cached_input_tokens":
                    return rates.cached_input, rates.free_cached_input_tokens
        if kind == "tool" and resource in self.tools and unit == "calls":
            return self.tools[resource].per_call, self.tools[resource].free_calls
        return None


def period_bounds(period: str) -> tuple[datetime.datetime, datetime.datetime]:
    """The [start, end) of a billing period ``YYYY-MM``, in UTC."""
    if not _PERIOD.match(period):
        raise ValueError("a period is a month, written YYYY-MM")
    year, month = int(period[:4]), int(period[5:])
    start = datetime.datetime(year, month, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=datetime.UTC)
    return start, end


Period = Annotated[str, Field(pattern=_REQUESTABLE, examples=["2026-11"])]


class InvoiceLine(_Value):
    """One line of a draft: a (kind, resource, unit) used while one plan version was in
    force. ``amount`` is ``billable * unit_price``, rounded to 1e-6 half-even."""

    number: int
    kind: UsageKind | Literal["minimum"]
    resource: str
    unit: Unit | Literal["commitment"]
    plan_id: str | None
    plan_version: int | None
    window_start: datetime.datetime
    window_end: datetime.datetime
    quantity: int
    free: int
    billable: int
    unit_price: PlainDecimal
    amount: PlainDecimal
    unpriced: bool
    events: int = Field(description="how many usage events the line counts")


class LineChange(_Value):
    """How a line of this revision differs from the previous revision's."""

    kind: str
    resource: str
    unit: str
    plan_version: int | None
    window_start: datetime.datetime
    quantity_before: int
    quantity_after: int
    amount_before: PlainDecimal
    amount_after: PlainDecimal


class PlanWindow(_Value):
    """A plan version in force over [start, end) of the period."""

    plan_id: str
    version: int
    start: datetime.datetime
    end: datetime.datetime


# -- facts ----------------------------------------------------------------------------


class OperatorCreated(Fact):
    """``agentlog.operator.created.v1``: an operator of the platform, and its key (only
    the hash). Operator keys are what ``/v1/admin/*`` accepts."""

    subsystem = "operator"
    name = "created"
    subject_field = "operator_id"
    operator_id: str
    display_name: str
    key_id: str
    key_prefix: str
    key_hash: str


class DeadLetterRedriveRequested(Fact):
    """``agentlog.dead_letter.redrive_requested.v1``: an operator asked for a record of
    the dead-letter topic to be written again to the topic it came from (the audit of a
    re-drive). ``dead_letter`` is its place there, ``<partition>:<offset>``."""

    subsystem = "dead_letter"
    name = "redrive_requested"
    subject_field = "dead_letter"
    dead_letter: str
    operator_id: str
    topic: str = Field(description="the topic it is written back to")


class DeadLetterRedriven(Fact):
    """``agentlog.dead_letter.redriven.v1``: a dead letter written again to the topic it
    came from, with its headers but the dead-letter ones, at ``partition`` and
    ``offset``: its consumers read it as a new record."""

    subsystem = "dead_letter"
    name = "redriven"
    subject_field = "dead_letter"
    dead_letter: str
    operator_id: str
    topic: str
    partition: int
    offset: int


class PricePlanPublished(Fact):
    """``agentlog.price_plan.published.v1``: a version of a price plan; versions never
    change once published."""

    subsystem = "price_plan"
    name = "published"
    subject_field = "plan_id"
    plan_id: str
    version: int
    plan: PricePlan
    operator_id: str


class _TenantBillingFact(Fact):
    subject_field = "tenant_id"
    tenant_id: str


class TenantPlanAssigned(_TenantBillingFact):
    """``agentlog.tenant_plan.assigned.v1``: the tenant is on this plan version from
    ``effective_from`` until its next assignment."""

    subsystem = "tenant_plan"
    name = "assigned"
    plan_id: str
    version: int
    effective_from: datetime.datetime
    operator_id: str
    repriced_periods: list[str] = Field(
        default_factory=list,
        description="periods already drafted that the assignment prices again, which the"
        " operator asked for knowingly",
    )


class TenantPlanWithdrawn(_TenantBillingFact):
    """``agentlog.tenant_plan.withdrawn.v1``: the tenant's assignment effective from
    ``effective_from`` no longer counts, from this record on (drafts requested before
    it counted it, and still do); the assignment before it is in force in its stead.
    How an operator repairs assignments that should never have been accepted."""

    subsystem = "tenant_plan"
    name = "withdrawn"
    effective_from: datetime.datetime
    operator_id: str
    repriced_periods: list[str] = Field(
        default_factory=list,
        description="periods already drafted that the withdrawal prices again, which the"
        " operator asked for knowingly",
    )


class InvoiceDraftRequested(_TenantBillingFact):
    """``agentlog.invoice.draft_requested.v1``: an operator asked for a draft of the
    tenant's invoice for ``period``."""

    subsystem = "invoice"
    name = "draft_requested"
    invoice_id: str
    period: str
    operator_id: str


class InvoiceDrafted(_TenantBillingFact):
    """``agentlog.invoice.drafted.v1``: a revision of the tenant's invoice for
    ``period``: every usage event of the period within ``offsets`` (usage partition →
    end offset, exclusive), priced by ``plans``; ``content_hash`` is the sha256 of the
    canonical form docs/billing.md specifies."""

    subsystem = "invoice"
    name = "drafted"
    invoice_id: str
    revision: int
    request_id: str
    period: str
    currency: str
    lines: list[InvoiceLine]
    subtotal: PlainDecimal
    total: PlainDecimal
    plans: list[PlanWindow]
    offsets: dict[int, int]
    usage_events: int
    content_hash: str
    changes: list[LineChange] = Field(default_factory=list)


class InvoiceDraftRejected(_TenantBillingFact):
    """``agentlog.invoice.draft_rejected.v1``: the billing worker could not draft the
    invoice (``request_id``), with the code and why."""

    subsystem = "invoice"
    name = "draft_rejected"
    invoice_id: str
    request_id: str
    code: str
    detail: str
