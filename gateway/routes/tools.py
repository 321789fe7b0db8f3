"""A tenant's HTTP tools: registered or replaced (with secret headers kept apart from the
log), and listed. A registration is a command the command handler decides: a name is
taken by one registration, so two registering it at once get one tool and one
``TOOL_EXISTS``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from projections import tenants
from projections.store import storable
from projections.tenants import ToolRow
from schemas import events
from schemas.envelope import derived_id
from schemas.errors import DomainError, ErrorCode
from workers.tool_network import ToolAddressRefusedError

from ..commands import recorded, settle
from ..connections import Gateway
from ..deps import GatewayDep, IdempotencyKeyDep, TenantDep
from ..models import ToolCreate, ToolName, ToolPublic, ToolReplace
from ..openapi import documented
from ..problems import ProblemError

router = APIRouter(prefix="/v1/tools", tags=["tools"])
_RECORDS = (
    "`ToolRegisterRequested` on `agentlog.commands`, keyed by the tenant; the outcome"
    " (`ToolRegistered` or `TenantCommandRejected`) follows on `agentlog.events`"
)


def _public(row: ToolRow) -> ToolPublic:
    return ToolPublic(
        **row.definition.model_dump(mode="json"), secret_header_names=row.secret_header_names
    )


async def _register(
    request: Request,
    gw: Gateway,
    tenant_id: str,
    name: str,
    body: ToolReplace,
    key: str | None,
    *,
    replace: bool,
) -> ToolPublic:
    """Seal the secret headers under the registration's own tool id, record the command,
    and answer with the tool registered once the handler's outcome is projected (as the
    read model stores it: text without NUL or lone surrogates)."""
    try:
        await gw.tool_network.check(str(body.url))
    except ToolAddressRefusedError as exc:
        raise ProblemError(ErrorCode.TOOL_ADDRESS_REFUSED, str(exc)) from None
    fields = body.model_dump(mode="json")
    command_id = (
        await gw.idempotency.ids(
            tenant_id, key, (request.method, request.url.path, fields), "command"
        )
    )["command"]
    # Each registration has its own tool id, and its secrets are sealed under it: a
    # registration refused, or replaced, never changes the secrets of the one in force.
    tool_id = derived_id(command_id, "tool")
    definition = events.ToolDefinition(
        tool_id=tool_id,
        name=name,
        description=body.description,
        url=str(body.url),
        parameters=body.parameters,
        timeout_s=body.timeout_s,
    )
    await gw.secrets.put(tenant_id, tool_id, body.secret_headers)
    env = await gw.record(
        tenant_id,
        events.ToolRegisterRequested(
            tenant_id=tenant_id,
            tool=definition,
            secret_header_names=sorted(body.secret_headers),
            replace=replace,
        ),
        id=command_id,
    )
    async with recorded(env, f"/v1/tools/{name}", tool_id=tool_id, name=name):
        try:
            await settle(gw, tenant_id, env)
        except DomainError:
            await gw.secrets.delete(tenant_id, tool_id)
            raise
    return ToolPublic(
        **storable(definition.model_dump(mode="json")),
        secret_header_names=sorted(body.secret_headers),
    )


@router.post(
    "",
    status_code=201,
    response_model=ToolPublic,
    **documented(
        "Register a tool",
        "Registers an HTTP endpoint the tenant's agents may call, under a name no tool of"
        " the tenant has (`PUT /v1/tools/{name}` replaces one). Its URL must be public (or"
        " on a network the operator allows); its secret headers are sealed in the secret"
        " store and never enter an event, a read model or a response. Answers once the"
        " command handler's outcome is projected. With an `Idempotency-Key`, a retry"
        " answers with the same tool.",
        records=_RECORDS,
        problems=[
            ErrorCode.TOOL_EXISTS,
            ErrorCode.TOOL_ADDRESS_REFUSED,
            ErrorCode.VALIDATION_FAILED,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ],
    ),
)
async def register_tool(
    request: Request,
    body: ToolCreate,
    tenant_id: TenantDep,
    gw: GatewayDep,
    key: IdempotencyKeyDep = None,
) -> ToolPublic:
    return await _register(request, gw, tenant_id, body.name, body, key, replace=False)


@router.put(
    "/{name}",
    response_model=ToolPublic,
    **documented(
        "Register or replace a tool",
        "Registers the tool under this name, replacing the tool that holds it, if any. The"
        " replacement has a tool id of its own; turns accepted before it keep calling the"
        " tool they were accepted with. Otherwise as `POST /v1/tools`.",
        records=_RECORDS,
        problems=[
            ErrorCode.TOOL_ADDRESS_REFUSED,
            ErrorCode.VALIDATION_FAILED,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ],
    ),
)
async def replace_tool(
    request: Request,
    name: Annotated[ToolName, Path()],
    body: ToolReplace,
    tenant_id: TenantDep,
    gw: GatewayDep,
    key: IdempotencyKeyDep = None,
) -> ToolPublic:
    return await _register(request, gw, tenant_id, name, body, key, replace=True)


@router.get(
    "",
    response_model=list[ToolPublic],
    **documented("List tools", "The tenant's registered tools, by name; never their secrets."),
)
async def list_tools(tenant_id: TenantDep, gw: GatewayDep) -> list[ToolPublic]:
    return [_public(row) for row in await tenants.tools(gw.db, tenant_id)]


@router.get(
    "/{name}",
    response_model=ToolPublic,
    **documented(
        "Read a tool",
        "The tenant's tool of this name; never its secrets.",
        problems=[ErrorCode.TOOL_NOT_FOUND],
    ),
)
async def read_tool(
    name: Annotated[ToolName, Path()], tenant_id: TenantDep, gw: GatewayDep
) -> ToolPublic:
    row = await tenants.tool(gw.db, tenant_id, name)
    if row is None:
        raise ProblemError(ErrorCode.TOOL_NOT_FOUND, f"no tool named {name}")
    return _public(row)
