"""API keys: issued to a tenant (shown once, stored as a hash), listed, and revoked.

Issuing and revoking are facts on the log (``ApiKeyCreated``, ``ApiKeyRevoked``), keyed
by the tenant. A revocation reaches every gateway process as a Postgres notification
from the projector, on which each drops the tenant's cached keys: a revoked key stops
working everywhere as soon as the projection has applied it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from fastapi import APIRouter, Request

from schemas import events

from .deps import TenantDep
from .models import ApiKeyIssued, ApiKeyPublic
from .problems import ProblemError

KEY_PREFIX = "al_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(tenant_id: str) -> tuple[str, events.ApiKeyCreated]:
    """A new key and the fact that records it (with its hash, never the key)."""
    key = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    fact = events.ApiKeyCreated(
        tenant_id=tenant_id, key_id=str(uuid.uuid4()), key_prefix=key[:7], key_hash=hash_key(key)
    )
    return key, fact


router = APIRouter(prefix="/v1/keys", tags=["keys"])


def _gateway(request: Request) -> Any:
    return request.app.state.gateway


@router.get("", response_model=list[ApiKeyPublic])
async def list_keys(request: Request, tenant_id: TenantDep) -> list[ApiKeyPublic]:
    """The tenant's keys, revoked ones included (with the time they were revoked)."""
    return [ApiKeyPublic(**row) for row in await _gateway(request).read.api_keys(tenant_id)]


@router.post("", status_code=201, response_model=ApiKeyIssued)
async def create_key(request: Request, tenant_id: TenantDep) -> ApiKeyIssued:
    """A new key for the tenant. The key itself is in this answer only: store it."""
    gw = _gateway(request)
    key, fact = issue_key(tenant_id)
    await gw.record(tenant_id, fact)
    row = await gw.changes.wait_for(
        f"key:{fact.key_id}", lambda: gw.read.api_key(tenant_id, fact.key_id), 10
    )
    if row is None:
        raise ProblemError("UNAVAILABLE", "the key was recorded but is not usable yet")
    return ApiKeyIssued(**row, key=key)


@router.delete("/{key_id}", response_model=ApiKeyPublic)
async def revoke_key(request: Request, key_id: str, tenant_id: TenantDep) -> ApiKeyPublic:
    """Revoke a key: once this answers, no gateway accepts it. Revoking a revoked key
    changes nothing."""
    gw = _gateway(request)
    row = await gw.read.api_key(tenant_id, key_id)
    if row is None:
        raise ProblemError("KEY_NOT_FOUND", f"no key {key_id}")
    if row["revoked_at"] is None:
        await gw.record(tenant_id, events.ApiKeyRevoked(tenant_id=tenant_id, key_id=key_id))

        async def revoked() -> dict[str, Any] | None:
            found = await gw.read.api_key(tenant_id, key_id)
            return found if found is not None and found["revoked_at"] is not None else None

        row = await gw.changes.wait_for(f"key:{key_id}", revoked, 10)
        if row is None:
            raise ProblemError("UNAVAILABLE", "the revocation was recorded but not yet applied")
    return ApiKeyPublic(**row)
