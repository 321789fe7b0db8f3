"""The agents read model: each agent's state, and every version of it (the audit trail).

``evolve`` is the one definition of how an agent's state follows from its facts: the
fold stores what it gives, and the command handler applies its own decisions with it
before they are projected, so the two can never disagree.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from schemas import events

from .ops import Context, Op, Update, Upsert, folds
from .rows import Reader, Row, created_page


class AgentStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class Agent(Row):
    """An agent's state: what decisions about it need."""

    agent_id: str
    version: int
    config: events.AgentConfig
    status: AgentStatus


class AgentRow(Agent):
    tenant_id: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


class AgentVersionRow(Row):
    version: int
    change: str
    changed: list[str]
    config: dict[str, Any]
    recorded_at: datetime.datetime


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
    return None if agent is None else agent.model_copy(update=_changes(fact))


def _changes(fact: events.AgentUpdated | events.AgentDisabled) -> dict[str, Any]:
    """What a fact about an existing agent changes of its state."""
    if isinstance(fact, events.AgentUpdated):
        return {"version": fact.version, "config": fact.config}
    return {"version": fact.version, "status": AgentStatus.DISABLED}


def _columns(state: dict[str, Any]) -> dict[str, Any]:
    """State fields as the ``agents`` table stores them."""
    return {name: _column(value) for name, value in state.items()}


def _column(value: Any) -> Any:
    if isinstance(value, events.AgentConfig):
        return value.model_dump(mode="json")
    return value.value if isinstance(value, AgentStatus) else value


# -- folds ----------------------------------------------------------------------------


@folds(events.AgentCreated)
def _created(data: events.AgentCreated, ctx: Context) -> list[Op]:
    agent = evolve(None, data)
    assert agent is not None
    row = {
        **_columns(dict(agent)),
        "tenant_id": ctx.tenant_id,
        "created_at": ctx.time,
        "updated_at": ctx.time,
    }
    return [
        Upsert("agents", ("agent_id",), row),
        _version(data, ctx, "created", sorted(events.AgentConfig.model_fields)),
    ]


@folds(events.AgentUpdated, events.AgentDisabled)
def _changed(data: events.AgentUpdated | events.AgentDisabled, ctx: Context) -> list[Op]:
    key = {"agent_id": data.agent_id, "tenant_id": ctx.tenant_id}
    values = {**_columns(_changes(data)), "updated_at": ctx.time}
    if isinstance(data, events.AgentUpdated):
        version = _version(data, ctx, "updated", data.changed)
    else:
        version = _version(data, ctx, "disabled", ["status"])
    return [Update("agents", key, values), version]


def _version(data: AgentFact, ctx: Context, change: str, changed: list[str]) -> Upsert:
    config = {} if isinstance(data, events.AgentDisabled) else data.config.model_dump(mode="json")
    row = {
        "agent_id": data.agent_id,
        "version": data.version,
        "tenant_id": ctx.tenant_id,
        "config": config,
        "change": change,
        "changed": changed,
        "event_id": ctx.event_id,
        "recorded_at": ctx.time,
    }
    return Upsert("agent_versions", ("agent_id", "version"), row)


# -- queries --------------------------------------------------------------------------


async def agent(db: Reader, tenant_id: str, agent_id: str) -> AgentRow | None:
    return await db.row(
        AgentRow,
        tenant_id,
        "SELECT * FROM {s}.agents WHERE tenant_id = %s AND agent_id = %s",
        tenant_id,
        agent_id,
    )


async def every_agent(db: Reader) -> list[AgentRow]:
    """Every tenant's agents: the table a command handler folds in full."""
    return await db.rows(AgentRow, None, "SELECT * FROM {s}.agents")


async def agents(
    db: Reader, tenant_id: str, limit: int, after: tuple[datetime.datetime, str] | None
) -> list[AgentRow]:
    """A page in creation order, after the (created_at, agent_id) of the last one seen."""
    return await created_page(db, AgentRow, "agents", "agent_id", tenant_id, limit, after)


async def versions(db: Reader, tenant_id: str, agent_id: str) -> list[AgentVersionRow]:
    return await db.rows(
        AgentVersionRow,
        tenant_id,
        "SELECT * FROM {s}.agent_versions WHERE tenant_id = %s AND agent_id = %s ORDER BY version",
        tenant_id,
        agent_id,
    )
