"""Every command and event of the core path, as versioned past-tense facts.

Commands are recorded as the fact that they were requested (``TurnRequested``); their
outcomes as further facts (``TurnAccepted``, ``ToolCallFailed``). Aggregates and keys: a
tenant (tenant id), an agent (agent id), a session with its turns (session id). The values
facts carry are ``values``'s, named here too (``events.AgentConfig``). Usage facts are
``usage``'s (``events.UsageRecorded`` names the newest), billing facts ``billing``'s.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import Field

from . import billing as billing  # registers the billing facts
from .base import Fact
from .errors import ErrorCode
from .usage import UsageRecorded as UsageRecorded
from .usage import UsageRecordedV1 as UsageRecordedV1
from .values import AgentConfig as AgentConfig
from .values import MessageValue as MessageValue
from .values import ToolCallValue as ToolCallValue
from .values import ToolDefinition as ToolDefinition
from .values import UsageValue as UsageValue

# -- tenants --------------------------------------------------------------------------


class _TenantFact(Fact):
    subsystem = "tenant"
    subject_field = "tenant_id"
    tenant_id: str


class TenantCreated(_TenantFact):
    """``agentlog.tenant.created.v1``: a tenant was created (by an operator)."""

    name = "created"
    display_name: str


class ApiKeyCreated(_TenantFact):
    """``agentlog.tenant.api_key_created.v1``: a key was issued to the tenant; only
    its hash is recorded."""

    name = "api_key_created"
    key_id: str
    key_prefix: str
    key_hash: str = Field(description="sha256 of the key; the key itself is never stored")


class ApiKeyRevoked(_TenantFact):
    """``agentlog.tenant.api_key_revoked.v1``: the key authenticates nothing from now on."""

    name = "api_key_revoked"
    key_id: str


class ToolRegistered(_TenantFact):
    """``agentlog.tenant.tool_registered.v1``: the tenant registered an HTTP tool, or
    registered its name again (an update). Secret header values are not in it."""

    name = "tool_registered"
    tool: ToolDefinition
    secret_header_names: list[str] = Field(default_factory=list)


# -- agents ---------------------------------------------------------------------------


class _AgentFact(Fact):
    subsystem = "agent"
    subject_field = "agent_id"
    agent_id: str


class AgentCreateRequested(_AgentFact):
    """``agentlog.agent.create_requested.v1``: a client asked for a new agent."""

    name = "create_requested"
    config: AgentConfig


class AgentUpdateRequested(_AgentFact):
    """``agentlog.agent.update_requested.v1``: a client asked to change ``changes``."""

    name = "update_requested"
    changes: dict[str, Any]


class AgentDisableRequested(_AgentFact):
    """``agentlog.agent.disable_requested.v1``: a client asked to disable an agent."""

    name = "disable_requested"


class AgentCreated(_AgentFact):
    """``agentlog.agent.created.v1``: the agent exists, at version 1."""

    name = "created"
    version: int = 1
    config: AgentConfig


class AgentUpdated(_AgentFact):
    """``agentlog.agent.updated.v1``: the agent has a new version with this config."""

    name = "updated"
    version: int
    config: AgentConfig
    changed: list[str]


class AgentDisabled(_AgentFact):
    """``agentlog.agent.disabled.v1``: the agent takes no new sessions or turns."""

    name = "disabled"
    version: int


class AgentCommandRejected(_AgentFact):
    """``agentlog.agent.command_rejected.v1``: the command handler refused an agent
    command (``command_id``), with the code and why."""

    name = "command_rejected"
    command_id: str
    code: str
    detail: str


# -- sessions and turns ---------------------------------------------------------------


class _SessionFact(Fact):
    subsystem = "session"
    subject_field = "session_id"
    session_id: str


class SessionCreateRequested(_SessionFact):
    """``agentlog.session.create_requested.v1``: a client asked to open a session."""

    name = "create_requested"
    agent_id: str
    metadata: dict[str, str] = Field(default_factory=dict)


class SessionCreated(_SessionFact):
    """``agentlog.session.created.v1``: the session is open on its agent."""

    name = "created"
    agent_id: str
    metadata: dict[str, str] = Field(default_factory=dict)


class SessionCommandRejected(_SessionFact):
    """``agentlog.session.command_rejected.v1``: the command handler refused a
    session command (``command_id``): opening it, or cancelling one of its turns."""

    name = "command_rejected"
    command_id: str
    code: str
    detail: str


class _TurnFact(_SessionFact):
    subsystem = "turn"
    turn_id: str


class TurnRequested(_TurnFact):
    """``agentlog.turn.requested.v1``: a client sent the session a message."""

    name = "requested"
    message: str
    mode: Literal["chat", "invoke"] = "chat"


class TurnCancelRequested(_TurnFact):
    """``agentlog.turn.cancel_requested.v1``: a client asked to cancel a turn."""

    name = "cancel_requested"


class TurnAccepted(_TurnFact):
    """``agentlog.turn.accepted.v1``: the turn will run, with everything it needs: the
    agent's config, its allowed tools and the conversation so far, so that the
    orchestrator decides from the log alone."""

    name = "accepted"
    agent_id: str
    agent_version: int
    config: AgentConfig
    tools: list[ToolDefinition]
    history: list[MessageValue] = Field(description="the conversation before this turn")
    message: str
    requested_at: datetime.datetime | None = Field(
        default=None, description="when the turn was requested (its ``requested`` event)"
    )


class TurnRejected(_TurnFact):
    """``agentlog.turn.rejected.v1``: the turn will not run, with the code and why."""

    name = "rejected"
    code: str
    detail: str
    agent_id: str = Field(default="", description="the session's agent, if it has one")


class _TurnEnd(_TurnFact):
    """What every end of an accepted turn says for the operators' read models, so that
    they count turns per agent and time them from the log alone."""

    agent_id: str = Field(default="", description="the agent that ran the turn")
    requested_at: datetime.datetime | None = Field(
        default=None, description="when the turn was requested; its duration ends here"
    )


class TurnStarted(_TurnFact):
    """``agentlog.turn.started.v1``: the orchestrator began the turn."""

    name = "started"


class TurnCompleted(_TurnEnd):
    """``agentlog.turn.completed.v1``: the model answered without tool calls; the
    answer is the message ``message_id``."""

    name = "completed"
    message_id: str
    usage: UsageValue
    steps: int


class TurnFailed(_TurnEnd):
    """``agentlog.turn.failed.v1``: the turn ended without an answer, with the code and
    why."""

    name = "failed"
    code: str
    detail: str
    usage: UsageValue = Field(default_factory=UsageValue)


class TurnCancelled(_TurnEnd):
    """``agentlog.turn.cancelled.v1``: the turn ended on a client's request."""

    name = "cancelled"


