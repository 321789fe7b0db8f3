"""A session's conversation as the command handler decides its turns on it: the session,
its running turn, and its last messages (the history window, never the transcript).

``evolve`` is the one definition of how it follows from the session's facts; the command
handler folds the log with it, and ``of_partitions`` reads the same state from the read
models (sessions, turns, messages), which a property test holds equal to the fold.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from schemas import events
from schemas.base import Fact

from .rows import Reader, Row
from .sessions import MessageRow
from .turns import ACTIVE_SQL

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


# -- queries --------------------------------------------------------------------------


class _SessionRow(Row):
    session_id: str
    tenant_id: str
    agent_id: str


class _ActiveRow(Row):
    session_id: str
    turn_id: str
    requested_at: datetime.datetime


async def of_partitions(
    db: Reader,
    partitions: Collection[int],
    partition_of: Callable[[str], int],
    history_limit: int,
) -> dict[str, Conversation]:
    """The conversations of every session whose facts are on ``partitions`` of the
    events topic (``partition_of`` a session id), as the read models hold them: read
    in a snapshot, with the projection's positions, it is where a command handler's
    fold of the log starts."""
    found = {
        row.session_id: Conversation(row.session_id, row.tenant_id, row.agent_id)
        for row in await db.rows(
            _SessionRow, None, "SELECT session_id, tenant_id, agent_id FROM {s}.sessions"
        )
        if partition_of(row.session_id) in partitions
    }
    ids = list(found)
    for active in await db.rows(
        _ActiveRow,
        None,
        "SELECT session_id, turn_id, requested_at FROM {s}.turns"
        f" WHERE session_id = ANY(%s) AND status IN ({ACTIVE_SQL})",
        ids,
    ):
        found[active.session_id] = replace(
            found[active.session_id],
            active_turn=active.turn_id,
            active_requested_at=active.requested_at,
        )
    history: dict[str, list[tuple[str, events.MessageValue]]] = {}
    for m in await db.rows(
        MessageRow,
        None,
        "SELECT * FROM (SELECT *, row_number() OVER"
        " (PARTITION BY session_id ORDER BY position DESC) AS latest"
        " FROM {s}.messages WHERE session_id = ANY(%s)) m"
        " WHERE latest <= %s ORDER BY session_id, position",
        ids,
        history_limit,
    ):
        history.setdefault(m.session_id, []).append((m.message_id, m.value()))
    for session_id, messages in history.items():
        found[session_id] = replace(found[session_id], history=tuple(messages))
    return found
