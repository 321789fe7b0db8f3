"""The outcomes of commands: accepted or rejected (with the code and why), by command id.

A request that recorded a command waits on its outcome (``command:<id>`` notifications)
to answer with what the command handler decided; the handler itself skips a command
whose outcome is already here, so none is decided twice.
"""

from __future__ import annotations

import datetime
from enum import StrEnum

from schemas import events

from .ops import Context, Notify, Op, Upsert, folds
from .rows import Reader, Row


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class OutcomeRow(Row):
    command_id: str
    subject: str
    outcome: Outcome
    code: str | None
    detail: str | None
    recorded_at: datetime.datetime


def _recorded(
    ctx: Context, subject: str, outcome: Outcome, code: str | None = None, detail: str | None = None
) -> list[Op]:
    row = {
        "command_id": ctx.causation_id,  # an outcome's cause is its command
        "tenant_id": ctx.tenant_id,
        "subject": subject,
        "outcome": outcome.value,
        "code": code,
        "detail": detail,
        "recorded_at": ctx.time,
    }
    return [Upsert("command_outcomes", ("command_id",), row), Notify(f"command:{ctx.causation_id}")]


@folds(
    events.AgentCreated,
    events.AgentUpdated,
    events.AgentDisabled,
    events.SessionCreated,
    events.TurnAccepted,
    events.TurnCancelled,
    events.ToolRegistered,
    events.ApiKeyCreated,
    events.ApiKeyRevoked,
)
def _accepted(
    data: events.AgentCreated
    | events.AgentUpdated
    | events.AgentDisabled
    | events.SessionCreated
    | events.TurnAccepted
    | events.TurnCancelled
    | events.ToolRegistered
    | events.ApiKeyCreated
    | events.ApiKeyRevoked,
    ctx: Context,
) -> list[Op]:
    return _recorded(ctx, data.subject, Outcome.ACCEPTED)


@folds(
    events.AgentCommandRejected,
    events.SessionCommandRejected,
    events.TenantCommandRejected,
    events.TurnRejected,
)
def _rejected(
    data: events.AgentCommandRejected
    | events.SessionCommandRejected
    | events.TenantCommandRejected
    | events.TurnRejected,
    ctx: Context,
) -> list[Op]:
    return _recorded(ctx, data.subject, Outcome.REJECTED, data.code, data.detail)


async def outcome(db: Reader, tenant_id: str, command_id: str) -> OutcomeRow | None:
    return await db.row(
        OutcomeRow,
        tenant_id,
        "SELECT * FROM {s}.command_outcomes WHERE tenant_id = %s AND command_id = %s",
        tenant_id,
        command_id,
    )
