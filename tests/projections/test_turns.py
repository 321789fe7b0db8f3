"""The turns read model: its folds as plain values, its queries against real Postgres."""

from __future__ import annotations

from projections import turns
from projections.database import Database
from projections.ops import Notify, Update, Upsert, project
from projections.store import ProjectionStore
from schemas import events

from .conversation import CONFIG, Ids, Log, conversation
from .fold_context import CTX, T


def test_turn_requested_adds_the_turn_and_wakes_nobody() -> None:
    data = events.TurnRequested(session_id="session-1", turn_id="turn-1", message="hi")

    assert project(data, CTX) == [
        Upsert(
            "turns",
            ("turn_id",),
            {
                "turn_id": "turn-1",
                "tenant_id": "tenant-a",
                "session_id": "session-1",
                "status": "requested",
                "mode": "chat",
                "request": "hi",
                "requested_at": T,
            },
        )
    ]


def test_turn_accepted_records_where_in_the_log_it_was_accepted() -> None:
    data = events.TurnAccepted(
        session_id="session-1",
        turn_id="turn-1",
        agent_id="agent-1",
        agent_version=3,
        config=CONFIG,
        tools=[],
        history=[],
        message="hi",
    )

    # The read models' folds in the order they registered: outcomes, then turns.
    outcome, woken, turn, step = project(data, CTX)

    assert turn == Update(
        "turns",
        {"turn_id": "turn-1", "tenant_id": "tenant-a"},
        {"status": "accepted", "agent_version": 3, "accepted_partition": 2, "accepted_offset": 41},
    )
    assert isinstance(step, Upsert)
    assert (step.table, step.row["position"], step.row["type"]) == (
        "turn_steps",
        41,
        "agentlog.turn.accepted.v1",
    )
    # Only a finished turn wakes its waiters; the accepted command wakes its own.
    assert [outcome, woken] == [
        Upsert(
            "command_outcomes",
            ("command_id",),
            {
                "command_id": "cmd-1",
                "tenant_id": "tenant-a",
                "subject": "session-1",
                "outcome": "accepted",
                "code": None,
                "detail": None,
                "recorded_at": T,
            },
        ),
        Notify("command:cmd-1"),
    ]


def test_turn_completed_finishes_the_turn_records_a_step_and_wakes_its_waiters() -> None:
    data = events.TurnCompleted(
        session_id="session-1",
        turn_id="turn-1",
        message_id="msg-9",
        usage=events.UsageValue(input_tokens=120, output_tokens=45),
        steps=3,
    )

    # After what the activity read model adds to its spans (``test_activity``).
    assert project(data, CTX)[6:] == [
        Update(
            "turns",
            {"turn_id": "turn-1", "tenant_id": "tenant-a"},
            {
                "status": "completed",
                "answer_message_id": "msg-9",
                "steps": 3,
                "input_tokens": 120,
                "output_tokens": 45,
                "finished_at": T,
            },
        ),
        Upsert(
            "turn_steps",
            ("event_id",),
            {
                "event_id": "evt-1",
                "tenant_id": "tenant-a",
                "turn_id": "turn-1",
                "position": 41,
                "type": "agentlog.turn.completed.v1",
                "detail": {
                    "session_id": "session-1",
                    "turn_id": "turn-1",
                    "agent_id": "",
                    "requested_at": None,
                    "message_id": "msg-9",
                    "usage": {"input_tokens": 120, "output_tokens": 45, "cached_input_tokens": 0},
                    "steps": 3,
                },
                "recorded_at": T,
            },
        ),
        Notify("turn:turn-1"),
    ]


async def test_the_orchestrator_replays_from_the_oldest_running_turn_of_a_partition(
    store: ProjectionStore, unscoped: Database
) -> None:
    done, running = Ids.new("done"), Ids.new("running")
    log = Log()
    await store.apply(log.extend(conversation(done).values()))
    # The second turn is accepted and started, and has not finished.
    steps = conversation(running)
    until_started = list(steps)[: list(steps).index("turn_started") + 1]
    items = log.extend(steps[step] for step in until_started)
    await store.apply(items)
    (accepted_at,) = [pos.offset for env, pos in items if isinstance(env.data, events.TurnAccepted)]

    row = await turns.turn(unscoped, running.tenant_id, running.turn_id)
    active = await turns.active_turn(unscoped, running.tenant_id, running.session_id)

    assert row is not None
    assert (row.status, row.status.active, row.status.finished) == ("running", True, False)
    assert (row.accepted_partition, row.accepted_offset) == (0, accepted_at)
    assert active == row
    assert await turns.active_turn(unscoped, done.tenant_id, done.session_id) is None
    assert await turns.open_turns_from(unscoped, 0, accepted_at + 100) == accepted_at
    # Only turns accepted before the offset the orchestrator resumes from count.
    assert await turns.open_turns_from(unscoped, 0, accepted_at) is None
    assert await turns.open_turns_from(unscoped, 1, accepted_at + 100) is None
