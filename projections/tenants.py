"""Read models of tenants: the tenants, their API keys (by hash) and their tools."""

from __future__ import annotations

import datetime
from typing import Any

from schemas import events

from .ops import Context, Notify, Op, Update, Upsert, folds
from .rows import Reader, Row

KEY_REVOKED = "key-revoked:"  # notification prefix: a key of the tenant named after it was revoked


class ApiKeyRow(Row):
    key_id: str
    key_prefix: str
    created_at: datetime.datetime
    revoked_at: datetime.datetime | None


class TenantRow(Row):
    tenant_id: str
    display_name: str
    created_at: datetime.datetime


class ToolRow(Row):
    tool_id: str
    tenant_id: str
    name: str
    definition: events.ToolDefinition
    secret_header_names: list[str]
    created_at: datetime.datetime


# -- folds ----------------------------------------------------------------------------


@folds(events.TenantCreated)
def _tenant_created(data: events.TenantCreated, ctx: Context) -> list[Op]:
    row = {"tenant_id": data.tenant_id, "display_name": data.display_name, "created_at": ctx.time}
    return [Upsert("tenants", ("tenant_id",), row)]


@folds(events.ApiKeyCreated)
def _key_created(data: events.ApiKeyCreated, ctx: Context) -> list[Op]:
    row = {
        "key_id": data.key_id,
        "tenant_id": data.tenant_id,
        "key_prefix": data.key_prefix,
        "key_hash": data.key_hash,
        "created_at": ctx.time,
    }
    return [Upsert("api_keys", ("key_id",), row), Notify(f"key:{data.key_id}")]


@folds(events.ApiKeyRevoked)
def _key_revoked(data: events.ApiKeyRevoked, ctx: Context) -> list[Op]:
    # Every gateway drops the tenant's cached keys on the notification.
    key = {"key_id": data.key_id, "tenant_id": data.tenant_id}
    return [
        Update("api_keys", key, {"revoked_at": ctx.time}),
        Notify(f"{KEY_REVOKED}{data.tenant_id}"),
        Notify(f"key:{data.key_id}"),
    ]


@folds(events.ToolRegistered)
def _tool_registered(data: events.ToolRegistered, ctx: Context) -> list[Op]:
    row = {
        "tool_id": data.tool.tool_id,
        "tenant_id": data.tenant_id,
        "name": data.tool.name,
        "definition": data.tool.model_dump(mode="json"),
        "secret_header_names": data.secret_header_names,
        "created_at": ctx.time,
    }
    # A name holds one registration: a replacement brings its own tool id.
    overwrite = ("tool_id", "definition", "secret_header_names")
    return [Upsert("tools", ("tenant_id", "name"), row, overwrite=overwrite)]


# -- queries --------------------------------------------------------------------------


async def tenant(db: Reader, tenant_id: str) -> TenantRow | None:
    return await db.row(
        TenantRow, tenant_id, "SELECT * FROM {s}.tenants WHERE tenant_id = %s", tenant_id
    )


async def tenant_exists(db: Reader, tenant_id: str) -> bool:
    found = await db.value(tenant_id, "SELECT 1 FROM {s}.tenants WHERE tenant_id = %s", tenant_id)
    return found is not None


async def tenant_for_key_hash(db: Reader, key_hash: str) -> str | None:
    """The tenant of a key that has not been revoked."""
    tenant: Any = await db.value(
        None,
        "SELECT tenant_id FROM {s}.api_keys WHERE key_hash = %s AND revoked_at IS NULL",
        key_hash,
    )
    return None if tenant is None else str(tenant)


def _keys_of(db: Reader) -> str:
    # The gateway's reader role reads keys only through the view of its tenant's.
    return "tenant_api_keys" if db.tenant_scoped else "api_keys"


async def api_keys(db: Reader, tenant_id: str) -> list[ApiKeyRow]:
    return await db.rows(
        ApiKeyRow,
        tenant_id,
        "SELECT key_id, key_prefix, created_at, revoked_at"
        f" FROM {{s}}.{_keys_of(db)} WHERE tenant_id = %s ORDER BY created_at, key_id",
        tenant_id,
    )


async def api_key(db: Reader, tenant_id: str, key_id: str) -> ApiKeyRow | None:
    return await db.row(
        ApiKeyRow,
        tenant_id,
        "SELECT key_id, key_prefix, created_at, revoked_at"
        f" FROM {{s}}.{_keys_of(db)} WHERE tenant_id = %s AND key_id = %s",
        tenant_id,
        key_id,
    )


async def tools(db: Reader, tenant_id: str) -> list[ToolRow]:
    return await db.rows(
        ToolRow, tenant_id, "SELECT * FROM {s}.tools WHERE tenant_id = %s ORDER BY name", tenant_id
    )


async def tool(db: Reader, tenant_id: str, name: str) -> ToolRow | None:
    return await db.row(
        ToolRow,
        tenant_id,
        "SELECT * FROM {s}.tools WHERE tenant_id = %s AND name = %s",
        tenant_id,
        name,
    )
