"""The agents read model: each agent's state (``agent_state.evolve`` gives it), and
every version of it (the audit trail)."""

from __future__ import annotations

import datetime
from typing import Any

from schemas import events

from .agent_state import Agent, AgentFact, AgentStatus, changes, evolve
from .ops import Context, Op, Update, Upsert, folds
from .rows import Reader, Row, created_page


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
    values = {**_columns(changes(data)), "updated_at": ctx.time}
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
