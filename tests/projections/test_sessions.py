"""The sessions read model: the message fold as plain values, the conversation queries
against real Postgres."""

from __future__ import annotations

from projections import sessions
from projections.database import Database
from projections.ops import Upsert, project
from projections.store import ProjectionStore
from schemas import events

from .conversation import QUESTION, Ids, Log, conversation
from .fold_context import CTX


def test_a_message_is_positioned_by_its_offset_in_the_log() -> None:
    data = events.MessageAppended(
        session_id="session-1",
        turn_id="turn-1",
        message_id="msg-1",
        message=events.MessageValue(
            role="assistant",
            tool_calls=[events.ToolCallValue(id="call-1", name="lookup", arguments={"q": 1})],
        ),
    )

    message, step = project(data, CTX)

    assert message == Upsert(
        "messages",
        ("message_id",),
        {
            "message_id": "msg-1",
            "tenant_id": "tenant-a",
            "session_id": "session-1",
            "turn_id": "turn-1",
            "position": 41,
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call-1", "name": "lookup", "arguments": {"q": 1}}],
            "tool_call_id": None,
            "created_at": CTX.time,
        },
    )
    assert isinstance(step, Upsert)
    assert (step.table, step.row["position"], step.row["type"]) == (
        "turn_steps",
        41,
        "agentlog.message.appended.v1",
    )


async def test_messages_come_in_log_order_and_as_the_events_carry_them(
    store: ProjectionStore, unscoped: Database
) -> None:
    ids = Ids.new("a")
    envs = conversation(ids)
    items = Log().extend(envs.values())
    await store.apply(items)
    tenant, session = ids.tenant_id, ids.session_id

    every = await sessions.messages(unscoped, tenant, session, limit=10)
    after_first = await sessions.messages(unscoped, tenant, session, 10, every[0].position)
    answer = await sessions.message(unscoped, tenant, ids.answer_message_id)

    assert [m.message_id for m in every] == [ids.user_message_id, ids.answer_message_id]
    assert [m.value() for m in every] == [
        events.MessageValue(role="user", content=QUESTION),
        events.MessageValue(role="assistant", content="4"),
    ]
    assert after_first == every[1:]
    assert answer == every[1]
    assert await sessions.message(unscoped, "another-tenant", ids.answer_message_id) is None
    found = await sessions.session(unscoped, tenant, session)
    assert found is not None
    assert (found.agent_id, found.metadata) == (ids.agent_id, {"channel": "test"})
