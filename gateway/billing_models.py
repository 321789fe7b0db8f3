"""Request and response bodies of the billing API: price plans, plan assignments, usage
and invoices. Money is a decimal string in JSON ("0.017510"), never a float."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    WithJsonSchema,
    field_validator,
)

from projections.invoices import DraftStatus
from projections.usage import LedgerRow
from schemas.billing import (
    CURRENCIES,
    InvoiceLine,
    LineChange,
    ModelRates,
    Period,
    PlainDecimal,
    PlanWindow,
    ToolRates,
)
from schemas.usage import MAX_QUANTITY, USED_FROM, USED_UNTIL, Unit, UsageKind

from . import examples
from .fields import Id, Instant

MAX_RATES = 256  # models, or tools, one plan prices
PlanId = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")]
ResourceName = Annotated[str, Field(min_length=1, max_length=200)]
# A count of one unit: an integer in JSON, at most what billing counts in one event.
Quantity = Annotated[StrictInt, Field(ge=0, le=MAX_QUANTITY)]


_MONEY = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")


def _money_text(value: object) -> object:
    if not isinstance(value, str) or not _MONEY.fullmatch(value):
        raise ValueError(
            "money is a string in plain decimal notation, at most 12 digits before the"
            " point and 12 after it: '0.000002'"
        )
    return value


# Money as the API takes it (docs/billing.md, "Money"): a string, never a JSON number
# (which a client may have read as a float), within bounds that every product of a
# bounded quantity and a rate, and every sum of them, keeps exact.
MoneyIn = Annotated[
    Decimal,
    BeforeValidator(_money_text),
    WithJsonSchema({"type": "string", "pattern": f"^{_MONEY.pattern}$", "examples": ["0.000002"]}),
]


class ModelRatesCreate(BaseModel):
    """Per-token rates of one model, and the tokens of each kind free per period."""

    model_config = ConfigDict(extra="forbid")

    input: MoneyIn
    output: MoneyIn
    cached_input: MoneyIn = Decimal(0)
    free_input_tokens: Quantity = 0
    free_output_tokens: Quantity = 0
    free_cached_input_tokens: Quantity = 0


class ToolRatesCreate(BaseModel):
    """The rate of one call of a tool, and the calls free per period."""

    model_config = ConfigDict(extra="forbid")

    per_call: MoneyIn
    free_calls: Quantity = 0


class PricePlanCreate(BaseModel):
    """A new version of a price plan: per-unit rates per model and per tool, the units
    free per period, a monthly minimum, and the currency of all of them."""

    model_config = ConfigDict(extra="forbid")

    plan_id: PlanId
    currency: str = Field(description="ISO 4217 code, e.g. USD")
    models: dict[ResourceName, ModelRatesCreate] = Field(default_factory=dict, max_length=MAX_RATES)
    tools: dict[ResourceName, ToolRatesCreate] = Field(default_factory=dict, max_length=MAX_RATES)
    monthly_minimum: MoneyIn = Decimal(0)

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    def known_currency(self) -> bool:
        return self.currency in CURRENCIES


class PricePlanPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.PRICE_PLAN]})

    plan_id: str
    version: int
    currency: str
    models: dict[str, ModelRates]
    tools: dict[str, ToolRates]
    monthly_minimum: PlainDecimal
    published_at: datetime.datetime


_REPRICE = "price periods already drafted again (they are named in the fact)"


class PlanAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: PlanId
    version: StrictInt = Field(ge=1)
    effective_from: Instant = Field(description="from when the plan prices usage")
    reprice_drafted: bool = Field(False, description=_REPRICE)


class PlanWithdraw(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effective_from: Instant = Field(description="the assignment's, as it was assigned")
    reprice_drafted: bool = Field(False, description=_REPRICE)


class AssignmentPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.ASSIGNMENT]})

    tenant_id: str
    plan_id: str
    version: int
    effective_from: datetime.datetime
    assigned_at: datetime.datetime
    withdrawn_at: datetime.datetime | None = None


class UsageCreate(BaseModel):
    """Usage recorded from outside the platform's own workers (an import, storage)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: Id
    usage_id: Id = Field(description="the caller's id: recording it again is a no-op")
    kind: UsageKind
    resource: ResourceName
    quantities: dict[Unit, Quantity] = Field(min_length=1)
    used_at: AwareDatetime = Field(
        description=f"from {USED_FROM.year} to {USED_UNTIL.year - 1}, UTC"
    )


class UsageRecordedPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.USAGE_RECORDED]})

    event_id: str


class UsageGroupPublic(BaseModel):
    tenant_id: str | None = None
    day: datetime.date | None = None
    agent_id: str | None = None
    kind: str | None = None
    resource: str | None = None
    unit: str | None = None
    quantity: int
    events: int


class UsageEventPublic(LedgerRow):
    """One usage event, with the turn, call and trace it came from, and where it is in
    the usage topic: the ledger's row as it is."""


class InvoiceDraftCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: Id
    period: Period


class RevisionPublic(BaseModel):
    revision: int
    request_id: str
    subtotal: PlainDecimal
    total: PlainDecimal
    lines: list[InvoiceLine]
    plans: list[PlanWindow]
    offsets: dict[int, int] = Field(description="usage partition → end offset (exclusive)")
    usage_events: int
    content_hash: str
    changes: list[LineChange] = Field(description="how it differs from the revision before")
    drafted_at: datetime.datetime


class InvoicePublic(BaseModel):
    invoice_id: str
    tenant_id: str
    period: str
    currency: str
    revision: int = Field(description="the latest revision")
    total: PlainDecimal
    content_hash: str
    drafted_at: datetime.datetime


class InvoiceDetail(InvoicePublic):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.INVOICE]})

    revisions: list[RevisionPublic]


class DraftRequested(BaseModel):
    """A draft was requested and is not drafted yet: read the invoice later."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.DRAFT_REQUESTED]})

    request_id: str
    invoice_id: str
    status: Literal[DraftStatus.REQUESTED]


class ReplayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["billing"] = "billing"
    swap: bool = Field(False, description="swap the replayed tables in if they match")


class ReplayStatus(StrEnum):
    """Where a replay started over HTTP is: ``differs`` when its tables or drafts do
    not match the live ones (it swapped nothing)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DIFFERS = "differs"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ReplayPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.REPLAY]})

    replay_id: str
    name: str
    swap: bool
    status: ReplayStatus
    records_read: int
    records_total: int | None
    records_per_second: float | None = Field(
        None, description="records read per second so far, as the CLI's progress bar shows"
    )
    seconds_left: float | None = Field(
        None, description="seconds left to read the rest at that rate"
    )
    events_applied: int | None
    seconds: float | None
    swapped_to: str | None
    differences: list[str] | None
    set_aside: list[str] | None = Field(
        None,
        description="records that could not be folded, each with its place and why: set"
        " aside as the live projector sets them aside (to the dead-letter topic)",
    )
    lines: list[str] = Field(description="what the replay reported, line by line")
    started_by: str
    started_at: datetime.datetime
    finished_at: datetime.datetime | None = None
