"""``ReadModel`` against real Postgres: tenant isolation by row-level security, the second
wall of invariant 7. The gateway's connections take the ``agentlog_reader`` role
(migration 0002), so even a query that forgot its tenant filter sees one tenant only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from projections.queries import ReadModel
from projections.store import ProjectionStore
from schemas import events
from schemas.envelope import envelope
from streams.catalog import EVENTS

from .conversation import Ids, Log, conversation

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
)


@pytest.fixture
async def tenants(database_url: str, schema: str) -> tuple[Ids, Ids]:
    """Two tenants, each with a whole conversation, applied through the store."""
    a, b = Ids.new("a"), Ids.new("b")
    log = Log()
    store = ProjectionStore(database_url, schema)
    try:
        await store.apply(log.extend(conversation(a).values(), partition=0))
        await store.apply(log.extend(conversation(b).values(), partition=1))
    finally:
        await store.close()
    return a, b


@pytest.fixture
async def scoped(database_url: str, schema: str) -> AsyncIterator[ReadModel]:
    """The gateway's read model. One pooled connection, so that every query reuses the
    connection the previous one scoped to its tenant."""
    rm = ReadModel(database_url, schema, tenant_scoped=True, pool_size=1)
    yield rm
    await rm.close()


@pytest.fixture
async def unscoped(database_url: str, schema: str) -> AsyncIterator[ReadModel]:
    """The workers' read model: they work for every tenant."""
    rm = ReadModel(database_url, schema)
    yield rm
    await rm.close()


async def test_a_query_without_a_tenant_filter_sees_only_the_scoped_tenant(
    tenants: tuple[Ids, Ids], scoped: ReadModel
) -> None:
    a, b = tenants
    # ``_all`` is the one way to send SQL that names no tenant: the query a careless
    # new method would make. Only row-level security stands between it and tenant B.
    agents = await scoped._all(a.tenant_id, "SELECT * FROM {s}.agents")
    seen_by_a = {
        table: {r["tenant_id"] for r in await scoped._all(a.tenant_id, f"TABLE {{s}}.{table}")}
        for table in TENANT_TABLES
    }
    seen_by_b = {
        table: {r["tenant_id"] for r in await scoped._all(b.tenant_id, f"TABLE {{s}}.{table}")}
        for table in TENANT_TABLES
    }

    assert [(r["agent_id"], r["tenant_id"]) for r in agents] == [(a.agent_id, a.tenant_id)]
    assert seen_by_a == {table: {a.tenant_id} for table in TENANT_TABLES}
    assert seen_by_b == {table: {b.tenant_id} for table in TENANT_TABLES}


async def test_a_query_filtered_on_another_tenant_returns_nothing(
    tenants: tuple[Ids, Ids], scoped: ReadModel, unscoped: ReadModel
) -> None:
    a, b = tenants
    queries = {
        "agents": "SELECT agent_id FROM {s}.agents WHERE tenant_id = %s",
        "sessions": "SELECT session_id FROM {s}.sessions WHERE tenant_id = %s",
        "turns": "SELECT turn_id FROM {s}.turns WHERE tenant_id = %s",
        "messages": "SELECT message_id FROM {s}.messages WHERE tenant_id = %s",
    }

    scoped_to_a = {t: await scoped._all(a.tenant_id, q, b.tenant_id) for t, q in queries.items()}
    # The rows are there, for a connection that row-level security does not bind.
    unbound = {t: len(await unscoped._all(a.tenant_id, q, b.tenant_id)) for t, q in queries.items()}

    assert scoped_to_a == {table: [] for table in queries}
    assert unbound == {"agents": 1, "sessions": 1, "turns": 1, "messages": 2}
    assert await scoped.agent(a.tenant_id, b.agent_id) is None
    assert await scoped.turn(a.tenant_id, b.turn_id) is None
    assert await scoped.session(b.tenant_id, a.session_id) is None


