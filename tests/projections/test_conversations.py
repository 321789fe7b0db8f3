"""A session's conversation as the command handler folds it: plain values in and out
(``tests/workers/test_command_state.py`` holds it equal to the read models)."""

from __future__ import annotations

import datetime
from functools import reduce

from projections.conversations import Conversation, ConversationFact, evolve
from schemas import events

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
OPENED = events.SessionCreated(session_id="s-1", agent_id="a-1")


def accepted(turn_id: str) -> events.TurnAccepted:
    return events.TurnAccepted(
        session_id="s-1",
        turn_id=turn_id,
        agent_id="a-1",
        agent_version=1,
        config=events.AgentConfig(name="n", model="dev"),
        tools=[],
        history=[],
        message="hi",
        requested_at=T0,
    )


def said(n: int, role: str = "user") -> events.MessageAppended:
    message = events.MessageValue(role=role, content=f"m-{n}")  # type: ignore[arg-type]
    return events.MessageAppended(
        session_id="s-1", turn_id="t-1", message_id=f"m-{n}", message=message
    )


def fold(*facts: ConversationFact, limit: int = 3) -> Conversation | None:
    return reduce(lambda state, fact: evolve(state, "ten-1", fact, limit), facts, None)


def test_a_session_is_known_from_its_creation_and_the_first_creation_stands() -> None:
    again = events.SessionCreated(session_id="s-1", agent_id="a-2")

    assert fold(accepted("t-0"), said(0)) is None
    assert fold(OPENED, again) == Conversation("s-1", "ten-1", "a-1")


def test_the_accepted_turn_runs_until_it_ends() -> None:
    running = fold(OPENED, accepted("t-1"))
    assert running is not None
    assert (running.active_turn, running.active_requested_at) == ("t-1", T0)

    ends: list[ConversationFact] = [
        events.TurnCompleted(
            session_id="s-1", turn_id="t-1", message_id="m", usage=events.UsageValue(), steps=1
        ),
        events.TurnFailed(session_id="s-1", turn_id="t-1", code="X", detail="x"),
        events.TurnCancelled(session_id="s-1", turn_id="t-1"),
    ]
    for end in ends:
        ended = fold(OPENED, accepted("t-1"), end)
        assert ended is not None
        assert (ended.active_turn, ended.active_requested_at) == (None, None)
    # The end of another turn leaves the running one running.
    other = fold(OPENED, accepted("t-1"), events.TurnCancelled(session_id="s-1", turn_id="t-0"))
    assert other is not None
    assert other.active_turn == "t-1"


def test_the_history_keeps_the_last_messages_once_each() -> None:
    state = fold(OPENED, said(0), said(1, "assistant"), said(1, "assistant"), said(2), said(3))

    assert state is not None
    assert [m.content for m in state.messages] == ["m-1", "m-2", "m-3"]
    assert fold(OPENED, said(0), limit=0) == Conversation("s-1", "ten-1", "a-1")
