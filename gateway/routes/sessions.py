"""Sessions: opened on an agent, listed, read; their messages, and their output streamed."""

from __future__ import annotations

from typing import Annotated

from aiokafka import TopicPartition
from fastapi import APIRouter, Header, Query, Request
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from projections import sessions
from projections.sessions import MessageRow, SessionRow
from schemas import events
from schemas.errors import ErrorCode

from ..commands import recorded, settle
from ..connections import Gateway
from ..deps import GatewayDep, IdempotencyKeyDep, TenantDep
from ..fields import Id
from ..models import MessagePublic, Page, SessionCreate, SessionPublic
from ..openapi import documented, sent_as
from ..pagination import BY_POSITION, BY_TIME, after_event, by_created, page
from ..problems import ProblemError
from .agents import agent_or_404

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


def public(row: SessionRow) -> SessionPublic:
    return SessionPublic.model_validate(row, from_attributes=True)


async def session_or_404(gw: Gateway, tenant_id: str, session_id: str) -> SessionRow:
    row = await gw.session(tenant_id, session_id)
    if row is None:
        raise ProblemError(ErrorCode.SESSION_NOT_FOUND, f"no session {session_id}")
    return row


async def open_session(
    gw: Gateway, tenant_id: str, body: SessionCreate, ids: dict[str, str]
) -> SessionRow:
    """Record the session's command (ids ``session`` and ``session-command``) and
    answer with the session once it is projected."""
    await agent_or_404(gw, tenant_id, body.agent_id)
    session_id = ids["session"]
    env = await gw.record(
        tenant_id,
        events.SessionCreateRequested(
            session_id=session_id, agent_id=body.agent_id, metadata=body.metadata
        ),
        id=ids["session-command"],
    )
    async with recorded(env, f"/v1/sessions/{session_id}", session_id=session_id):
        await settle(gw, tenant_id, env)
        return await session_or_404(gw, tenant_id, session_id)


@router.post(
    "",
    status_code=201,
    response_model=SessionPublic,
    **documented(
        "Open a session",
        "Opens a conversation with an agent; its turns run one at a time. Answers with the"
        " session once the command handler has accepted it.",
        records="`SessionCreateRequested` on `agentlog.commands`, keyed by the session",
        problems=[
            ErrorCode.AGENT_NOT_FOUND,
            ErrorCode.AGENT_DISABLED,
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ],
    ),
)
async def create_session(
    request: Request,
    body: SessionCreate,
    tenant_id: TenantDep,
    gw: GatewayDep,
    key: IdempotencyKeyDep = None,
) -> SessionPublic:
    ids = await gw.idempotency.ids(
        tenant_id,
        key,
        (request.method, request.url.path, body.model_dump(mode="json")),
        "session",
        "session-command",
    )
    return public(await open_session(gw, tenant_id, body, ids))


@router.get(
    "",
    response_model=Page,
    **documented(
        "List sessions",
        "The tenant's sessions in creation order, a page at a time: pass `next_cursor`"
        " as `?cursor=` for the next page.",
        problems=[ErrorCode.INVALID_CURSOR],
    ),
)
async def list_sessions(
    tenant_id: TenantDep,
    gw: GatewayDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page:
    rows = await sessions.sessions(gw.db, tenant_id, limit + 1, BY_TIME.after(cursor))
    return page(rows, limit, by_created("session_id"), public)


@router.get(
    "/{session_id}",
    response_model=SessionPublic,
    **documented(
        "Read a session",
        "The session's agent and metadata.",
        problems=[ErrorCode.SESSION_NOT_FOUND],
    ),
)
async def get_session(session_id: Id, tenant_id: TenantDep, gw: GatewayDep) -> SessionPublic:
    return public(await session_or_404(gw, tenant_id, session_id))


def _message(row: MessageRow) -> MessagePublic:
    return MessagePublic.model_validate(row.model_dump())


@router.get(
    "/{session_id}/messages",
    response_model=Page,
    **documented(
        "List a session's messages",
        "The conversation in order (user, assistant and tool messages), a page at a time.",
        problems=[ErrorCode.SESSION_NOT_FOUND, ErrorCode.INVALID_CURSOR],
    ),
)
async def list_messages(
    session_id: Id,
    tenant_id: TenantDep,
    gw: GatewayDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page:
    await session_or_404(gw, tenant_id, session_id)
    after = BY_POSITION.after(cursor)
    rows = await sessions.messages(
        gw.db, tenant_id, session_id, limit + 1, -1 if after is None else after
    )
    return page(rows, limit, lambda row: row.position, _message)


@router.get(
    "/{session_id}/stream",
    **sent_as(
        "server-sent events: `delta` and `message`, each with its log position as `id`",
        {"text/event-stream": {"schema": {"type": "string"}}},
    ),
    **documented(
        "Stream a session's output",
        "Server-sent events of the session's output: `delta` (a piece of model text),"
        " `message` (a model call's whole text). Event ids are log positions"
        " (`partition:offset`): reconnect with `Last-Event-ID` to resume exactly after the"
        " last event received, however long ago. `?start=beginning` replays the session's"
        " output from its first record; the default is what it outputs from now on.",
        problems=[
            ErrorCode.SESSION_NOT_FOUND,
            ErrorCode.INVALID_CURSOR,
            ErrorCode.TOO_MANY_STREAMS,
        ],
    ),
)
async def stream(
    session_id: Id,
    tenant_id: TenantDep,
    gw: GatewayDep,
    last_event_id: Annotated[str | None, Header()] = None,
    start: Annotated[str, Query(pattern="^(now|beginning)$")] = "now",
) -> EventSourceResponse:
    await session_or_404(gw, tenant_id, session_id)
    topic = gw.catalog.output
    tp = TopicPartition(topic, await gw.publisher.partition_of(topic, session_id.encode()))
    resume = None
    if last_event_id:
        resume = await gw.streams.resume_offset(tp, *after_event(last_event_id))
    release = gw.streams.open(tenant_id)
    return EventSourceResponse(
        gw.streams.events(tp, session_id, resume, from_beginning=start == "beginning"),
        ping=15,
        background=BackgroundTask(release),
    )
