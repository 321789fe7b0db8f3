"""A tenant's API keys: listed, issued (shown once, stored as a hash), and revoked."""

from __future__ import annotations

from fastapi import APIRouter

from projections import tenants
from projections.tenants import ApiKeyRow
from schemas import events
from schemas.errors import DomainError, ErrorCode

from ..auth import issue_key
from ..commands import recorded, settle
from ..connections import Gateway
from ..deps import GatewayDep, TenantDep
from ..fields import Id
from ..models import ApiKeyIssued, ApiKeyPublic
from ..openapi import documented
from ..problems import ProblemError

router = APIRouter(prefix="/v1/keys", tags=["keys"])
KEY_WAIT_S = 10.0
_RECORDS = (
    "`{}` on `agentlog.commands`, keyed by the tenant; the outcome (`{}` or"
    " `TenantCommandRejected`) follows on `agentlog.events`"
)


def _public(row: ApiKeyRow) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(row, from_attributes=True)


async def _key(gw: Gateway, tenant_id: str, key_id: str) -> ApiKeyRow:
    """The key as projected with the outcome that changed it (in one transaction)."""
    row = await tenants.api_key(gw.db, tenant_id, key_id)
    if row is None:
        raise ProblemError(ErrorCode.KEY_NOT_FOUND, f"no key {key_id}")
    return row


@router.get(
    "",
    response_model=list[ApiKeyPublic],
    **documented(
        "List API keys",
        "The tenant's keys, revoked ones included (with the time they were revoked);"
        " a key's prefix tells keys apart, the key itself is never shown again.",
    ),
)
async def list_keys(tenant_id: TenantDep, gw: GatewayDep) -> list[ApiKeyPublic]:
    return [_public(row) for row in await tenants.api_keys(gw.db, tenant_id)]


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyIssued,
    **documented(
        "Issue an API key",
        "A new key for the tenant, usable once this answers. The key itself is in this"
        " answer only: store it.",
        records=_RECORDS.format("ApiKeyCreateRequested", "ApiKeyCreated"),
    ),
)
async def create_key(tenant_id: TenantDep, gw: GatewayDep) -> ApiKeyIssued:
    key, command = issue_key(tenant_id)
    env = await gw.record(tenant_id, command)
    # Recorded: the key will work once projected, and this answer is the only place it
    # is ever shown, so a wait that runs out answers 202 with it, never a 503.
    ids = {"key_id": command.key_id, "key": key, "key_prefix": command.key_prefix}
    async with recorded(env, "/v1/keys", **ids):
        await settle(gw, tenant_id, env, KEY_WAIT_S)
        row = await _key(gw, tenant_id, command.key_id)
    return ApiKeyIssued(**row.model_dump(), key=key)


@router.delete(
    "/{key_id}",
    response_model=ApiKeyPublic,
    **documented(
        "Revoke an API key",
        "Once this answers, no gateway accepts the key. Revoking a revoked key changes nothing.",
        records=_RECORDS.format("ApiKeyRevokeRequested", "ApiKeyRevoked"),
        problems=[ErrorCode.KEY_NOT_FOUND],
    ),
)
async def revoke_key(key_id: Id, tenant_id: TenantDep, gw: GatewayDep) -> ApiKeyPublic:
    row = await _key(gw, tenant_id, key_id)
    if row.revoked_at is not None:
        return _public(row)
    env = await gw.record(
        tenant_id, events.ApiKeyRevokeRequested(tenant_id=tenant_id, key_id=key_id)
    )
    async with recorded(env, f"/v1/keys/{key_id}", key_id=key_id):
        try:
            await settle(gw, tenant_id, env, KEY_WAIT_S)
        except DomainError as exc:
            # KEY_REVOKED: another request revoked it meanwhile; this one changes nothing.
            if exc.code is not ErrorCode.KEY_REVOKED:
                raise
        return _public(await _key(gw, tenant_id, key_id))
