"""The tenant a key belongs to: how its holder learns the tenant id that usage, invoices
and operators name it by."""

from __future__ import annotations

from fastapi import APIRouter

from projections import tenants
from schemas.errors import ErrorCode

from ..deps import GatewayDep, TenantDep
from ..models import TenantPublic
from ..openapi import documented
from ..problems import ProblemError

router = APIRouter(prefix="/v1/tenant", tags=["tenant"])


@router.get(
    "",
    response_model=TenantPublic,
    **documented(
        "Read the key's tenant",
        "The tenant whose key signed the request: its id (which usage exports, invoices"
        " and an operator's requests name it by) and its name.",
        problems=[ErrorCode.TENANT_NOT_FOUND],
    ),
)
async def read_tenant(tenant_id: TenantDep, gw: GatewayDep) -> TenantPublic:
    row = await tenants.tenant(gw.db, tenant_id)
    if row is None:  # a key is only ever issued to a tenant that exists: not yet projected
        raise ProblemError(ErrorCode.TENANT_NOT_FOUND, f"no tenant {tenant_id} yet")
    return TenantPublic.model_validate(row, from_attributes=True)
