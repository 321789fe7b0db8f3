"""The core read models as a pure fold: each event becomes row operations.

``project(data, context)`` reads nothing but the event and its position: no wall clock,
no random ids, no database. The same events in give the same operations out, so a
rebuild from offset 0 reproduces the live tables byte for byte. ``store.py`` executes
the operations.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import singledispatch
from typing import Any

from schemas import events
from schemas.base import Fact

PROJECTION = "core"
KEY_REVOKED = "key-revoked:"  # notification prefix: a tenant's key was revoked


@dataclass(frozen=True, slots=True)
class Context:
    event_id: str
    tenant_id: str
    causation_id: str
    time: datetime.datetime
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert the row, or overwrite the given columns of the existing one."""

    table: str
    key: tuple[str, ...]
    row: dict[str, Any]
    overwrite: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Update:
    table: str
    key: dict[str, Any]
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notify:
    """Wake the readers waiting on ``key`` (a request with ``?wait=``) once the
    transaction commits. It changes no table, so folds stay comparable by their rows."""

    key: str


Op = Upsert | Update | Notify


def _tool_call_key(data: Any, ctx: Context) -> dict[str, Any]:
    # Tool call ids come from the model: unique within a turn, not beyond it.
    return {"turn_id": data.turn_id, "tool_call_id": data.tool_call_id, "tenant_id": ctx.tenant_id}


@singledispatch
def project(data: Fact, ctx: Context) -> list[Op]:
    """Facts with no read model of their own project to nothing."""
    return []


def _outcome(
    ctx: Context, subject: str, outcome: str, code: str | None = None, detail: str | None = None
) -> list[Op]:
    return [
        Upsert(
            "command_outcomes",
            ("command_id",),
            {
                "command_id": ctx.causation_id,
                "tenant_id": ctx.tenant_id,
                "subject": subject,
                "outcome": outcome,
                "code": code,
                "detail": detail,
                "recorded_at": ctx.time,
            },
        ),
        Notify(f"command:{ctx.causation_id}"),
    ]


# -- tenants --------------------------------------------------------------------------


@project.register
def _(data: events.TenantCreated, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "tenants",
            ("tenant_id",),
            {
                "tenant_id": data.tenant_id,
                "display_name": data.display_name,
                "created_at": ctx.time,
            },
        )
    ]


@project.register
def _(data: events.ApiKeyCreated, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "api_keys",
            ("key_id",),
            {
                "key_id": data.key_id,
                "tenant_id": data.tenant_id,
                "key_prefix": data.key_prefix,
                "key_hash": data.key_hash,
                "created_at": ctx.time,
            },
        ),
        Notify(f"key:{data.key_id}"),
    ]


@project.register
def _(data: events.ApiKeyRevoked, ctx: Context) -> list[Op]:
    # Every gateway drops the tenant's cached keys on the notification.
    return [
        Update(
            "api_keys",
            {"key_id": data.key_id, "tenant_id": data.tenant_id},
            {"revoked_at": ctx.time},
        ),
        Notify(f"{KEY_REVOKED}{data.tenant_id}"),
        Notify(f"key:{data.key_id}"),
    ]


@project.register
def _(data: events.ToolRegistered, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "tools",
            ("tool_id",),
            {
                "tool_id": data.tool.tool_id,
                "tenant_id": data.tenant_id,
                "name": data.tool.name,
                "definition": data.tool.model_dump(mode="json"),
                "secret_header_names": data.secret_header_names,
                "created_at": ctx.time,
            },
            overwrite=("definition", "secret_header_names"),
        ),
        Notify(f"tool:{data.tool.tool_id}"),
    ]


# -- agents ---------------------------------------------------------------------------


def _agent_version(data: Any, ctx: Context, change: str, changed: list[str]) -> Upsert:
    return Upsert(
        "agent_versions",
        ("agent_id", "version"),
        {
            "agent_id": data.agent_id,
            "version": data.version,
            "tenant_id": ctx.tenant_id,
            "config": data.config.model_dump(mode="json"),
            "change": change,
            "changed": changed,
            "event_id": ctx.event_id,
            "recorded_at": ctx.time,
        },
    )


