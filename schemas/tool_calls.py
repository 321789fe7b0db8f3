"""A turn's tool calls: what the orchestrator asks of an allowed tool or refuses, and
what the tool worker recorded the tool answered."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .errors import ErrorCode
from .turns import _TurnFact


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
