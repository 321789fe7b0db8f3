"""``Database`` against real Postgres: tenant isolation by row-level security, the second
wall of invariant 7. The gateway's connections take the ``agentlog_reader`` role
(migration 0002), so even a query that forgot its tenant filter sees one tenant only."""

from __future__ import annotations

import psycopg
import pytest

from projections import agents, sessions, tenants, turns
from projections.database import Database
from projections.rows import ALL_TENANTS, Row

from .conversation import CATALOG, Ids

# The tables migration 0002 puts behind row-level security.
TENANT_TABLES = (
    "tenants",
    "tools",
    "agents",
    "agent_versions",
    "command_outcomes",
    "sessions",
    "messages",
    "turns",
    "turn_steps",
    "tool_calls",
    "turn_activity",
)


class TenantOf(Row):
    tenant_id: str


class AgentOf(Row):
    agent_id: str
    tenant_id: str


class PositionOf(Row):
    partition: int
    next_offset: int


async def test_a_query_without_a_tenant_filter_sees_only_the_scoped_tenant(
    two_tenants: tuple[Ids, Ids], scoped: Database
) -> None:
    a, b = two_tenants
    # SQL that names no tenant: the query a careless new read-model function would make.
    # Only row-level security stands between it and tenant B.
    seen = await scoped.rows(AgentOf, a.tenant_id, "SELECT * FROM {s}.agents")
    seen_by_a = {
        table: {
            r.tenant_id for r in await scoped.rows(TenantOf, a.tenant_id, f"TABLE {{s}}.{table}")
        }
        for table in TENANT_TABLES
    }
    seen_by_b = {
        table: {
            r.tenant_id for r in await scoped.rows(TenantOf, b.tenant_id, f"TABLE {{s}}.{table}")
        }
        for table in TENANT_TABLES
    }

    assert seen == [AgentOf(agent_id=a.agent_id, tenant_id=a.tenant_id)]
    assert seen_by_a == {table: {a.tenant_id} for table in TENANT_TABLES}
    assert seen_by_b == {table: {b.tenant_id} for table in TENANT_TABLES}


async def test_a_query_filtered_on_another_tenant_returns_nothing(
    two_tenants: tuple[Ids, Ids], scoped: Database, unscoped: Database
) -> None:
    a, b = two_tenants
    queries = {
        "agents": "SELECT agent_id FROM {s}.agents WHERE tenant_id = %s",
        "sessions": "SELECT session_id FROM {s}.sessions WHERE tenant_id = %s",
        "turns": "SELECT turn_id FROM {s}.turns WHERE tenant_id = %s",
        "messages": "SELECT message_id FROM {s}.messages WHERE tenant_id = %s",
    }

    scoped_to_a = {
        t: await scoped.rows(Row, a.tenant_id, q, b.tenant_id) for t, q in queries.items()
    }
    # The rows are there, for a connection that row-level security does not bind.
    unbound = {
        t: len(await unscoped.rows(Row, a.tenant_id, q, b.tenant_id)) for t, q in queries.items()
    }

    assert scoped_to_a == {table: [] for table in queries}
    assert unbound == {"agents": 1, "sessions": 1, "turns": 1, "messages": 2}
    assert await agents.agent(scoped, a.tenant_id, b.agent_id) is None
    assert await turns.turn(scoped, a.tenant_id, b.turn_id) is None
    assert await sessions.session(scoped, b.tenant_id, a.session_id) is None


async def test_the_scoped_queries_answer_for_their_own_tenant(
    two_tenants: tuple[Ids, Ids], scoped: Database
) -> None:
    a, b = two_tenants

    turn_a = await turns.turn(scoped, a.tenant_id, a.turn_id)
    turn_b = await turns.turn(scoped, b.tenant_id, b.turn_id)
    messages_b = await sessions.messages(scoped, b.tenant_id, b.session_id, limit=10)

    assert turn_a is not None
    assert (turn_a.tenant_id, turn_a.status) == (a.tenant_id, turns.TurnStatus.COMPLETED)
    assert turn_b is not None
    assert (turn_b.tenant_id, turn_b.status) == (b.tenant_id, turns.TurnStatus.COMPLETED)
    assert [m.message_id for m in messages_b] == [b.user_message_id, b.answer_message_id]
    # An API key is looked up before its tenant is known: by hash, across tenants.
    assert await tenants.tenant_for_key_hash(scoped, a.key_hash) == a.tenant_id
    assert await tenants.tenant_for_key_hash(scoped, b.key_hash) == b.tenant_id


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM {s}.projection_positions",
        "SELECT * FROM {s}.applied_events",
        "SELECT key_id FROM {s}.api_keys",
    ],
)
async def test_the_reader_cannot_read_what_is_not_a_tenants_row(
    two_tenants: tuple[Ids, Ids], scoped: Database, unscoped: Database, query: str
) -> None:
    a, _b = two_tenants

    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await scoped.rows(Row, a.tenant_id, query)

    assert len(await unscoped.rows(Row, None, query)) > 0
    # The refused query leaves the pooled connection usable and still scoped.
    assert await scoped.rows(TenantOf, a.tenant_id, "SELECT tenant_id FROM {s}.tenants") == [
        TenantOf(tenant_id=a.tenant_id)
    ]


@pytest.mark.parametrize("table", ["turn_latency", "model_activity"])
async def test_the_activity_of_every_tenant_together_is_the_operators_alone(
    two_tenants: tuple[Ids, Ids], scoped: Database, table: str
) -> None:
    a, _b = two_tenants
    query = f"SELECT span FROM {{s}}.{table}"

    assert await scoped.rows(Row, a.tenant_id, query) == []
    assert len(await scoped.rows(Row, ALL_TENANTS, query)) > 0


async def test_the_workers_database_sees_every_tenant(
    two_tenants: tuple[Ids, Ids], unscoped: Database
) -> None:
    a, b = two_tenants

    seen = await unscoped.rows(
        TenantOf, None, "SELECT tenant_id FROM {s}.agents ORDER BY tenant_id"
    )
    positions = await unscoped.rows(
        PositionOf,
        None,
        "SELECT partition, next_offset FROM {s}.projection_positions"
        " WHERE topic = %s ORDER BY partition",
        CATALOG.events,
    )

    assert [r.tenant_id for r in seen] == sorted([a.tenant_id, b.tenant_id])
    assert [p.model_dump() for p in positions] == [
        {"partition": 0, "next_offset": 14},
        {"partition": 1, "next_offset": 14},
    ]
    assert [r.agent_id for r in await agents.agents(unscoped, a.tenant_id, 10, None)] == [
        a.agent_id
    ]
    turn_b = await turns.turn(unscoped, b.tenant_id, b.turn_id)
    assert turn_b is not None
    assert turn_b.tenant_id == b.tenant_id
