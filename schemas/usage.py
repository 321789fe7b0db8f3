"""Usage facts: what each model or tool call used, on the usage topic keyed by tenant.

A usage event's id is derived from the request that caused it, so a worker that records
it again after a crash records the same event, and billing counts it once.
``UsageRecorded`` (v2) carries everything an invoice line needs to trace a unit back to
the turn and trace behind it; ``UsageRecordedV1``, which lacked the agent, the step, the
time of use and cached input, stays readable and is upcast on reading.
"""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import Field, NonNegativeInt

from .base import Fact

UsageKind = Literal["model", "tool", "embedding", "storage"]
# The units usage is counted in; a price plan prices each (kind, resource, unit).
Unit = Literal[
    "input_tokens", "output_tokens", "cached_input_tokens", "calls", "embedding_tokens", "bytes"
]
UNITS: tuple[Unit, ...] = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "calls",
    "embedding_tokens",
    "bytes",
)

# What billing counts (``unbillable``; docs/billing.md states the same bounds). Intake
# refuses more; these hold whoever wrote the record, so that one record can never
# poison the ledger, a draft or a replay.
MAX_QUANTITY = 10**15  # of one unit in one usage event
MAX_TEXT_BYTES = 256  # of each text field, in UTF-8
MAX_COUNTER = 2**31 - 1  # agent_version and step
USED_FROM = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
USED_UNTIL = datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)
_TEXT_FIELDS = ("tenant_id", "resource", "agent_id", "session_id", "turn_id", "call_id", "trace_id")


class UsageRecorded(Fact):
    """``agentlog.usage.recorded.v2``: what one model or tool call used, for billing:
    the quantity of each unit, at ``used_at`` (when the call was requested), with the agent,
    session, turn, step and call that used it and the trace it ran in."""

    subsystem = "usage"
    name = "recorded"
    schema_version = 2
    subject_field = "tenant_id"
    tenant_id: str
    kind: UsageKind
    resource: str = Field(description="the model or the tool")
    quantities: dict[Unit, NonNegativeInt]
    used_at: datetime.datetime
    agent_id: str = ""
    agent_version: int = 0
    session_id: str = ""
    turn_id: str = ""
    step: int = 0
    call_id: str = ""
    trace_id: str = ""


def unbillable(usage: UsageRecorded) -> str | None:
    """Why billing cannot count ``usage``, or None. The billing fold sets such a record
    aside (it goes to the dead-letter topic), a replay does the same, and a verifier
    leaves it out of the draft it computes: one rule, whoever wrote the record."""
    for unit, quantity in sorted(usage.quantities.items()):
        if quantity > MAX_QUANTITY:
            return f"{unit} is above {MAX_QUANTITY:.0e} per usage event"
    for name in _TEXT_FIELDS:
        text = str(getattr(usage, name))
        try:  # what Postgres stores as it is, so a draft and a verifier read the same
            size = len(text.encode())
        except UnicodeEncodeError:
            return f"{name} holds a lone surrogate"
        if "\x00" in text:
            return f"{name} holds a NUL character"
        if size > MAX_TEXT_BYTES:
            return f"{name} is longer than {MAX_TEXT_BYTES} bytes"
    if usage.agent_version > MAX_COUNTER or usage.step > MAX_COUNTER:
        return f"agent_version and step are at most {MAX_COUNTER}"
    if not USED_FROM <= usage.used_at < USED_UNTIL:
        return f"used_at is before {USED_FROM.year} or from {USED_UNTIL.year} on"
    return None


class UsageRecordedV1(Fact):
    """``agentlog.usage.recorded.v1``: what one model or tool call used (superseded by
    v2, which billing reads it as: ``upcast``)."""

    subsystem = "usage"
    name = "recorded"
    subject_field = "tenant_id"
    tenant_id: str
    usage_id: str
    session_id: str
    turn_id: str
    source: Literal["model", "tool"]
    resource: str = Field(description="model name or tool name")
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 1

    def upcast(self, time: datetime.datetime) -> UsageRecorded:
        """The v2 fact this one is: used at ``time`` (the event's), by an unknown agent."""
        quantities: dict[Unit, int] = (
            {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
            if self.source == "model"
            else {"calls": self.calls}
        )
        return UsageRecorded(
            tenant_id=self.tenant_id,
            kind=self.source,
            resource=self.resource,
            quantities={unit: max(q, 0) for unit, q in quantities.items()},
            used_at=time,
            session_id=self.session_id,
            turn_id=self.turn_id,
            call_id=self.usage_id,
        )
