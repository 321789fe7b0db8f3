"""Every command and event of the core path, as versioned past-tense facts.

Commands are recorded as the fact that they were requested (``TurnRequested``); their
outcomes as further facts (``TurnAccepted``, ``ToolCallFailed``). Aggregates and their
keys: a tenant (tenant id), an agent (agent id), a session with its turns (session id).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import Fact


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# -- shared values --------------------------------------------------------------------


class AgentConfig(_Value):
    name: str
    model: str
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list, description="allowlisted tool names")
    max_steps: int = 8
    max_tool_calls: int = 16


class ToolDefinition(_Value):
    """What a turn needs to know of a tool; secret headers are never in events."""

    tool_id: str
    name: str
    description: str = ""
    url: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    timeout_s: float = 10.0


class ToolCallValue(_Value):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class MessageValue(_Value):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCallValue] = Field(default_factory=list)
    tool_call_id: str | None = None


class UsageValue(_Value):
    input_tokens: int = 0
    output_tokens: int = 0


# -- tenants --------------------------------------------------------------------------


class _TenantFact(Fact):
    subsystem = "tenant"
    subject_field = "tenant_id"
    tenant_id: str


class TenantCreated(_TenantFact):
    name = "created"
    display_name: str


class ApiKeyCreated(_TenantFact):
    name = "api_key_created"
    key_id: str
    key_prefix: str
    key_hash: str = Field(description="sha256 of the key; the key itself is never stored")


class ApiKeyRevoked(_TenantFact):
    name = "api_key_revoked"
    key_id: str


class ToolRegistered(_TenantFact):
    name = "tool_registered"
    tool: ToolDefinition
    secret_header_names: list[str] = Field(default_factory=list)


# -- agents ---------------------------------------------------------------------------


class _AgentFact(Fact):
    subsystem = "agent"
    subject_field = "agent_id"
    agent_id: str


class AgentCreateRequested(_AgentFact):
    name = "create_requested"
    config: AgentConfig


class AgentUpdateRequested(_AgentFact):
    name = "update_requested"
    changes: dict[str, Any]


class AgentDisableRequested(_AgentFact):
    name = "disable_requested"


class AgentCreated(_AgentFact):
    name = "created"
    version: int = 1
    config: AgentConfig


class AgentUpdated(_AgentFact):
    name = "updated"
    version: int
    config: AgentConfig
    changed: list[str]


class AgentDisabled(_AgentFact):
    name = "disabled"
    version: int


class AgentCommandRejected(_AgentFact):
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
    name = "create_requested"
    agent_id: str
    metadata: dict[str, str] = Field(default_factory=dict)


class SessionCreated(_SessionFact):
    name = "created"
    agent_id: str
    metadata: dict[str, str] = Field(default_factory=dict)


class SessionCommandRejected(_SessionFact):
    name = "command_rejected"
    command_id: str
    code: str
    detail: str


class _TurnFact(_SessionFact):
    subsystem = "turn"
    turn_id: str


class TurnRequested(_TurnFact):
    name = "requested"
    message: str
    mode: Literal["chat", "invoke"] = "chat"


class TurnCancelRequested(_TurnFact):
    name = "cancel_requested"


class TurnAccepted(_TurnFact):
    name = "accepted"
    agent_id: str
    agent_version: int
    config: AgentConfig
    tools: list[ToolDefinition]
    history: list[MessageValue] = Field(description="the conversation before this turn")
    message: str


class TurnRejected(_TurnFact):
    name = "rejected"
    code: str
    detail: str


class TurnStarted(_TurnFact):
    name = "started"


class TurnCompleted(_TurnFact):
    name = "completed"
    message_id: str
    usage: UsageValue
    steps: int


class TurnFailed(_TurnFact):
    name = "failed"
    code: str
    detail: str
    usage: UsageValue = Field(default_factory=UsageValue)


class TurnCancelled(_TurnFact):
    name = "cancelled"


class TurnStepUnprocessable(_TurnFact):
    """A consumer could not process one of the turn's records, which went to the
    dead-letter topic; the orchestrator fails the turn on it. ``reason`` is a code and
    an exception class name, never an exception's text (it may hold a secret)."""

    name = "step_unprocessable"
    record_id: str
    record_type: str
    consumer: str
    reason: str


class TurnDeadlinePassed(_TurnFact):
    """The turn made no progress for ``deadline_s`` after the event ``progress``; the
    orchestrator fails it unless the turn has moved on since that event."""

    name = "deadline_passed"
    progress: str
    deadline_s: float


class MessageAppended(_TurnFact):
    subsystem = "message"
    name = "appended"
    message_id: str
    message: MessageValue


class _ModelCallFact(_TurnFact):
    subsystem = "model_call"
    call_id: str
    step: int


class ModelCallRequested(_ModelCallFact):
    name = "requested"
    model: str
    messages: list[MessageValue]
    tools: list[ToolDefinition]


class ModelCallCompleted(_ModelCallFact):
    name = "completed"
    text: str
    tool_calls: list[ToolCallValue]
    usage: UsageValue
    attempts: int = 1


class ModelCallFailed(_ModelCallFact):
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
    name = "requested"
    tool_id: str
    url: str
    arguments: dict[str, Any]
    timeout_s: float


class ToolCallCompleted(_ToolCallFact):
    name = "completed"
    status_code: int
    result: str
    truncated: bool = False


class ToolCallFailed(_ToolCallFact):
    name = "failed"
    code: str
    detail: str


class ToolCallRejected(_ToolCallFact):
    name = "rejected"
    code: Literal["TOOL_NOT_ALLOWED", "TOOL_SCHEMA_INVALID", "TOOL_CALL_LIMIT"]
    detail: str
    arguments: dict[str, Any] = Field(default_factory=dict)


# -- output and usage -----------------------------------------------------------------


class OutputDelta(_TurnFact):
    """A piece of streamed model text, on the output topic for subscribers. A call that
    failed mid-stream and was retried streams again under the next ``attempt``: the
    text of earlier attempts is abandoned."""

    subsystem = "output"
    name = "delta"
    call_id: str
    index: int
    text: str
    attempt: int = 1


class OutputMessage(_TurnFact):
    """A model call's whole text; ``final`` when the model asked for no tool calls."""

    subsystem = "output"
    name = "message"
    call_id: str
    text: str
    final: bool


class UsageRecorded(Fact):
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
