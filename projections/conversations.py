"""A session's conversation as the command handler decides its turns on it: the session,
its running turn, and its last messages (the history window, never the transcript).

``evolve`` is the one definition of how it follows from the session's facts; the command
handler folds the log with it, and ``snapshots.conversations`` reads the same state from
the read models (sessions, turns, messages), which a property test holds equal to the
fold.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace

from schemas import events
from schemas.base import Fact

ConversationFact = (
    events.SessionCreated
    | events.TurnAccepted
    | events.TurnCompleted
    | events.TurnFailed
    | events.TurnCancelled
    | events.MessageAppended
)
FACTS: tuple[type[Fact], ...] = (
    events.SessionCreated,
    events.TurnAccepted,
    events.TurnCompleted,
    events.TurnFailed,
    events.TurnCancelled,
    events.MessageAppended,
)


@dataclass(frozen=True, slots=True)
class Conversation:
    session_id: str
    tenant_id: str
    agent_id: str
    active_turn: str | None = None  # the turn accepted and not yet finished
    active_requested_at: datetime.datetime | None = None
    # The last messages, oldest first, by message id.
    history: tuple[tuple[str, events.MessageValue], ...] = ()

    @property
    def messages(self) -> list[events.MessageValue]:
        return [message for _id, message in self.history]


def evolve(
    state: Conversation | None, tenant_id: str, fact: ConversationFact, history_limit: int
) -> Conversation | None:
    """The conversation after ``fact`` of its session (None: no such session), keeping
    the last ``history_limit`` messages. A fact seen again changes nothing."""
    if isinstance(fact, events.SessionCreated):
        if state is not None:
            return state  # the first creation stands
        return Conversation(fact.session_id, tenant_id, fact.agent_id)
    if state is None:
        return None
    if isinstance(fact, events.TurnAccepted):
        return replace(state, active_turn=fact.turn_id, active_requested_at=fact.requested_at)
    if isinstance(fact, events.MessageAppended):
        if any(message_id == fact.message_id for message_id, _ in state.history):
            return state
        kept = (*state.history, (fact.message_id, fact.message))
        return replace(state, history=kept[-history_limit:] if history_limit > 0 else ())
    if fact.turn_id == state.active_turn:  # the running turn has finished
        return replace(state, active_turn=None, active_requested_at=None)
    return state
