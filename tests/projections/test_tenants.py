"""The tenants read model: its folds as plain values, and its key queries against real
Postgres (a revoked key authenticates nothing)."""

from __future__ import annotations

from projections import tenants
from projections.database import Database
from projections.ops import Notify, Update, Upsert, project
from projections.rows import Row
from projections.store import ProjectionStore
from schemas import events
from schemas.envelope import envelope

from .conversation import SOURCE, Ids, Log
from .fold_context import CTX, T


class KeyOf(Row):
    key_id: str


def test_a_registered_tool_takes_its_name_from_the_registration_before_it() -> None:
    tool = events.ToolDefinition(tool_id="tool-1", name="lookup", url="http://tools.test/l")
    data = events.ToolRegistered(tenant_id="tenant-a", tool=tool, secret_header_names=["X-Token"])

    ops = project(data, CTX)
    assert [op for op in ops if isinstance(op, Upsert) and op.table == "tools"] == [
        Upsert(
            "tools",
            ("tenant_id", "name"),
            {
                "tool_id": "tool-1",
                "tenant_id": "tenant-a",
                "name": "lookup",
                "definition": {
                    "tool_id": "tool-1",
                    "name": "lookup",
                    "description": "",
                    "url": "http://tools.test/l",
                    "parameters": {"type": "object"},
                    "timeout_s": 10.0,
                },
                "secret_header_names": ["X-Token"],
                "created_at": T,
            },
            overwrite=("tool_id", "definition", "secret_header_names"),
        )
    ]
    assert Notify("command:cmd-1") in ops  # the registration's requester is answered


def test_a_revoked_key_wakes_the_gateways_that_cache_the_tenants_keys() -> None:
    data = events.ApiKeyRevoked(tenant_id="tenant-a", key_id="key-1")

    ops = project(data, CTX)
    assert [op for op in ops if not isinstance(op, Upsert)] == [
        Notify("command:cmd-1"),  # the revocation's requester is answered
        Update("api_keys", {"key_id": "key-1", "tenant_id": "tenant-a"}, {"revoked_at": T}),
        Notify(f"{tenants.KEY_REVOKED}tenant-a"),
        Notify("key:key-1"),
    ]


async def test_a_revoked_key_authenticates_nothing_and_keys_are_listed_per_tenant(
    two_tenants: tuple[Ids, Ids], scoped: Database, store: ProjectionStore
) -> None:
    a, b = two_tenants
    key_a = f"key-{a.tenant_id}"
    # Through the view, a tenant's keys; even without a tenant filter, none of another's.
    assert [k.key_id for k in await tenants.api_keys(scoped, a.tenant_id)] == [key_a]
    assert await tenants.api_key(scoped, b.tenant_id, key_a) is None
    unfiltered = await scoped.rows(KeyOf, b.tenant_id, "SELECT key_id FROM {s}.tenant_api_keys")
    assert unfiltered == [KeyOf(key_id=f"key-{b.tenant_id}")]

    fact = events.ApiKeyRevoked(tenant_id=a.tenant_id, key_id=key_a)
    env = envelope(fact, source=SOURCE, tenant_id=a.tenant_id)
    await store.apply(Log().extend([env], partition=2))  # a partition not yet folded

    assert await tenants.tenant_for_key_hash(scoped, a.key_hash) is None
    assert await tenants.tenant_for_key_hash(scoped, b.key_hash) == b.tenant_id
    (listed,) = await tenants.api_keys(scoped, a.tenant_id)
    assert listed.revoked_at is not None
