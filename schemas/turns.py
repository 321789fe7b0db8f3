"""A turn's facts, from the client's message to its end, and the messages it adds to
the session's conversation. Keyed by the session, so a session's turns are in order."""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import Field

from .sessions import _SessionFact
from .values import AgentConfig, MessageValue, ToolDefinition, UsageValue


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