@project.register
def _(data: events.AgentCreated, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "agents",
            ("agent_id",),
            {
                "agent_id": data.agent_id,
                "tenant_id": ctx.tenant_id,
                "version": data.version,
                "config": data.config.model_dump(mode="json"),
                "status": "active",
                "created_at": ctx.time,
                "updated_at": ctx.time,
            },
        ),
        _agent_version(data, ctx, "created", sorted(events.AgentConfig.model_fields)),
        *_outcome(ctx, data.agent_id, "accepted"),
    ]


@project.register
def _(data: events.AgentUpdated, ctx: Context) -> list[Op]:
    return [
        Update(
            "agents",
            {"agent_id": data.agent_id, "tenant_id": ctx.tenant_id},
            {
                "version": data.version,
                "config": data.config.model_dump(mode="json"),
                "updated_at": ctx.time,
            },
        ),
        _agent_version(data, ctx, "updated", data.changed),
        *_outcome(ctx, data.agent_id, "accepted"),
    ]


@project.register
def _(data: events.AgentDisabled, ctx: Context) -> list[Op]:
    return [
        Update(
            "agents",
            {"agent_id": data.agent_id, "tenant_id": ctx.tenant_id},
            {"status": "disabled", "version": data.version, "updated_at": ctx.time},
        ),
        Upsert(
            "agent_versions",
            ("agent_id", "version"),
            {
                "agent_id": data.agent_id,
                "version": data.version,
                "tenant_id": ctx.tenant_id,
                "config": {},
                "change": "disabled",
                "changed": ["status"],
                "event_id": ctx.event_id,
                "recorded_at": ctx.time,
            },
        ),
        *_outcome(ctx, data.agent_id, "accepted"),
    ]


@project.register
def _(data: events.AgentCommandRejected, ctx: Context) -> list[Op]:
    return _outcome(ctx, data.agent_id, "rejected", data.code, data.detail)


# -- sessions -------------------------------------------------------------------------


@project.register
def _(data: events.SessionCreated, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "sessions",
            ("session_id",),
            {
                "session_id": data.session_id,
                "tenant_id": ctx.tenant_id,
                "agent_id": data.agent_id,
                "metadata": data.metadata,
                "created_at": ctx.time,
            },
        ),
        *_outcome(ctx, data.session_id, "accepted"),
    ]


@project.register
def _(data: events.SessionCommandRejected, ctx: Context) -> list[Op]:
    return _outcome(ctx, data.session_id, "rejected", data.code, data.detail)


@project.register
def _(data: events.MessageAppended, ctx: Context) -> list[Op]:
    m = data.message
    return [
        Upsert(
            "messages",
            ("message_id",),
            {
                "message_id": data.message_id,
                "tenant_id": ctx.tenant_id,
                "session_id": data.session_id,
                "turn_id": data.turn_id,
                "position": ctx.offset,
                "role": m.role,
                "content": m.content,
                "tool_calls": [c.model_dump(mode="json") for c in m.tool_calls],
                "tool_call_id": m.tool_call_id,
                "created_at": ctx.time,
            },
        ),
        _step(data, ctx),
    ]


# -- turns ----------------------------------------------------------------------------


def _step(data: Any, ctx: Context) -> Upsert:
    return Upsert(
        "turn_steps",
        ("event_id",),
        {
            "event_id": ctx.event_id,
            "tenant_id": ctx.tenant_id,
            "turn_id": data.turn_id,
            "position": ctx.offset,
            "type": data.ce_type(),
            "detail": data.model_dump(mode="json"),
            "recorded_at": ctx.time,
        },
    )


_FINISHED = frozenset({"completed", "failed", "cancelled", "rejected"})


def _turn(data: Any, ctx: Context, **values: Any) -> list[Op]:
    ops: list[Op] = [
        Update("turns", {"turn_id": data.turn_id, "tenant_id": ctx.tenant_id}, values),
        _step(data, ctx),
    ]
    if values.get("status") in _FINISHED:  # what a request waiting on a turn waits for
        ops.append(Notify(f"turn:{data.turn_id}"))
    return ops


@project.register
def _(data: events.TurnRequested, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "turns",
            ("turn_id",),
            {
                "turn_id": data.turn_id,
                "tenant_id": ctx.tenant_id,
                "session_id": data.session_id,
                "status": "requested",
                "mode": data.mode,
                "request": data.message,
                "requested_at": ctx.time,
            },
        ),
    ]


