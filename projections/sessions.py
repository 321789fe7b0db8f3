"""The sessions read model: sessions, and the messages of their conversations in order."""

from __future__ import annotations

import datetime

from schemas import events

from .ops import Context, Op, Upsert, folds
from .rows import Reader, Row, created_page


class SessionRow(Row):
    session_id: str
    agent_id: str
    tenant_id: str
    metadata: dict[str, str]
    created_at: datetime.datetime


class MessageRow(Row):
    message_id: str
    session_id: str
    turn_id: str
    position: int  # the offset of its MessageAppended: conversation order
    role: str
    content: str | None
    tool_calls: list[events.ToolCallValue]
    tool_call_id: str | None
    created_at: datetime.datetime

    def value(self) -> events.MessageValue:
        """The message as events carry it."""
        return events.MessageValue.model_validate(self, from_attributes=True)


@folds(events.SessionCreated)
def _created(data: events.SessionCreated, ctx: Context) -> list[Op]:
    row = {
        "session_id": data.session_id,
        "tenant_id": ctx.tenant_id,
        "agent_id": data.agent_id,
        "metadata": data.metadata,
        "created_at": ctx.time,
    }
    return [Upsert("sessions", ("session_id",), row)]


@folds(events.MessageAppended)
def _message(data: events.MessageAppended, ctx: Context) -> list[Op]:
    m = data.message
    row = {
        "message_id": data.message_id,
        "tenant_id": ctx.tenant_id,
        "session_id": data.session_id,
        "turn_id": data.turn_id,
        "position": ctx.offset,
        "role": m.role,
        "content": m.content,
        "tool_calls": [c.model_dump(mode="json") for c in m.tool_calls],
        "tool_call_id": m.tool_call_id,
        "created_at": ctx.time,
    }
    return [Upsert("messages", ("message_id",), row)]


async def session(db: Reader, tenant_id: str, session_id: str) -> SessionRow | None:
    return await db.row(
        SessionRow,
        tenant_id,
        "SELECT * FROM {s}.sessions WHERE tenant_id = %s AND session_id = %s",
        tenant_id,
        session_id,
    )


async def sessions(
    db: Reader, tenant_id: str, limit: int, after: tuple[datetime.datetime, str] | None
) -> list[SessionRow]:
    """A page in creation order, after the (created_at, session_id) of the last one seen."""
    return await created_page(db, SessionRow, "sessions", "session_id", tenant_id, limit, after)


async def messages(
    db: Reader, tenant_id: str, session_id: str, limit: int, after_position: int = -1
) -> list[MessageRow]:
    return await db.rows(
        MessageRow,
        tenant_id,
        "SELECT * FROM {s}.messages WHERE tenant_id = %s AND session_id = %s"
        " AND position > %s ORDER BY position LIMIT %s",
        tenant_id,
        session_id,
        after_position,
        limit,
    )


async def message(db: Reader, tenant_id: str, message_id: str) -> MessageRow | None:
    return await db.row(
        MessageRow,
        tenant_id,
        "SELECT * FROM {s}.messages WHERE tenant_id = %s AND message_id = %s",
        tenant_id,
        message_id,
    )
