"""The turns read model: each turn's status and totals, its steps in log order, and its
tool calls. A turn's waiters are woken once it has finished (``turn:<id>``)."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from schemas import events
from schemas.base import Fact

from .ops import Context, Notify, Op, Update, Upsert, folds
from .rows import Reader, Row


class TurnStatus(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def active(self) -> bool:
        """Accepted and not yet finished: the session's one running turn."""
        return self in _ACTIVE

    @property
    def finished(self) -> bool:
        return self in _FINISHED


class ModelCallStatus(StrEnum):
    """How a model call ended: the activity read model counts calls by it."""

    COMPLETED = "completed"
    FAILED = "failed"


class ToolCallStatus(StrEnum):
    REQUESTED = "requested"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"  # by the orchestrator, never performed


_ACTIVE = frozenset({TurnStatus.ACCEPTED, TurnStatus.RUNNING})
_FINISHED = frozenset(
    {TurnStatus.COMPLETED, TurnStatus.FAILED, TurnStatus.CANCELLED, TurnStatus.REJECTED}
)
ACTIVE_SQL = ", ".join(sorted(f"'{status.value}'" for status in _ACTIVE))


class TurnRow(Row):
    turn_id: str
    tenant_id: str
    session_id: str
    status: TurnStatus
    mode: str
    request: str
    agent_version: int | None
    accepted_partition: int | None
    accepted_offset: int | None
    answer_message_id: str | None
    error_code: str | None
    error_detail: str | None
    steps: int
    input_tokens: int
    output_tokens: int
    requested_at: datetime.datetime
    finished_at: datetime.datetime | None


class StepRow(Row):
    type: str
    detail: dict[str, Any]
    position: int
    recorded_at: datetime.datetime


class ToolCallRow(Row):
    tool_call_id: str
    turn_id: str
    tool: str
    arguments: dict[str, Any]
    status: ToolCallStatus
    code: str | None
    detail: str | None
    result: str | None
    requested_at: datetime.datetime
    finished_at: datetime.datetime | None


# -- folds ----------------------------------------------------------------------------


def _step(data: Any, ctx: Context) -> Upsert:
    row = {
        "event_id": ctx.event_id,
        "tenant_id": ctx.tenant_id,
        "turn_id": data.turn_id,
        "position": ctx.offset,
        "type": data.ce_type(),
        "detail": data.model_dump(mode="json"),
        "recorded_at": ctx.time,
    }
    return Upsert("turn_steps", ("event_id",), row)


def _turn(data: Any, ctx: Context, status: TurnStatus, **values: Any) -> list[Op]:
    key = {"turn_id": data.turn_id, "tenant_id": ctx.tenant_id}
    ops: list[Op] = [Update("turns", key, {"status": status.value, **values}), _step(data, ctx)]
    if status.finished:  # what a request waiting on a turn waits for
        ops.append(Notify(f"turn:{data.turn_id}"))
    return ops


# What only a turn's request knows. The request (on the commands topic) and its outcome
# (on the events topic) are applied in either order, since the projector reads the two
# topics side by side and the command handler does not wait for it: whichever comes first
# makes the row, the request sets these columns, and the outcome sets the rest.
_REQUEST_COLUMNS = ("mode", "request", "requested_at")


@folds(events.TurnRequested)
def _requested(data: events.TurnRequested, ctx: Context) -> list[Op]:
    row = {
        "turn_id": data.turn_id,
        "tenant_id": ctx.tenant_id,
        "session_id": data.session_id,
        "status": TurnStatus.REQUESTED.value,
        "mode": data.mode,
        "request": data.message,
        "requested_at": ctx.time,
    }
    return [Upsert("turns", ("turn_id",), row, overwrite=_REQUEST_COLUMNS)]


def _decided(
    data: events.TurnAccepted | events.TurnRejected,
    ctx: Context,
    request: str,
    requested_at: datetime.datetime,
    status: TurnStatus,
    **values: Any,
) -> list[Op]:
    """A turn's outcome: its row made if its request is not applied yet (with the
    request's columns as the outcome knows them, until the request sets them)."""
    row = {
        "turn_id": data.turn_id,
        "tenant_id": ctx.tenant_id,
        "session_id": data.session_id,
        "mode": "chat",
        "request": request,
        "requested_at": requested_at,
        "status": status.value,
        **values,
    }
    ops: list[Op] = [
        Upsert("turns", ("turn_id",), row, overwrite=("status", *values)),
        _step(data, ctx),
    ]
    if status.finished:
        ops.append(Notify(f"turn:{data.turn_id}"))
    return ops


@folds(events.TurnAccepted)
def _accepted(data: events.TurnAccepted, ctx: Context) -> list[Op]:
    return _decided(
        data,
        ctx,
        data.message,
        data.requested_at or ctx.time,
        TurnStatus.ACCEPTED,
        agent_version=data.agent_version,
        accepted_partition=ctx.partition,
        accepted_offset=ctx.offset,
    )