class TurnStepUnprocessable(_TurnFact):
    """``agentlog.turn.step_unprocessable.v1``: a consumer could not process one of the
    turn's records, which went to the dead-letter topic; the orchestrator fails the turn
    on it. ``reason`` is a code and an exception class name, never an exception's text
    (it may hold a secret)."""

    name = "step_unprocessable"
    record_id: str
    record_type: str
    consumer: str
    reason: str


class TurnDeadlinePassed(_TurnFact):
    """``agentlog.turn.deadline_passed.v1``: the turn made no progress for
    ``deadline_s`` after the event ``progress``; the orchestrator fails it unless the
    turn has moved on since that event."""

    name = "deadline_passed"
    progress: str
    deadline_s: float


class MessageAppended(_TurnFact):
    """``agentlog.message.appended.v1``: a message joined the session's conversation."""

    subsystem = "message"
    name = "appended"
    message_id: str
    message: MessageValue


class _ModelCallFact(_TurnFact):
    subsystem = "model_call"
    call_id: str
    step: int


class ModelCallRequested(_ModelCallFact):
    """``agentlog.model_call.requested.v1``: the orchestrator asks for one model
    call, with the messages and tools the model sees."""

    name = "requested"
    model: str
    agent_id: str = Field(
        default="", description="the turn's agent (for usage); '' if recorded before"
    )
    agent_version: int = 0
    messages: list[MessageValue]
    tools: list[ToolDefinition]


class _ModelCallEnd(_ModelCallFact):
    """Who answered, and when the call was requested (its latency ends with this
    record), for the operators' read models. Nothing here is measured: a call performed
    again records the same payload."""

    provider: str = Field(default="", description="the provider that served the call")
    model: str = Field(default="", description="the model as the provider names it")
    requested_at: datetime.datetime | None = Field(
        default=None, description="when the call was requested (its ``requested`` event)"
    )


class ModelCallCompleted(_ModelCallEnd):
    """``agentlog.model_call.completed.v1``: the model answered (text and tool
    calls), with the usage of every attempt."""

    name = "completed"
    text: str
    tool_calls: list[ToolCallValue]
    usage: UsageValue
    attempts: int = 1


class ModelCallFailed(_ModelCallEnd):
    """``agentlog.model_call.failed.v1``: the model call failed for good, with the
    code, why, and the usage of every attempt."""

    name = "failed"
    code: str
    detail: str
    usage: UsageValue
    attempts: int = 1


class _ToolCallFact(_TurnFact):
    subsystem = "tool_call"
    tool_call_id: str
    step: int
    tool: str


class ToolCallRequested(_ToolCallFact):
    """``agentlog.tool_call.requested.v1``: the orchestrator asks for one call of
    an allowed tool, with arguments its schema accepts."""

    name = "requested"
    tool_id: str
    agent_id: str = Field(
        default="", description="the turn's agent (for usage); '' if recorded before"
    )
    agent_version: int = 0
    url: str
    arguments: dict[str, Any]
    timeout_s: float


class ToolCallCompleted(_ToolCallFact):
    """``agentlog.tool_call.completed.v1``: the tool answered; ``result`` is its
    answer, cut at the platform's limit."""

    name = "completed"
    status_code: int
    result: str
    truncated: bool = False


class ToolCallFailed(_ToolCallFact):
    """``agentlog.tool_call.failed.v1``: the tool could not be called or answered
    with an error, with the code and why."""

    name = "failed"
    code: str
    detail: str


ToolRejectCode = Literal[
    ErrorCode.TOOL_NOT_ALLOWED, ErrorCode.TOOL_SCHEMA_INVALID, ErrorCode.TOOL_CALL_LIMIT
]


class ToolCallRejected(_ToolCallFact):
    """``agentlog.tool_call.rejected.v1``: the orchestrator refused a tool call the
    model made (not allowed, arguments invalid, too many calls); the refusal is the
    call's answer."""

    name = "rejected"
    code: ToolRejectCode
    detail: str
    arguments: dict[str, Any] = Field(default_factory=dict)


# -- output -----------------------------------------------------------------


class OutputDelta(_TurnFact):
    """``agentlog.output.delta.v1``: a piece of streamed model text, on the output
    topic for subscribers. A call that failed mid-stream and was retried streams again
    under the next ``attempt``: the text of earlier attempts is abandoned."""

    subsystem = "output"
    name = "delta"
    call_id: str
    index: int
    text: str
    attempt: int = 1


class OutputMessage(_TurnFact):
    """``agentlog.output.message.v1``: a model call's whole text; ``final`` when the
    model asked for no tool calls."""

    subsystem = "output"
    name = "message"
    call_id: str
    text: str
    final: bool
