"""The command handler's decisions: each requested command, against the state it concerns,
to the fact recorded as its outcome (``AgentCreated``, ``TurnAccepted``, ``TurnRejected`` …).

Pure functions of typed state: no Kafka, no database, no clock. ``command_handler``
keeps the state in memory (``command_state``) and records what these return.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from projections.agent_state import Agent, AgentStatus
from projections.conversations import Conversation
from schemas import events
from schemas.base import Fact
from schemas.errors import ErrorCode

_UPDATABLE = set(events.AgentConfig.model_fields)

AgentCommand = (
    events.AgentCreateRequested | events.AgentUpdateRequested | events.AgentDisableRequested
)

TenantCommand = (
    events.ToolRegisterRequested | events.ApiKeyCreateRequested | events.ApiKeyRevokeRequested
)


def _agent_rejected(cmd: AgentCommand, code: ErrorCode, detail: str) -> Fact:
    return events.AgentCommandRejected(
        agent_id=cmd.agent_id, command_id="", code=code, detail=detail
    )


def create_agent(
    cmd: events.AgentCreateRequested, existing: Agent | None, known_tools: set[str]
) -> Fact:
    if existing is not None:
        return _agent_rejected(cmd, ErrorCode.AGENT_EXISTS, f"agent {cmd.agent_id} already exists")
    unknown = sorted(set(cmd.config.tools) - known_tools)
    if unknown:
        return _agent_rejected(cmd, ErrorCode.TOOL_UNKNOWN, f"unknown tools: {', '.join(unknown)}")
    return events.AgentCreated(agent_id=cmd.agent_id, version=1, config=cmd.config)


def update_agent(
    cmd: events.AgentUpdateRequested, existing: Agent | None, known_tools: set[str]
) -> Fact:
    if existing is None:
        return _agent_rejected(cmd, ErrorCode.AGENT_NOT_FOUND, f"no agent {cmd.agent_id}")
    if existing.status is AgentStatus.DISABLED:
        return _agent_rejected(cmd, ErrorCode.AGENT_DISABLED, f"agent {cmd.agent_id} is disabled")
    bad = sorted(set(cmd.changes) - _UPDATABLE)
    if bad:
        return _agent_rejected(cmd, ErrorCode.VALIDATION_FAILED, f"not updatable: {', '.join(bad)}")
    try:
        config = events.AgentConfig.model_validate(
            {**existing.config.model_dump(mode="json"), **cmd.changes}
        )
    except ValueError as exc:
        return _agent_rejected(cmd, ErrorCode.VALIDATION_FAILED, str(exc))
    unknown = sorted(set(config.tools) - known_tools)
    if unknown:
        return _agent_rejected(cmd, ErrorCode.TOOL_UNKNOWN, f"unknown tools: {', '.join(unknown)}")
    return events.AgentUpdated(
        agent_id=cmd.agent_id,
        version=existing.version + 1,
        config=config,
        changed=sorted(cmd.changes),
    )


def disable_agent(cmd: events.AgentDisableRequested, existing: Agent | None) -> Fact:
    if existing is None:
        return _agent_rejected(cmd, ErrorCode.AGENT_NOT_FOUND, f"no agent {cmd.agent_id}")
    if existing.status is AgentStatus.DISABLED:
        return _agent_rejected(cmd, ErrorCode.AGENT_DISABLED, f"agent {cmd.agent_id} is disabled")
    return events.AgentDisabled(agent_id=cmd.agent_id, version=existing.version + 1)


def register_tool(
    cmd: events.ToolRegisterRequested, existing: events.ToolDefinition | None
) -> Fact:
    """``existing``: the tenant's tool of the requested name, if it has one. A name is
    taken by one registration; only a replacement may take it from another."""
    if existing is not None and not cmd.replace:
        return _tenant_rejected(
            cmd.tenant_id, ErrorCode.TOOL_EXISTS, f"a tool named {cmd.tool.name} exists already"
        )
    return events.ToolRegistered(
        tenant_id=cmd.tenant_id, tool=cmd.tool, secret_header_names=cmd.secret_header_names
    )


def _tenant_rejected(tenant_id: str, code: ErrorCode, detail: str) -> Fact:
    return events.TenantCommandRejected(
        tenant_id=tenant_id, command_id="", code=code, detail=detail
    )


def create_key(cmd: events.ApiKeyCreateRequested, exists: bool) -> Fact:
    """``exists``: the tenant has a key of this id (a new key's id is random: only a
    foreign writer repeats one)."""
    if exists:
        return _tenant_rejected(
            cmd.tenant_id, ErrorCode.VALIDATION_FAILED, f"key id {cmd.key_id} is in use"
        )
    return events.ApiKeyCreated(
        tenant_id=cmd.tenant_id,
        key_id=cmd.key_id,
        key_prefix=cmd.key_prefix,
        key_hash=cmd.key_hash,
    )


def revoke_key(cmd: events.ApiKeyRevokeRequested, revoked: bool | None) -> Fact:
    """``revoked``: whether the tenant's key of this id is revoked; None: it has none."""
    if revoked is None:
        return _tenant_rejected(cmd.tenant_id, ErrorCode.KEY_NOT_FOUND, f"no key {cmd.key_id}")
    if revoked:
        return _tenant_rejected(
            cmd.tenant_id, ErrorCode.KEY_REVOKED, f"key {cmd.key_id} is revoked already"
        )
    return events.ApiKeyRevoked(tenant_id=cmd.tenant_id, key_id=cmd.key_id)


