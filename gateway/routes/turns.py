"""Turns: started in a session (or in a new one, by invoking an agent), read, cancelled."""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from projections import sessions, turns
from projections.turns import TurnRow
from schemas import events
from schemas.errors import DomainError, ErrorCode

from ..commands import CommandRecordedError, recorded
from ..connections import Gateway
from ..deps import GatewayDep, IdempotencyKeyDep, TenantDep
from ..fields import Id
from ..models import SessionCreate, StepPublic, ToolCallPublic, TurnCreate, TurnDetail, TurnPublic
from ..openapi import documented
from ..problems import ProblemError
from .sessions import open_session, session_or_404

router = APIRouter(tags=["turns"])
_RECORDS = "`TurnRequested` on `agentlog.commands`, keyed by the session"
_TURN_PROBLEMS = [
    ErrorCode.MESSAGE_TOO_LARGE,
    ErrorCode.TURN_IN_PROGRESS,
    ErrorCode.AGENT_DISABLED,
    ErrorCode.IDEMPOTENCY_KEY_REUSED,
]


def _links(session_id: str, turn_id: str) -> dict[str, str]:
    return {
        "self": f"/v1/turns/{turn_id}",
        "stream": f"/v1/sessions/{session_id}/stream",
        "messages": f"/v1/sessions/{session_id}/messages",
        "cancel": f"/v1/turns/{turn_id}/cancel",
    }


async def _public(gw: Gateway, tenant_id: str, row: TurnRow) -> TurnPublic:
    answer = None
    if row.answer_message_id:
        message = await sessions.message(gw.db, tenant_id, row.answer_message_id)
        answer = None if message is None else message.content
    return TurnPublic.model_validate(
        {**row.model_dump(), "answer": answer, "links": _links(row.session_id, row.turn_id)}
    )


async def _turn_or_404(gw: Gateway, tenant_id: str, turn_id: str) -> TurnRow:
    row = await turns.turn(gw.db, tenant_id, turn_id)
    if row is None:
        raise ProblemError(ErrorCode.TURN_NOT_FOUND, f"no turn {turn_id}")
    return row


async def _wait_for_turn(gw: Gateway, tenant_id: str, turn_id: str, wait: float) -> TurnRow | None:
    """The turn once it has finished, or as it stands after ``wait`` seconds."""

    async def finished() -> TurnRow | None:
        row = await turns.turn(gw.db, tenant_id, turn_id)
        return row if row is not None and row.status.finished else None

    row = await gw.waiter.until(f"turn:{turn_id}", finished, wait)
    return row if row is not None else await turns.turn(gw.db, tenant_id, turn_id)


async def _start_turn(
    gw: Gateway,
    tenant_id: str,
    session_id: str,
    message: str,
    mode: Literal["chat", "invoke"],
    wait: float,
    ids: dict[str, str],
) -> Response:
    limit = gw.settings.max_message_bytes
    if len(message.encode()) > limit:
        raise ProblemError(ErrorCode.MESSAGE_TOO_LARGE, f"the message exceeds {limit} bytes")
    turn_id = ids["turn"]
    command = events.TurnRequested(
        session_id=session_id, turn_id=turn_id, message=message, mode=mode
    )
    env = await gw.record(tenant_id, command, id=ids["turn-command"])
    links = _links(session_id, turn_id)
    async with recorded(env, links["self"], turn_id=turn_id, session_id=session_id):
        row = await _wait_for_turn(gw, tenant_id, turn_id, wait) if wait > 0 else None
        turn = None if row is None else await _public(gw, tenant_id, row)
    if row is not None and row.status is turns.TurnStatus.REJECTED:
        raise DomainError(row.error_code or ErrorCode.VALIDATION_FAILED, row.error_detail or "")
    if turn is not None and row is not None and row.status.finished:
        return JSONResponse(turn.model_dump(mode="json"), status_code=200)
    body = {
        "turn_id": turn_id,
        "session_id": session_id,
        "status": turns.TurnStatus.REQUESTED,
        "command_id": env.id,
        "links": links,
    }
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/turns/{turn_id}"})


