"""A session's own facts: opening it and refusing a command about it (aggregate: the
session, keyed by session id, which its turns share)."""

from __future__ import annotations

from pydantic import Field

from .base import Fact


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