def _session_rejected(session_id: str, code: ErrorCode, detail: str) -> Fact:
    return events.SessionCommandRejected(
        session_id=session_id, command_id="", code=code, detail=detail
    )


def create_session(cmd: events.SessionCreateRequested, exists: bool, agent: Agent | None) -> Fact:
    """``exists``: a session with this id exists already."""
    if exists:
        return _session_rejected(
            cmd.session_id, ErrorCode.SESSION_EXISTS, f"session {cmd.session_id} already exists"
        )
    if agent is None:
        return _session_rejected(
            cmd.session_id, ErrorCode.AGENT_NOT_FOUND, f"no agent {cmd.agent_id}"
        )
    if agent.status is AgentStatus.DISABLED:
        return _session_rejected(
            cmd.session_id, ErrorCode.AGENT_DISABLED, f"agent {cmd.agent_id} is disabled"
        )
    return events.SessionCreated(
        session_id=cmd.session_id, agent_id=cmd.agent_id, metadata=cmd.metadata
    )


@dataclass(frozen=True)
class TurnLimits:
    """The platform's limits on a turn. An agent's own ``max_steps`` and
    ``max_tool_calls`` apply within them: a turn records the smaller of the two."""

    max_message_bytes: int
    max_steps: int
    max_tool_calls: int
    history_messages: int = 100


def history_window(history: Sequence[events.MessageValue], limit: int) -> list[events.MessageValue]:
    """The most recent ``limit`` messages at most, starting at a user message, so that
    no tool answer is cut from the call it answers."""
    recent = list(history[-limit:]) if limit > 0 else []
    start = next((i for i, m in enumerate(recent) if m.role == "user"), len(recent))
    return recent[start:]


def request_turn(
    cmd: events.TurnRequested,
    session: Conversation | None,
    agent: Agent | None,
    tools: Sequence[events.ToolDefinition],
    limits: TurnLimits,
    requested_at: datetime.datetime | None = None,
) -> Fact:
    """``tools``: the tenant's; ``requested_at``: the time of the request's event."""

    def rejected(code: ErrorCode, detail: str) -> Fact:
        return events.TurnRejected(
            session_id=cmd.session_id,
            turn_id=cmd.turn_id,
            code=code,
            detail=detail,
            agent_id=session.agent_id if session else "",
        )

    if session is None:
        return rejected(ErrorCode.SESSION_NOT_FOUND, f"no session {cmd.session_id}")
    if agent is None:
        return rejected(ErrorCode.AGENT_NOT_FOUND, f"no agent {session.agent_id}")
    if agent.status is AgentStatus.DISABLED:
        return rejected(ErrorCode.AGENT_DISABLED, f"agent {agent.agent_id} is disabled")
    if len(cmd.message.encode()) > limits.max_message_bytes:
        return rejected(
            ErrorCode.MESSAGE_TOO_LARGE, f"message exceeds {limits.max_message_bytes} bytes"
        )
    active = session.active_turn
    if active is not None and active != cmd.turn_id:
        return rejected(ErrorCode.TURN_IN_PROGRESS, f"turn {active} is still running")
    config = agent.config.model_copy(
        update={
            "max_steps": min(agent.config.max_steps, limits.max_steps),
            "max_tool_calls": min(agent.config.max_tool_calls, limits.max_tool_calls),
        }
    )
    allowed = set(config.tools)
    return events.TurnAccepted(
        session_id=cmd.session_id,
        turn_id=cmd.turn_id,
        agent_id=agent.agent_id,
        agent_version=agent.version,
        config=config,
        tools=[t for t in tools if t.name in allowed],
        history=history_window(session.messages, limits.history_messages),
        message=cmd.message,
        requested_at=requested_at,
    )


def cancel_turn(cmd: events.TurnCancelRequested, session: Conversation | None) -> Fact:
    """Only the session's running turn can be cancelled."""
    if session is None or session.active_turn != cmd.turn_id:
        return _session_rejected(
            cmd.session_id, ErrorCode.TURN_NOT_ACTIVE, "only a running turn can be cancelled"
        )
    return events.TurnCancelled(
        session_id=cmd.session_id,
        turn_id=cmd.turn_id,
        agent_id=session.agent_id,
        requested_at=session.active_requested_at,
    )


def unprocessable(cmd: Any, command_id: str, reason: str) -> Fact | None:
    """The rejection of a command that could not be decided on (it went to the
    dead-letter topic), so that its requester, waiting on the outcome, gets an answer."""
    code, detail = ErrorCode.STEP_UNPROCESSABLE, f"the command could not be processed ({reason})"
    if isinstance(cmd, events.TurnRequested):
        return events.TurnRejected(
            session_id=cmd.session_id, turn_id=cmd.turn_id, code=code, detail=detail
        )
    if isinstance(cmd, events.SessionCreateRequested | events.TurnCancelRequested):
        return events.SessionCommandRejected(
            session_id=cmd.session_id, command_id=command_id, code=code, detail=detail
        )
    if isinstance(cmd, AgentCommand):
        return events.AgentCommandRejected(
            agent_id=cmd.agent_id, command_id=command_id, code=code, detail=detail
        )
    if isinstance(cmd, TenantCommand):
        return events.TenantCommandRejected(
            tenant_id=cmd.tenant_id, command_id=command_id, code=code, detail=detail
        )
    return None
