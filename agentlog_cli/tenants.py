"""Tenants and their API keys, from the command line: recorded on the log, and waited for
until the projection shows them, so a key printed here works at once."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from gateway.auth import issue_key
from projections import tenants
from projections.database import Database
from projections.tenants import ApiKeyRow
from schemas import events
from schemas.envelope import Envelope, envelope
from streams.settings import Settings

from .recording import SOURCE, record_and_wait


async def create_tenant(settings: Settings, name: str) -> str:
    """Record a tenant and its first API key; return the key (shown once, stored hashed)."""
    tenant_id = str(uuid.uuid4())
    created = envelope(
        events.TenantCreated(tenant_id=tenant_id, display_name=name),
        source=SOURCE,
        tenant_id=tenant_id,
    )
    return await _issue_key(settings, tenant_id, created)


async def _issue_key(settings: Settings, tenant_id: str, *before: Envelope[Any]) -> str:
    """Record a new key of the tenant (after the envelopes ``before``) and wait until the
    projection has it: the key works when this returns."""
    key, fact = issue_key(tenant_id)
    issued = (
        before[-1].follow(fact, step="first-key", source=SOURCE)
        if before
        else envelope(fact, source=SOURCE, tenant_id=tenant_id)
    )
    await _record_key_change(settings, [*before, issued], tenant_id, fact.key_id, revoked=False)
    return key


async def _record_key_change(
    settings: Settings, envs: list[Envelope[Any]], tenant_id: str, key_id: str, *, revoked: bool
) -> ApiKeyRow:
    """Publish ``envs``, then wait until the projection shows the key (revoked, if so)."""

    async def applied(db: Database) -> ApiKeyRow | None:
        row = await tenants.api_key(db, tenant_id, key_id)
        return row if row is not None and (row.revoked_at is not None) == revoked else None

    return await record_and_wait(settings, envs, f"key:{key_id}", applied)


async def keys_command(settings: Settings, args: argparse.Namespace) -> None:
    if args.keys_action == "create":
        print(await _issue_key(settings, args.tenant))
        return
    if args.keys_action == "revoke":
        revoked = envelope(
            events.ApiKeyRevoked(tenant_id=args.tenant, key_id=args.key_id),
            source=SOURCE,
            tenant_id=args.tenant,
        )
        row = await _record_key_change(settings, [revoked], args.tenant, args.key_id, revoked=True)
        print(f"{args.key_id} revoked at {row.revoked_at}")
        return
    db = Database(settings.database_url, settings.database_schema, pool_size=1)
    try:
        for row in await tenants.api_keys(db, args.tenant):
            state = f"revoked {row.revoked_at}" if row.revoked_at else "active"
            print(f"{row.key_id}  {row.key_prefix}…  {row.created_at}  {state}")
    finally:
        await db.close()
