"""A tenant's HTTP tools: registered (with secret headers kept apart from the log) and
listed."""

from __future__ import annotations

from fastapi import APIRouter

from projections import tenants
from projections.store import storable
from projections.tenants import ToolRow
from schemas import events
from schemas.envelope import derived_id
from schemas.errors import ErrorCode
from workers.tool_network import ToolAddressRefusedError

from ..deps import GatewayDep, TenantDep
from ..models import ToolCreate, ToolPublic
from ..openapi import documented
from ..problems import ProblemError

router = APIRouter(prefix="/v1/tools", tags=["tools"])
REGISTRATION_WAIT_S = 10.0


def _public(row: ToolRow) -> ToolPublic:
    return ToolPublic(
        **row.definition.model_dump(mode="json"), secret_header_names=row.secret_header_names
    )


@router.post(
    "",
    status_code=201,
    response_model=ToolPublic,
    **documented(
        "Register a tool",
        "Registers an HTTP endpoint the tenant's agents may call, or updates the tool of"
        " that name. Its URL must be public (or on a network the operator allows); its"
        " secret headers are sealed in the secret store and never enter an event, a read"
        " model or a response. Answers once the projection shows the tool.",
        records="`ToolRegistered` on `agentlog.events`, keyed by the tenant",
        problems=[ErrorCode.TOOL_ADDRESS_REFUSED, ErrorCode.VALIDATION_FAILED],
    ),
)
async def register_tool(body: ToolCreate, tenant_id: TenantDep, gw: GatewayDep) -> ToolPublic:
    try:
        await gw.tool_network.check(str(body.url))
    except ToolAddressRefusedError as exc:
        raise ProblemError(ErrorCode.TOOL_ADDRESS_REFUSED, str(exc)) from None
    # One id per tenant and name: registering a name again (even concurrently) updates it.
    tool_id = derived_id(tenant_id, f"tool/{body.name}")
    definition = events.ToolDefinition(
        tool_id=tool_id,
        name=body.name,
        description=body.description,
        url=str(body.url),
        parameters=body.parameters,
        timeout_s=body.timeout_s,
    )
    await gw.secrets.put(tenant_id, tool_id, body.secret_headers)
    await gw.record(
        tenant_id,
        events.ToolRegistered(
            tenant_id=tenant_id, tool=definition, secret_header_names=sorted(body.secret_headers)
        ),
    )
    # As the projection holds it (text is stored without NUL or lone surrogates).
    wanted = events.ToolDefinition.model_validate(storable(definition.model_dump(mode="json")))

    async def registered() -> ToolRow | None:
        row = await tenants.tool(gw.db, tenant_id, tool_id)
        return row if row is not None and row.definition == wanted else None

    row = await gw.waiter.until(f"tool:{tool_id}", registered, REGISTRATION_WAIT_S)
    if row is not None:
        return _public(row)
    return ToolPublic(
        **definition.model_dump(mode="json"), secret_header_names=sorted(body.secret_headers)
    )


@router.get(
    "",
    response_model=list[ToolPublic],
    **documented("List tools", "The tenant's registered tools, by name; never their secrets."),
)
async def list_tools(tenant_id: TenantDep, gw: GatewayDep) -> list[ToolPublic]:
    return [_public(row) for row in await tenants.tools(gw.db, tenant_id)]