@folds(events.TurnRejected)
def _rejected(data: events.TurnRejected, ctx: Context) -> list[Op]:
    return _decided(
        data,
        ctx,
        "",
        ctx.time,
        TurnStatus.REJECTED,
        error_code=data.code,
        error_detail=data.detail,
        finished_at=ctx.time,
    )


@folds(events.TurnStarted)
def _started(data: events.TurnStarted, ctx: Context) -> list[Op]:
    return _turn(data, ctx, TurnStatus.RUNNING)


@folds(events.TurnCompleted)
def _completed(data: events.TurnCompleted, ctx: Context) -> list[Op]:
    return _turn(
        data,
        ctx,
        TurnStatus.COMPLETED,
        answer_message_id=data.message_id,
        steps=data.steps,
        input_tokens=data.usage.input_tokens,
        output_tokens=data.usage.output_tokens,
        finished_at=ctx.time,
    )


@folds(events.TurnFailed)
def _failed(data: events.TurnFailed, ctx: Context) -> list[Op]:
    return _turn(
        data,
        ctx,
        TurnStatus.FAILED,
        error_code=data.code,
        error_detail=data.detail,
        input_tokens=data.usage.input_tokens,
        output_tokens=data.usage.output_tokens,
        finished_at=ctx.time,
    )


@folds(events.TurnCancelled)
def _cancelled(data: events.TurnCancelled, ctx: Context) -> list[Op]:
    return _turn(data, ctx, TurnStatus.CANCELLED, finished_at=ctx.time)


@folds(
    events.MessageAppended,
    events.ModelCallRequested,
    events.ModelCallCompleted,
    events.ModelCallFailed,
    events.TurnStepUnprocessable,
    events.TurnDeadlinePassed,
)
def _stepped(data: Fact, ctx: Context) -> list[Op]:
    return [_step(data, ctx)]


def _tool_call_key(data: events.ToolCallCompleted | events.ToolCallFailed, ctx: Context) -> Any:
    # Tool call ids come from the model: unique within a turn, not beyond it.
    return {"turn_id": data.turn_id, "tool_call_id": data.tool_call_id, "tenant_id": ctx.tenant_id}


def _tool_call(data: events.ToolCallRequested | events.ToolCallRejected, ctx: Context) -> Any:
    return {
        "tool_call_id": data.tool_call_id,
        "tenant_id": ctx.tenant_id,
        "turn_id": data.turn_id,
        "tool": data.tool,
        "arguments": data.arguments,
        "requested_at": ctx.time,
    }


@folds(events.ToolCallRequested)
def _tool_requested(data: events.ToolCallRequested, ctx: Context) -> list[Op]:
    row = {**_tool_call(data, ctx), "status": ToolCallStatus.REQUESTED.value}
    return [Upsert("tool_calls", ("turn_id", "tool_call_id"), row), _step(data, ctx)]


@folds(events.ToolCallRejected)
def _tool_rejected(data: events.ToolCallRejected, ctx: Context) -> list[Op]:
    row = {
        **_tool_call(data, ctx),
        "status": ToolCallStatus.REJECTED.value,
        "code": data.code,
        "detail": data.detail,
        "finished_at": ctx.time,
    }
    return [Upsert("tool_calls", ("turn_id", "tool_call_id"), row), _step(data, ctx)]


@folds(events.ToolCallCompleted)
def _tool_completed(data: events.ToolCallCompleted, ctx: Context) -> list[Op]:
    values = {
        "status": ToolCallStatus.COMPLETED.value,
        "result": data.result,
        "finished_at": ctx.time,
    }
    return [Update("tool_calls", _tool_call_key(data, ctx), values), _step(data, ctx)]


@folds(events.ToolCallFailed)
def _tool_failed(data: events.ToolCallFailed, ctx: Context) -> list[Op]:
    values = {
        "status": ToolCallStatus.FAILED.value,
        "code": data.code,
        "detail": data.detail,
        "finished_at": ctx.time,
    }
    return [Update("tool_calls", _tool_call_key(data, ctx), values), _step(data, ctx)]


# -- queries --------------------------------------------------------------------------


async def turn(db: Reader, tenant_id: str, turn_id: str) -> TurnRow | None:
    return await db.row(
        TurnRow,
        tenant_id,
        "SELECT * FROM {s}.turns WHERE tenant_id = %s AND turn_id = %s",
        tenant_id,
        turn_id,
    )


async def steps(db: Reader, tenant_id: str, turn_id: str) -> list[StepRow]:
    return await db.rows(
        StepRow,
        tenant_id,
        "SELECT type, detail, position, recorded_at FROM {s}.turn_steps"
        " WHERE tenant_id = %s AND turn_id = %s ORDER BY position",
        tenant_id,
        turn_id,
    )


async def tool_calls(db: Reader, tenant_id: str, turn_id: str) -> list[ToolCallRow]:
    return await db.rows(
        ToolCallRow,
        tenant_id,
        "SELECT * FROM {s}.tool_calls WHERE tenant_id = %s AND turn_id = %s"
        " ORDER BY requested_at, tool_call_id",
        tenant_id,
        turn_id,
    )