async def test_the_scoped_queries_answer_for_their_own_tenant(
    tenants: tuple[Ids, Ids], scoped: ReadModel
) -> None:
    a, b = tenants

    turn_a = await scoped.turn(a.tenant_id, a.turn_id)
    turn_b = await scoped.turn(b.tenant_id, b.turn_id)
    messages_b = await scoped.messages(b.tenant_id, b.session_id, limit=10)

    assert turn_a is not None
    assert (turn_a["tenant_id"], turn_a["status"]) == (a.tenant_id, "completed")
    assert turn_b is not None
    assert (turn_b["tenant_id"], turn_b["status"]) == (b.tenant_id, "completed")
    assert [m["message_id"] for m in messages_b] == [b.user_message_id, b.answer_message_id]
    # An API key is looked up before its tenant is known: by hash, across tenants.
    assert await scoped.tenant_for_key_hash(a.key_hash) == a.tenant_id
    assert await scoped.tenant_for_key_hash(b.key_hash) == b.tenant_id


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM {s}.projection_positions",
        "SELECT * FROM {s}.applied_events",
        "SELECT key_id FROM {s}.api_keys",
    ],
)
async def test_the_reader_cannot_read_what_is_not_a_tenants_row(
    tenants: tuple[Ids, Ids], scoped: ReadModel, unscoped: ReadModel, query: str
) -> None:
    a, _b = tenants

    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await scoped._all(a.tenant_id, query)

    assert len(await unscoped._all(None, query)) > 0
    # The refused query leaves the pooled connection usable and still scoped.
    assert await scoped._all(a.tenant_id, "SELECT tenant_id FROM {s}.tenants") == [
        {"tenant_id": a.tenant_id}
    ]


async def test_the_workers_read_model_sees_every_tenant(
    tenants: tuple[Ids, Ids], unscoped: ReadModel
) -> None:
    a, b = tenants

    agents = await unscoped._all(None, "SELECT tenant_id FROM {s}.agents ORDER BY tenant_id")
    positions = await unscoped._all(
        None,
        "SELECT partition, next_offset FROM {s}.projection_positions"
        " WHERE topic = %s ORDER BY partition",
        EVENTS.name,
    )

    assert [r["tenant_id"] for r in agents] == sorted([a.tenant_id, b.tenant_id])
    assert positions == [{"partition": 0, "next_offset": 12}, {"partition": 1, "next_offset": 12}]
    assert [r["agent_id"] for r in await unscoped.agents(a.tenant_id, 10, None)] == [a.agent_id]
    assert (await unscoped.turn(b.tenant_id, b.turn_id) or {}).get("tenant_id") == b.tenant_id


async def test_a_revoked_key_authenticates_nothing_and_keys_are_listed_per_tenant(
    tenants: tuple[Ids, Ids], scoped: ReadModel, database_url: str, schema: str
) -> None:
    a, b = tenants
    key_a = f"key-{a.tenant_id}"
    # Through the view, a tenant's keys; even without a tenant filter, none of another's.
    assert [k["key_id"] for k in await scoped.api_keys(a.tenant_id)] == [key_a]
    assert await scoped.api_key(b.tenant_id, key_a) is None
    unfiltered = await scoped._all(b.tenant_id, "SELECT key_id FROM {s}.tenant_api_keys")
    assert unfiltered == [{"key_id": f"key-{b.tenant_id}"}]

    store = ProjectionStore(database_url, schema)
    try:
        fact = events.ApiKeyRevoked(tenant_id=a.tenant_id, key_id=key_a)
        env = envelope(fact, source="tests", tenant_id=a.tenant_id)
        await store.apply(Log().extend([env], partition=2))  # a partition not yet folded
    finally:
        await store.close()

    assert await scoped.tenant_for_key_hash(a.key_hash) is None
    assert await scoped.tenant_for_key_hash(b.key_hash) == b.tenant_id
    (listed,) = await scoped.api_keys(a.tenant_id)
    assert listed["revoked_at"] is not None
