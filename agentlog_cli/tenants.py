"""Tenants and their API keys, from the command line: a key's issue or revocation is a
command the command handler decides, waited for until the projection shows its outcome,
so a key printed here works at once."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from gateway.auth import issue_key
from projections import outcomes, tenants
from projections.database import Database
from projections.outcomes import Outcome, OutcomeRow
from schemas import events
from schemas.envelope import Envelope, envelope
from schemas.errors import ErrorCode
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
    """Ask for a new key of the tenant (after the envelopes ``before``) and wait until the
    projection has it: the key works when this returns."""
    key, command = issue_key(tenant_id)
    asked = (
        before[-1].follow(command, step="first-key", source=SOURCE)
        if before
        else envelope(command, source=SOURCE, tenant_id=tenant_id)
    )
    await _decided(settings, [*before, asked], tenant_id)
    return key


async def _decided(settings: Settings, envs: list[Envelope[Any]], tenant_id: str) -> OutcomeRow:
    """Publish ``envs``, the last a command of the tenant's, then wait until the
    projection shows its outcome (and, in the same transaction, what it changed)."""
    command_id = envs[-1].id
    return await record_and_wait(
        settings,
        envs,
        f"command:{command_id}",
        lambda db: outcomes.outcome(db, tenant_id, command_id),
    )


async def keys_command(settings: Settings, args: argparse.Namespace) -> None:
    if args.keys_action == "create":
        print(await _issue_key(settings, args.tenant))
        return
    if args.keys_action == "revoke":
        asked = envelope(
            events.ApiKeyRevokeRequested(tenant_id=args.tenant, key_id=args.key_id),
            source=SOURCE,
            tenant_id=args.tenant,
        )
        found = await _decided(settings, [asked], args.tenant)
        if found.outcome is Outcome.REJECTED and found.code != ErrorCode.KEY_REVOKED:
            raise SystemExit(f"{found.code}: {found.detail}")
        db = Database(settings.database_url, settings.database_schema, pool_size=1)
        try:
            row = await tenants.api_key(db, args.tenant, args.key_id)
        finally:
            await db.close()
        assert row is not None, "a key revoked is projected with its revocation's outcome"
        print(f"{args.key_id} revoked at {row.revoked_at}")
        return
    db = Database(settings.database_url, settings.database_schema, pool_size=1)
    try:
        for row in await tenants.api_keys(db, args.tenant):
            state = f"revoked {row.revoked_at}" if row.revoked_at else "active"
            print(f"{row.key_id}  {row.key_prefix}…  {row.created_at}  {state}")
    finally:
        await db.close()
