"""``ProjectionStore.apply`` against real Postgres: rows, idempotence, positions stored with
the rows (invariant 3), deterministic tables (invariant 5), change and position
notifications, and the swap lock it shares with rebuilds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection, sql

from projections.rebuild import table_hashes
from projections.store import ProjectionStore, _one_round_trip, swap_lock
from projections.waiter import Waiter, channel
from schemas import events
from schemas.envelope import Envelope, envelope
from streams.handler import Item, Position

from .conversation import (
    CATALOG,
    CONFIG,
    QUESTION,
    SOURCE,
    Ids,
    Log,
    conversation,
    model_answers,
    noop,
    tool_definition,
)
from .rows import TABLES, select

COMMANDS, EVENTS = CATALOG.commands, CATALOG.events


def a_conversation(tag: str = "a") -> tuple[Ids, dict[str, Envelope[Any]], list[Item]]:
    ids = Ids.new(tag)
    envs = conversation(ids)
    return ids, envs, Log().extend(envs.values())


def offsets_of(envs: dict[str, Envelope[Any]], items: list[Item]) -> dict[str, int]:
    return {step: pos.offset for step, (_env, pos) in zip(envs, items, strict=True)}


async def test_a_conversation_projects_to_its_rows(
    store: ProjectionStore, schema: str, db: AsyncConnection[Any]
) -> None:
    ids, envs, items = a_conversation()
    offset = offsets_of(envs, items)
    at = {step: env.time for step, env in envs.items()}

    applied = await store.apply(items)

    assert applied == len(items) == 15
    assert await select(db, schema, "SELECT * FROM {s}.tenants") == [
        {
            "tenant_id": ids.tenant_id,
            "display_name": f"Tenant {ids.tenant_id}",
            "created_at": at["tenant_created"],
        }
    ]
    assert await select(db, schema, "SELECT * FROM {s}.api_keys") == [
        {
            "key_id": f"key-{ids.tenant_id}",
            "tenant_id": ids.tenant_id,
            "key_prefix": "al_test",
            "key_hash": ids.key_hash,
            "created_at": at["api_key_created"],
            "revoked_at": None,
        }
    ]
    assert await select(db, schema, "SELECT * FROM {s}.tools") == [
        {
            "tool_id": ids.tool_id,
            "tenant_id": ids.tenant_id,
            "name": "lookup",
            "definition": tool_definition(ids).model_dump(mode="json"),
            "secret_header_names": ["X-Token"],
            "created_at": at["tool_registered"],
        }
    ]
    assert await select(db, schema, "SELECT * FROM {s}.agents") == [
        {
            "agent_id": ids.agent_id,
            "tenant_id": ids.tenant_id,
            "version": 1,
            "config": CONFIG.model_dump(mode="json"),
            "status": "active",
            "created_at": at["agent_created"],
            "updated_at": at["agent_created"],
        }
    ]
    assert await select(
        db, schema, "SELECT agent_id, version, change, event_id FROM {s}.agent_versions"
    ) == [
        {
            "agent_id": ids.agent_id,
            "version": 1,
            "change": "created",
            "event_id": envs["agent_created"].id,
        }
    ]
    assert await select(db, schema, "SELECT * FROM {s}.sessions") == [
        {
            "session_id": ids.session_id,
            "tenant_id": ids.tenant_id,
            "agent_id": ids.agent_id,
            "metadata": {"channel": "test"},
            "created_at": at["session_created"],
        }
    ]
    assert await select(db, schema, "SELECT * FROM {s}.turns") == [
        {
            "turn_id": ids.turn_id,
            "tenant_id": ids.tenant_id,
            "session_id": ids.session_id,
            "status": "completed",
            "mode": "chat",
            "request": QUESTION,
            "agent_version": 1,
            "accepted_partition": 0,
            "accepted_offset": offset["turn_accepted"],
            "answer_message_id": ids.answer_message_id,
            "error_code": None,
            "error_detail": None,
            "steps": 2,
            "input_tokens": 12,
            "output_tokens": 3,
            "requested_at": at["turn_requested"],
            "finished_at": at["turn_completed"],
        }
    ]
    assert await select(
        db, schema, "SELECT type, position, event_id FROM {s}.turn_steps ORDER BY position"
    ) == [
        {"type": envs[step].type, "position": offset[step], "event_id": envs[step].id}
        for step in (
            "turn_accepted",
            "turn_started",
            "user_message_appended",
            "tool_call_requested",
            "tool_call_completed",
            "answer_appended",
            "turn_completed",
        )
    ]
    assert await select(
        db, schema, "SELECT message_id, role, content, position FROM {s}.messages ORDER BY position"
    ) == [
        {
            "message_id": ids.user_message_id,
            "role": "user",
            "content": QUESTION,
            "position": offset["user_message_appended"],
        },
        {
            "message_id": ids.answer_message_id,
            "role": "assistant",
            "content": "4",
            "position": offset["answer_appended"],
        },
    ]
    assert await select(db, schema, "SELECT * FROM {s}.tool_calls") == [
        {
            "tool_call_id": ids.tool_call_id,
            "tenant_id": ids.tenant_id,
            "turn_id": ids.turn_id,
            "tool": "lookup",
            "arguments": {"q": "2+2"},
            "status": "completed",
            "code": None,
            "detail": None,
            "result": "4",
            "requested_at": at["tool_call_requested"],
            "finished_at": at["tool_call_completed"],
        }
    ]
    assert await select(
        db,
        schema,
        "SELECT command_id, tenant_id, subject, outcome FROM {s}.command_outcomes"
        " ORDER BY recorded_at",
    ) == [
        {
            "command_id": envs[command].id,
            "tenant_id": ids.tenant_id,
            "subject": subject,
            "outcome": "accepted",
        }
        for command, subject in (
            ("tenant_created", ids.tenant_id),  # the first key's cause
            ("tool_registered", ids.tenant_id),  # recorded with no command: its own cause
            ("agent_create_requested", ids.agent_id),
            ("session_create_requested", ids.session_id),
            ("turn_requested", ids.session_id),
        )
    ]
    assert await store.positions(COMMANDS) == {0: 3}
    assert await store.positions(EVENTS) == {0: 12}


async def test_applying_the_same_items_again_changes_nothing(
    database_url: str, store: ProjectionStore, schema: str, db: AsyncConnection[Any]
) -> None:
    _ids, _envs, items = a_conversation()
    assert await store.apply(items) == 15
    before = await table_hashes(db, schema)

    redelivered = await store.apply(items)
    part_redelivered = await store.apply(items[4:9])
    restarted = ProjectionStore(database_url, schema)  # a new process, after a crash
    try:
        after_restart = await restarted.apply(items)
    finally:
        await restarted.close()

    assert (redelivered, part_redelivered, after_restart) == (0, 0, 0)
    assert await table_hashes(db, schema) == before


@pytest.mark.parametrize("later_batch", [False, True], ids=["same-batch", "later-batch"])
async def test_a_republished_event_is_applied_once_at_its_first_offset(
    store: ProjectionStore, schema: str, db: AsyncConnection[Any], later_batch: bool
) -> None:
    ids, envs, items = a_conversation()
    offset = offsets_of(envs, items)
    # A writer crashed after publishing and published TurnAccepted again: same id, a
    # later offset, after the turn had completed.
    republished = (envs["turn_accepted"], Position(EVENTS, 0, 12))

    if later_batch:
        applied = [await store.apply(items), await store.apply([republished])]
    else:
        applied = [await store.apply([*items, republished])]

    assert applied == ([15, 0] if later_batch else [15])
    # Applied again, its update would reopen the turn and move its accepted offset.
    assert await select(
        db, schema, "SELECT status, accepted_offset FROM {s}.turns WHERE turn_id = %s", ids.turn_id
    ) == [{"status": "completed", "accepted_offset": offset["turn_accepted"]}]
    assert await select(
        db,
        schema,
        "SELECT position FROM {s}.turn_steps WHERE event_id = %s",
        envs["turn_accepted"].id,
    ) == [{"position": offset["turn_accepted"]}]
    assert await store.positions(EVENTS) == {0: 13}


async def test_a_transaction_aborted_midway_spoils_no_later_one(
    store: ProjectionStore, schema: str
) -> None:
    """A batch with an event applied before is first sent as if it were new, and
    Postgres aborts the pipeline at the applied id. A statement the driver prepared in
    that pipeline was never prepared on the server; every later batch using it failed
    ("prepared statement does not exist") and the projector set its events aside."""
    table = sql.Identifier(schema, "applied_events")
    insert = sql.SQL("INSERT INTO {} (event_id) VALUES (%s)").format(table).as_bytes(None)
    select = sql.SQL("SELECT count(*) FROM {} WHERE event_id = %s").format(table).as_bytes(None)
    failures = []
    for n in range(12):
        event_id = "applied" if n % 3 == 2 else f"new-{n}"  # every third: applied before
        async with store.db.connection() as conn:  # as the store takes one: from its pool

            async def statements(conn: Any = conn, event_id: str = event_id) -> None:
                await conn.execute(insert, (event_id,))
                await conn.execute(select, (event_id,))  # aborted with it, every third time

            try:
                await _one_round_trip(conn, statements)
            except psycopg.errors.UniqueViolation:
                failures.append(n)
            if n == 0:
                await conn.execute(insert, ("applied",))

    assert failures == [2, 5, 8, 11]


async def test_positions_move_past_every_item_and_never_back(store: ProjectionStore) -> None:
    # Offsets out of order within a batch: the position is past the largest.
    await store.apply([noop(0, 7), noop(0, 3), noop(1, 2), noop(0, 4, topic=COMMANDS)])
    first = await store.positions_all()
    # A batch from before the stored position (a rewound consumer) moves nothing back,
    # even though its events are new and applied.
    stale = await store.apply([noop(0, 1), noop(1, 0)])
    second = await store.positions_all()
    # Items that are all duplicates still move the position on.
    duplicate = noop(0, 20)
    await store.apply([duplicate])
    dup_applied = await store.apply([(duplicate[0], Position(EVENTS, 0, 30))])
    third = await store.positions(EVENTS)

    assert first == {(EVENTS, 0): 8, (EVENTS, 1): 3, (COMMANDS, 0): 5}
    assert (stale, second) == (2, first)
    assert (dup_applied, third) == (0, {0: 31, 1: 3})


batches = st.lists(
    st.lists(
        st.tuples(st.sampled_from([EVENTS, COMMANDS]), st.integers(0, 2), st.integers(0, 40)),
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches)
async def test_stored_positions_are_the_running_maximum_past_every_item(
    database_url: str, schema: str, batches: list[list[tuple[str, int, int]]]
) -> None:
    # One schema for every example: each example is its own projection.
    store = ProjectionStore(database_url, schema, projection=f"p-{uuid.uuid4().hex[:8]}")
    expected: dict[tuple[str, int], int] = {}
    try:
        for batch in batches:
            await store.apply(
                [noop(partition, offset, topic) for topic, partition, offset in batch]
            )
            for topic, partition, offset in batch:
                key = (topic, partition)
                expected[key] = max(expected.get(key, 0), offset + 1)

            assert await store.positions_all() == expected
    finally:
        await store.close()


async def test_advancing_moves_positions_forward_only_and_wakes_their_waiters(
    database_url: str, schema: str
) -> None:
    store = ProjectionStore(database_url, schema)
    waiter = Waiter(store.db)
    waiter.start()
    try:
        await store.apply([noop(0, 4, "t")])
        waiting = asyncio.create_task(waiter.until_position("t", 0, 8, timeout=5))
        await store.advance({("t", 0): 9, ("t", 1): 3})
        await waiting
        await store.advance({("t", 0): 2})  # a late, smaller end moves nothing back

        assert await store.positions_all() == {("t", 0): 9, ("t", 1): 3}
    finally:
        await waiter.close()
        await store.close()


async def test_two_stores_fed_the_same_events_end_with_identical_tables(
    database_url: str, make_schema: Callable[[], str], db: AsyncConnection[Any]
) -> None:
    log = Log()
    a, b = Ids.new("a"), Ids.new("b")
    first = [*conversation(a).values(), *model_answers(a)]
    second = [*conversation(b).values(), *model_answers(b)]
    # Two tenants' conversations interleaved, on two partitions of each topic.
    items = [
        log.append(env, partition)
        for pair in zip(first, second, strict=True)
        for partition, env in enumerate(pair)
    ]
    live_schema, rebuilt_schema = make_schema(), make_schema()
    live = ProjectionStore(database_url, live_schema)
    rebuilt = ProjectionStore(database_url, rebuilt_schema, live=False)
    try:
        # Batching differs (the live projector's batches depend on timing): one batch
        # against one item at a time. Counters (Add) are summed in the batch or in SQL.
        assert await live.apply(items) == 34
        assert [await rebuilt.apply([item]) for item in items] == [1] * 34
    finally:
        await live.close()
        await rebuilt.close()

    live_hashes = await table_hashes(db, live_schema)
    rebuilt_hashes = await table_hashes(db, rebuilt_schema)

    assert set(live_hashes) == TABLES
    assert "" not in live_hashes.values()  # every table has rows: the match means something
    assert rebuilt_hashes == live_hashes


async def test_a_batch_that_fails_at_its_last_statement_leaves_nothing_behind(
    store: ProjectionStore, schema: str, db: AsyncConnection[Any]
) -> None:
    _ids, _envs, items = a_conversation()
    before = await table_hashes(db, schema)
    # Past any Kafka offset: every row is written, then storing the position fails.
    beyond_int64 = noop(0, 2**63)

    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        await store.apply([*items, beyond_int64])

    assert await table_hashes(db, schema) == before
    assert await store.positions_all() == {}
    # Nothing was recorded as applied, so a retry applies every event, on the same store.
    assert await store.apply(items) == 15


async def test_a_store_that_is_not_live_sends_no_notification(
    database_url: str, schema: str
) -> None:
    ids, envs, items = a_conversation()
    split = list(envs).index("turn_started")
    listener = await AsyncConnection.connect(database_url, autocommit=True)
    rebuild = ProjectionStore(database_url, schema, live=False)
    live = ProjectionStore(database_url, schema)
    try:
        await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(schema))))
        # Up to TurnAccepted without notifications (a key, a tool, three command outcomes,
        # two positions), then the rest live: the turn's readers are woken once it has
        # finished, and the one position it moved is notified.
        await rebuild.apply(items[:split])
        await live.apply(items[split:])
        keys = [n.payload async for n in listener.notifies(timeout=0.5)]
    finally:
        await listener.close()
        await rebuild.close()
        await live.close()

    assert keys == [f"turn:{ids.turn_id}", f"position:core:{EVENTS}:0@12"]


async def test_every_saved_position_is_notified_with_its_projection_and_next_offset(
    database_url: str, schema: str
) -> None:
    _ids, _envs, items = a_conversation()
    listener = await AsyncConnection.connect(database_url, autocommit=True)
    live = ProjectionStore(database_url, schema)
    other = ProjectionStore(database_url, schema, projection="other")
    try:
        await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(schema))))
        await live.apply(items)
        # Out of order within the batch: the notified offset is past the largest.
        await other.apply([noop(1, 6), noop(1, 2), noop(0, 4, topic=COMMANDS)])
        keys = [n.payload async for n in listener.notifies(timeout=0.5)]
    finally:
        await listener.close()
        await live.close()
        await other.close()

    assert sorted(k for k in keys if k.startswith("position:")) == sorted(
        [
            f"position:core:{EVENTS}:0@12",
            f"position:core:{COMMANDS}:0@3",
            f"position:other:{EVENTS}:1@7",
            f"position:other:{COMMANDS}:0@5",
        ]
    )


def test_the_swap_lock_is_one_per_schema_and_the_same_in_every_process() -> None:
    here = swap_lock("agentlog")
    script = "from projections.store import swap_lock as s; print(s('agentlog'), s('staging'))"
    # Another process, with another seed for Python's own string hashes: the projector
    # and a rebuild are separate processes and must take the same lock.
    elsewhere = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        check=True,
    )

    assert swap_lock("agentlog") == here
    assert len({here, swap_lock("staging"), swap_lock("agentlog_rebuild")}) == 3
    assert -(2**63) <= here < 2**63  # a Postgres bigint
    assert elsewhere.stdout.split() == [str(here), str(swap_lock("staging"))]


async def test_the_live_store_waits_only_for_a_rebuild_of_its_own_schema(
    database_url: str, schema: str, store: ProjectionStore
) -> None:
    _ids, _envs, items = a_conversation()
    rebuild = await AsyncConnection.connect(database_url)
    try:
        # A rebuild of another deployment's read models, in the same database.
        async with rebuild.transaction():
            await rebuild.execute(
                "SELECT pg_advisory_xact_lock(%s)", (swap_lock(f"{schema}_elsewhere"),)
            )
            assert await asyncio.wait_for(store.apply(items[:5]), 5) == 5
        # A rebuild of this schema, swapping it: the store waits until it is done.
        async with rebuild.transaction():
            await rebuild.execute("SELECT pg_advisory_xact_lock(%s)", (swap_lock(schema),))
            held_up = asyncio.create_task(store.apply(items[5:]))
            await asyncio.sleep(0.5)  # the point: still held up half a second on
            assert not held_up.done()
        assert await asyncio.wait_for(held_up, 5) == 10
    finally:
        await rebuild.close()


async def test_nul_and_lone_surrogates_are_stored_as_replacement_characters(
    store: ProjectionStore, schema: str, db: AsyncConnection[Any]
) -> None:
    # Postgres text and jsonb cannot hold NUL, nor a lone surrogate (JSON can escape
    # either); a message or metadata may carry one.
    session = envelope(
        events.SessionCreated(
            session_id="s-nul", agent_id="a-1", metadata={"k\x00": "v\x00", "\ud800": "\udfff"}
        ),
        source=SOURCE,
        tenant_id="t-nul",
    )
    request = envelope(
        events.TurnRequested(session_id="s-nul", turn_id="t-1", message="a\x00b\ud83d"),
        source=SOURCE,
        tenant_id="t-nul",
    )

    only_nul = envelope(
        events.SessionCreated(session_id="s-nul-only", agent_id="a-1", metadata={"k": "v\x00"}),
        source=SOURCE,
        tenant_id="t-nul",
    )

    log = Log()
    assert await store.apply(log.extend([session, request])) == 2
    assert await store.apply(log.extend([only_nul])) == 1  # in a batch of its own

    rows = await select(db, schema, "SELECT metadata FROM {s}.sessions ORDER BY session_id")
    assert [row["metadata"] for row in rows] == [
        {"k\ufffd": "v\ufffd", "\ufffd": "\ufffd"},
        {"k": "v\ufffd"},
    ]
    (turn,) = await select(db, schema, "SELECT request FROM {s}.turns")
    assert turn["request"] == "a\ufffdb\ufffd"