@project.register
def _(data: events.TurnAccepted, ctx: Context) -> list[Op]:
    return [
        *_turn(
            data,
            ctx,
            status="accepted",
            agent_version=data.agent_version,
            accepted_partition=ctx.partition,
            accepted_offset=ctx.offset,
        ),
        *_outcome(ctx, data.session_id, "accepted"),
    ]


@project.register
def _(data: events.TurnRejected, ctx: Context) -> list[Op]:
    return [
        *_turn(
            data,
            ctx,
            status="rejected",
            error_code=data.code,
            error_detail=data.detail,
            finished_at=ctx.time,
        ),
        *_outcome(ctx, data.session_id, "rejected", data.code, data.detail),
    ]


@project.register
def _(data: events.TurnStarted, ctx: Context) -> list[Op]:
    return _turn(data, ctx, status="running")


@project.register
def _(data: events.TurnCompleted, ctx: Context) -> list[Op]:
    return _turn(
        data,
        ctx,
        status="completed",
        answer_message_id=data.message_id,
        steps=data.steps,
        input_tokens=data.usage.input_tokens,
        output_tokens=data.usage.output_tokens,
        finished_at=ctx.time,
    )


@project.register
def _(data: events.TurnFailed, ctx: Context) -> list[Op]:
    return _turn(
        data,
        ctx,
        status="failed",
        error_code=data.code,
        error_detail=data.detail,
        input_tokens=data.usage.input_tokens,
        output_tokens=data.usage.output_tokens,
        finished_at=ctx.time,
    )


@project.register
def _(data: events.TurnCancelled, ctx: Context) -> list[Op]:
    return [
        *_turn(data, ctx, status="cancelled", finished_at=ctx.time),
        *_outcome(ctx, data.session_id, "accepted"),
    ]


@project.register
def _(data: events.ModelCallRequested, ctx: Context) -> list[Op]:
    return [_step(data, ctx)]


@project.register
def _(data: events.TurnStepUnprocessable, ctx: Context) -> list[Op]:
    return [_step(data, ctx)]


@project.register
def _(data: events.TurnDeadlinePassed, ctx: Context) -> list[Op]:
    return [_step(data, ctx)]


@project.register
def _(data: events.ModelCallCompleted, ctx: Context) -> list[Op]:
    return [_step(data, ctx)]


@project.register
def _(data: events.ModelCallFailed, ctx: Context) -> list[Op]:
    return [_step(data, ctx)]


@project.register
def _(data: events.ToolCallRequested, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "tool_calls",
            ("turn_id", "tool_call_id"),
            {
                "tool_call_id": data.tool_call_id,
                "tenant_id": ctx.tenant_id,
                "turn_id": data.turn_id,
                "tool": data.tool,
                "arguments": data.arguments,
                "status": "requested",
                "requested_at": ctx.time,
            },
        ),
        _step(data, ctx),
    ]


@project.register
def _(data: events.ToolCallCompleted, ctx: Context) -> list[Op]:
    return [
        Update(
            "tool_calls",
            _tool_call_key(data, ctx),
            {"status": "completed", "result": data.result, "finished_at": ctx.time},
        ),
        _step(data, ctx),
    ]


@project.register
def _(data: events.ToolCallFailed, ctx: Context) -> list[Op]:
    return [
        Update(
            "tool_calls",
            _tool_call_key(data, ctx),
            {"status": "failed", "code": data.code, "detail": data.detail, "finished_at": ctx.time},
        ),
        _step(data, ctx),
    ]


@project.register
def _(data: events.ToolCallRejected, ctx: Context) -> list[Op]:
    return [
        Upsert(
            "tool_calls",
            ("turn_id", "tool_call_id"),
            {
                "tool_call_id": data.tool_call_id,
                "tenant_id": ctx.tenant_id,
                "turn_id": data.turn_id,
                "tool": data.tool,
                "arguments": data.arguments,
                "status": "rejected",
                "code": data.code,
                "detail": data.detail,
                "requested_at": ctx.time,
                "finished_at": ctx.time,
            },
        ),
        _step(data, ctx),
    ]
