"""A tenant's API keys: listed, issued (shown once, stored as a hash), and revoked."""

from __future__ import annotations

from fastapi import APIRouter

from projections import tenants
from projections.tenants import ApiKeyRow
from schemas import events
from schemas.errors import ErrorCode

from ..auth import issue_key
from ..commands import OutcomeNotProjectedError, recorded
from ..deps import GatewayDep, TenantDep
from ..fields import Id
from ..models import ApiKeyIssued, ApiKeyPublic
from ..openapi import documented
from ..problems import ProblemError

router = APIRouter(prefix="/v1/keys", tags=["keys"])
KEY_WAIT_S = 10.0
_RECORDS = "`{}` on `agentlog.events`, keyed by the tenant"


def _public(row: ApiKeyRow) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(row, from_attributes=True)


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
        records=_RECORDS.format("ApiKeyCreated"),
    ),
)
async def create_key(tenant_id: TenantDep, gw: GatewayDep) -> ApiKeyIssued:
    key, fact = issue_key(tenant_id)
    env = await gw.record(tenant_id, fact)
    # Recorded: the key will work once projected, and this answer is the only place it
    # is ever shown, so a wait that runs out answers 202 with it, never a 503.
    ids = {"key_id": fact.key_id, "key": key, "key_prefix": fact.key_prefix}
    async with recorded(env, "/v1/keys", **ids):
        row = await gw.waiter.until(
            f"key:{fact.key_id}",
            lambda: tenants.api_key(gw.db, tenant_id, fact.key_id),
            KEY_WAIT_S,
        )
        if row is None:
            raise OutcomeNotProjectedError(env.id)
    return ApiKeyIssued(**row.model_dump(), key=key)


@router.delete(
    "/{key_id}",
    response_model=ApiKeyPublic,
    **documented(
        "Revoke an API key",
        "Once this answers, no gateway accepts the key. Revoking a revoked key changes nothing.",
        records=_RECORDS.format("ApiKeyRevoked"),
        problems=[ErrorCode.KEY_NOT_FOUND],
    ),
)
async def revoke_key(key_id: Id, tenant_id: TenantDep, gw: GatewayDep) -> ApiKeyPublic:
    row = await tenants.api_key(gw.db, tenant_id, key_id)
    if row is None:
        raise ProblemError(ErrorCode.KEY_NOT_FOUND, f"no key {key_id}")
    if row.revoked_at is None:
        env = await gw.record(tenant_id, events.ApiKeyRevoked(tenant_id=tenant_id, key_id=key_id))

        async def revoked() -> ApiKeyRow | None:
            found = await tenants.api_key(gw.db, tenant_id, key_id)
            return found if found is not None and found.revoked_at is not None else None

        async with recorded(env, f"/v1/keys/{key_id}", key_id=key_id):
            row = await gw.waiter.until(f"key:{key_id}", revoked, KEY_WAIT_S)
            if row is None:
                raise OutcomeNotProjectedError(env.id)
    return _public(row)
