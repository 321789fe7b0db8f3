"""An agent's state, and the one definition of how it follows from its facts: the
agents read model stores what ``evolve`` gives, and the command handler decides on it,
folded from the log, so the two can never disagree."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from schemas import events

from .rows import Row


class AgentStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class Agent(Row):
    """An agent's state: what decisions about it need."""

    agent_id: str
    version: int
    config: events.AgentConfig
    status: AgentStatus


AgentFact = events.AgentCreated | events.AgentUpdated | events.AgentDisabled


def evolve(agent: Agent | None, fact: AgentFact) -> Agent | None:
    """The agent after ``fact`` (None: there is no such agent). A creation of an agent
    that exists changes nothing, as the read model keeps the first."""
    if isinstance(fact, events.AgentCreated):
        if agent is not None:
            return agent
        return Agent(
            agent_id=fact.agent_id,
            version=fact.version,
            config=fact.config,
            status=AgentStatus.ACTIVE,
        )
    return None if agent is None else agent.model_copy(update=changes(fact))


def changes(fact: events.AgentUpdated | events.AgentDisabled) -> dict[str, Any]:
    """What a fact about an existing agent changes of its state."""
    if isinstance(fact, events.AgentUpdated):
        return {"version": fact.version, "config": fact.config}
    return {"version": fact.version, "status": AgentStatus.DISABLED}