@router.post(
    "/v1/sessions/{session_id}/turns",
    status_code=202,
    responses={200: {"model": TurnPublic}, 202: {"description": "accepted"}},
    **documented(
        "Start a turn",
        "Sends the session a user message and answers `202` at once with the turn's id,"
        " `Location` and `links`. With `?wait=SECONDS` the request waits until the turn"
        " has finished and answers `200` with it (a rejected turn answers with its"
        " problem), or `202` when the wait runs out.",
        records=_RECORDS,
        problems=[ErrorCode.SESSION_NOT_FOUND, *_TURN_PROBLEMS],
    ),
)
async def create_turn(
    request: Request,
    session_id: Id,
    body: TurnCreate,
    tenant_id: TenantDep,
    gw: GatewayDep,
    wait: Annotated[float, Query(ge=0, le=300)] = 0,
    key: IdempotencyKeyDep = None,
) -> Response:
    await session_or_404(gw, tenant_id, session_id)
    request_key = (request.method, request.url.path, body.message)
    ids = await gw.idempotency.ids(tenant_id, key, request_key, "turn", "turn-command")
    return await _start_turn(gw, tenant_id, session_id, body.message, "chat", wait, ids)


@router.post(
    "/v1/agents/{agent_id}/invoke",
    responses={200: {"model": TurnPublic}, 202: {"description": "still running"}},
    **documented(
        "Invoke an agent",
        "A one-shot turn in a new session: opens the session, sends the message, and waits"
        " (60 s by default, `?wait=`) for the answer. Answers `200` with the finished turn,"
        " or `202` with its links while it still runs.",
        records="`SessionCreateRequested`, then `TurnRequested`, on `agentlog.commands`",
        problems=[ErrorCode.AGENT_NOT_FOUND, *_TURN_PROBLEMS],
    ),
)
async def invoke(
    request: Request,
    agent_id: Id,
    body: TurnCreate,
    tenant_id: TenantDep,
    gw: GatewayDep,
    wait: Annotated[float, Query(ge=0, le=300)] = 60,
    key: IdempotencyKeyDep = None,
) -> Response:
    ids = await gw.idempotency.ids(
        tenant_id,
        key,
        (request.method, request.url.path, body.message),
        "session",
        "session-command",
        "turn",
        "turn-command",
    )
    # Recorded but unread: the turn follows the session's command in its partition.
    with contextlib.suppress(CommandRecordedError):
        session = SessionCreate(agent_id=agent_id, metadata={"mode": "invoke"})
        await open_session(gw, tenant_id, session, ids)
    return await _start_turn(gw, tenant_id, ids["session"], body.message, "invoke", wait, ids)


@router.get(
    "/v1/turns/{turn_id}",
    response_model=TurnDetail,
    **documented(
        "Read a turn",
        "The turn's status, answer and token totals, with every step in log order (model"
        " calls, tool calls, messages) and its tool calls.",
        problems=[ErrorCode.TURN_NOT_FOUND],
    ),
)
async def get_turn(turn_id: Id, tenant_id: TenantDep, gw: GatewayDep) -> TurnDetail:
    row = await _turn_or_404(gw, tenant_id, turn_id)
    turn = await _public(gw, tenant_id, row)
    steps = [
        StepPublic.model_validate(s.model_dump())
        for s in await turns.steps(gw.db, tenant_id, turn_id)
    ]
    calls = [
        ToolCallPublic.model_validate(c.model_dump())
        for c in await turns.tool_calls(gw.db, tenant_id, turn_id)
    ]
    return TurnDetail(**turn.model_dump(), events=steps, tool_calls=calls)


@router.post(
    "/v1/turns/{turn_id}/cancel",
    status_code=202,
    **documented(
        "Cancel a turn",
        "Asks for the turn to end `cancelled`: tool calls still running get an answer in"
        " the history, and no further model call is made. A turn that finished first"
        " stays as it ended.",
        records="`TurnCancelRequested` on `agentlog.commands`, keyed by the session",
        problems=[ErrorCode.TURN_NOT_FOUND, ErrorCode.TURN_NOT_ACTIVE],
    ),
)
async def cancel_turn(turn_id: Id, tenant_id: TenantDep, gw: GatewayDep) -> dict[str, str]:
    row = await _turn_or_404(gw, tenant_id, turn_id)
    if row.status.finished:
        raise ProblemError(ErrorCode.TURN_NOT_ACTIVE, f"turn {turn_id} is {row.status.value}")
    await gw.record(
        tenant_id, events.TurnCancelRequested(session_id=row.session_id, turn_id=turn_id)
    )
    return {"turn_id": turn_id, "status": "cancel_requested"}
