"""A turn's model calls: what the orchestrator asks a model, and what the model worker
recorded it answered."""

from __future__ import annotations

import datetime

from pydantic import Field

from .turns import _TurnFact
from .values import MessageValue, ToolCallValue, ToolDefinition, UsageValue


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
