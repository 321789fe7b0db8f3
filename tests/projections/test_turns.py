"""The turns read model: its folds as plain values, its queries against real Postgres."""

from __future__ import annotations

from projections import snapshots, turns
from projections.database import Database
from projections.ops import Notify, Update, Upsert, project
from projections.store import ProjectionStore
from schemas import events
from schemas.base import Fact
from schemas.envelope import envelope

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
            overwrite=("mode", "request", "requested_at"),
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

    # The row is made if the request is not applied yet (it is on another topic).
    assert turn == Upsert(
        "turns",
        ("turn_id",),
        {
            "turn_id": "turn-1",
            "tenant_id": "tenant-a",
            "session_id": "session-1",
            "mode": "chat",
            "request": "hi",
            "requested_at": T,
            "status": "accepted",
            "agent_version": 3,
            "accepted_partition": 2,
            "accepted_offset": 41,
        },
        overwrite=("status", "agent_version", "accepted_partition", "accepted_offset"),
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

    assert row is not None
    assert (row.status, row.status.active, row.status.finished) == ("running", True, False)
    assert (row.accepted_partition, row.accepted_offset) == (0, accepted_at)
    assert await snapshots.open_turns_from(unscoped, 0, accepted_at + 100) == accepted_at
    # Only turns accepted before the offset the orchestrator resumes from count.
    assert await snapshots.open_turns_from(unscoped, 0, accepted_at) is None
    assert await snapshots.open_turns_from(unscoped, 1, accepted_at + 100) is None


async def test_a_turns_row_is_the_same_whether_its_request_or_its_outcome_comes_first(
    store: ProjectionStore, unscoped: Database
) -> None:
    """The projector reads the commands and events topics side by side, and the
    command handler does not wait for it: a turn's outcome may be applied before its
    request."""
    log = Log()
    rows = {}
    for outcome in ("accepted", "rejected"):
        for first in ("request", "outcome"):
            ids = Ids.new(f"{outcome}-{first}")
            request = envelope(
                events.TurnRequested(
                    session_id=ids.session_id, turn_id=ids.turn_id, message="hi", mode="invoke"
                ),
                source="/tests",
                tenant_id=ids.tenant_id,
            )
            if outcome == "accepted":
                fact: Fact = events.TurnAccepted(
                    session_id=ids.session_id,
                    turn_id=ids.turn_id,
                    agent_id="agent-1",
                    agent_version=2,
                    config=CONFIG,
                    tools=[],
                    history=[],
                    message="hi",
                    requested_at=request.time,
                )
            else:
                fact = events.TurnRejected(
                    session_id=ids.session_id, turn_id=ids.turn_id, code="X", detail="no"
                )
            decided = request.follow(fact, step="decide", source="/tests")
            pair = [request, decided] if first == "request" else [decided, request]
            for env in pair:  # one batch each, as two polls would hand them over
                await store.apply([log.append(env)])
            row = await turns.turn(unscoped, ids.tenant_id, ids.turn_id)
            assert row is not None
            assert row.requested_at == request.time
            rows[outcome, first] = row.model_dump(
                exclude={
                    *("turn_id", "tenant_id", "session_id", "requested_at"),
                    *("accepted_offset", "finished_at"),
                }
            )

    for outcome in ("accepted", "rejected"):
        assert rows[outcome, "request"] == rows[outcome, "outcome"]
        assert (rows[outcome, "request"]["mode"], rows[outcome, "request"]["request"]) == (
            "invoke",
            "hi",
        )
    assert rows["accepted", "outcome"]["status"] == "accepted"
    assert rows["rejected", "outcome"]["status"] == "rejected"
