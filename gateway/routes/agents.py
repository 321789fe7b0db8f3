"""Agents: created, listed, read, updated (each update a new version), disabled."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from projections import agents
from projections.agents import AgentRow
from schemas import events
from schemas.base import Fact
from schemas.errors import ErrorCode

from ..commands import recorded, settle
from ..connections import Gateway
from ..deps import GatewayDep, IdempotencyKeyDep, TenantDep
from ..fields import Id
from ..models import AgentCreate, AgentPublic, AgentUpdate, AgentVersionPublic, Page
from ..openapi import documented
from ..pagination import BY_TIME, by_created, page
from ..problems import ProblemError

router = APIRouter(prefix="/v1/agents", tags=["agents"])
_RECORDS = (
    "`{}` on `agentlog.commands`, keyed by the agent; the outcome follows on `agentlog.events`"
)


def public(row: AgentRow) -> AgentPublic:
    return AgentPublic(
        agent_id=row.agent_id,
        version=row.version,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        **row.config.model_dump(),
    )


async def agent_or_404(gw: Gateway, tenant_id: str, agent_id: str) -> AgentRow:
    row = await agents.agent(gw.db, tenant_id, agent_id)
    if row is None:
        raise ProblemError(ErrorCode.AGENT_NOT_FOUND, f"no agent {agent_id}")
    return row


async def _answer(
    gw: Gateway, tenant_id: str, agent_id: str, command: Fact, command_id: str | None = None
) -> AgentPublic:
    """Record an agent command, and answer with the agent once its outcome is projected."""
    env = await gw.record(tenant_id, command, id=command_id)
    async with recorded(env, f"/v1/agents/{agent_id}", agent_id=agent_id):
        await settle(gw, tenant_id, env)
        return public(await agent_or_404(gw, tenant_id, agent_id))


@router.post(
    "",
    status_code=201,
    response_model=AgentPublic,
    **documented(
        "Create an agent",
        "Creates an agent at version 1 and answers with it once the command handler has"
        " accepted it. With an `Idempotency-Key`, a retry answers with the same agent.",
        records=_RECORDS.format("AgentCreateRequested"),
        problems=[ErrorCode.TOOL_UNKNOWN, ErrorCode.AGENT_EXISTS, ErrorCode.IDEMPOTENCY_KEY_REUSED],
    ),
)
async def create_agent(
    request: Request,
    body: AgentCreate,
    tenant_id: TenantDep,
    gw: GatewayDep,
    key: IdempotencyKeyDep = None,
) -> AgentPublic:
    ids = await gw.idempotency.ids(
        tenant_id,
        key,
        (request.method, request.url.path, body.model_dump(mode="json")),
        "agent",
        "command",
    )
    agent_id = ids["agent"]
    env = await gw.record(
        tenant_id,
        events.AgentCreateRequested(
            agent_id=agent_id, config=events.AgentConfig(**body.model_dump())
        ),
        id=ids["command"],
    )
    async with recorded(env, f"/v1/agents/{agent_id}", agent_id=agent_id):
        await settle(gw, tenant_id, env)
        return public(await agent_or_404(gw, tenant_id, agent_id))


@router.get(
    "",
    response_model=Page,
    **documented(
        "List agents",
        "The tenant's agents in creation order, a page at a time: pass `next_cursor` as"
        " `?cursor=` for the next page.",
        problems=[ErrorCode.INVALID_CURSOR],
    ),
)
async def list_agents(
    tenant_id: TenantDep,
    gw: GatewayDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page:
    rows = await agents.agents(gw.db, tenant_id, limit + 1, BY_TIME.after(cursor))
    return page(rows, limit, by_created("agent_id"), public)


@router.get(
    "/{agent_id}",
    response_model=AgentPublic,
    **documented(
        "Read an agent",
        "The agent's current version and status.",
        problems=[ErrorCode.AGENT_NOT_FOUND],
    ),
)
async def get_agent(agent_id: Id, tenant_id: TenantDep, gw: GatewayDep) -> AgentPublic:
    return public(await agent_or_404(gw, tenant_id, agent_id))


@router.patch(
    "/{agent_id}",
    response_model=AgentPublic,
    **documented(
        "Update an agent",
        "Changes the given fields and makes a new version; the others keep their values."
        " Answers with the agent once the update is projected.",
        records=_RECORDS.format("AgentUpdateRequested"),
        problems=[
            ErrorCode.AGENT_NOT_FOUND,
            ErrorCode.AGENT_DISABLED,
            ErrorCode.TOOL_UNKNOWN,
            ErrorCode.VALIDATION_FAILED,
        ],
    ),
)
async def update_agent(
    agent_id: Id, body: AgentUpdate, tenant_id: TenantDep, gw: GatewayDep
) -> AgentPublic:
    await agent_or_404(gw, tenant_id, agent_id)
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise ProblemError(ErrorCode.VALIDATION_FAILED, "nothing to update")
    command = events.AgentUpdateRequested(agent_id=agent_id, changes=changes)
    return await _answer(gw, tenant_id, agent_id, command)


@router.post(
    "/{agent_id}/disable",
    response_model=AgentPublic,
    **documented(
        "Disable an agent",
        "A disabled agent takes no new sessions or turns; its history stays readable.",
        records=_RECORDS.format("AgentDisableRequested"),
        problems=[ErrorCode.AGENT_NOT_FOUND, ErrorCode.AGENT_DISABLED],
    ),
)
async def disable_agent(agent_id: Id, tenant_id: TenantDep, gw: GatewayDep) -> AgentPublic:
    await agent_or_404(gw, tenant_id, agent_id)
    command = events.AgentDisableRequested(agent_id=agent_id)
    return await _answer(gw, tenant_id, agent_id, command)


@router.get(
    "/{agent_id}/versions",
    response_model=list[AgentVersionPublic],
    **documented(
        "List an agent's versions",
        "The audit trail: every version, what changed and when, oldest first.",
        problems=[ErrorCode.AGENT_NOT_FOUND],
    ),
)
async def agent_versions(
    agent_id: Id, tenant_id: TenantDep, gw: GatewayDep
) -> list[AgentVersionPublic]:
    await agent_or_404(gw, tenant_id, agent_id)
    rows = await agents.versions(gw.db, tenant_id, agent_id)
    return [AgentVersionPublic.model_validate(row, from_attributes=True) for row in rows]
