"""An agent's facts: the commands a client sends about it and their outcomes, each
version of its config (aggregate: the agent, keyed by agent id)."""

from __future__ import annotations

from typing import Any

from .base import Fact
from .values import AgentConfig


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
