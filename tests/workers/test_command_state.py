"""The command handler's state after a restart or a rebalance, for random histories
through the real broker and the real core projector: a snapshot (the read models at the
projection's position, which lags) plus the log's tail equals a fold of the whole log,
and equals what the read models hold once the projector has caught up."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.database import Database
from schemas import events
from schemas.envelope import Envelope, envelope
from streams.catalog import Catalog
from streams.partitions import LogReader
from tests.e2e.conftest import DATABASE_URL
from tests.workers.deployment import Deployed, accepted_turn, deployment, project
from workers import command_state
from workers.command_decisions import TurnLimits
from workers.command_handler import CommandHandler
from workers.command_state import CommandState

SOURCE = "/tests/command-state"
PARTITIONS = 2
OWNED = 0  # the handler is assigned this partition of the commands topic alone
HISTORY = 3  # messages kept per session: small, so that the window slides
TENANTS = ("t-a", "t-b")
DECIDED = (events.ToolRegistered, events.ApiKeyCreated, events.ApiKeyRevoked)


class Log(Deployed):
    async def project(self) -> None:
        await project(self.settings, self.db, self.catalog.events)

    async def folded(self) -> CommandState:
        """The state folded from the whole events topic, as the handler folds it."""
        state = CommandState(HISTORY, frozenset({OWNED}))
        async with LogReader(self.settings.kafka_bootstrap_servers) as reader:
            tps = await reader.partitions(self.catalog.events)
            async for batch in reader.batches(dict.fromkeys(tps, 0), await reader.ends(tps)):
                state.fold_records(batch)
        return state

    async def held(self) -> CommandState:
        """The state as the read models hold it."""
        numbers = list(range(PARTITIONS))
        partitioner = DefaultPartitioner()
        state, _ = await command_state.load(
            self.db,
            self.catalog.events,
            {OWNED},
            lambda key: int(partitioner(key.encode(), numbers, numbers)),
            HISTORY,
            [],
        )
        return state


@pytest.fixture
async def log(bootstrap: str) -> AsyncIterator[Log]:
    async with deployment(bootstrap, "cst", topic_partitions=PARTITIONS) as (config, publisher):
        db = Database(DATABASE_URL, config.database_schema, pool_size=2)
        try:
            yield Log(config, Catalog.from_settings(config), publisher, db)
        finally:
            await db.close()


class Histories:
    """Facts of a few tenants' agents, tools and sessions, in the order their writers
    record them: a session runs one turn at a time, as its decider ensures."""

    def __init__(self, draw: st.DrawFn, tag: str) -> None:
        self.draw, self.tag = draw, tag
        self.sessions: dict[str, str] = {}  # session -> tenant
        self.active: dict[str, str | None] = {}  # session -> running turn
        self.turns: list[tuple[str, str]] = []  # (session, turn) ever accepted
        self.out: list[Envelope[Any]] = []
        self.count = 0

    def _id(self, kind: str) -> str:
        self.count += 1
        return f"{kind}-{self.tag}-{self.count}"

    def record(self, fact: Any, tenant_id: str) -> None:
        self.out.append(envelope(fact, source=SOURCE, tenant_id=tenant_id))

    def step(self) -> None:
        draw = self.draw
        tenant = f"{draw(st.sampled_from(TENANTS))}-{self.tag}"
        agent = f"a-{tenant}-{draw(st.integers(0, 1))}"
        kinds = ["agent", "update", "disable", "tool", "key", "revoke", "session", "turn"]
        kinds += ["message", "end"]
        kind = draw(st.sampled_from([*kinds, "repeat"]))
        if kind == "agent":
            config = events.AgentConfig(name="n", model=draw(st.sampled_from(["dev", "m2"])))
            self.record(events.AgentCreated(agent_id=agent, config=config), tenant)
        elif kind == "update":
            config = events.AgentConfig(name="n", model="dev", max_steps=draw(st.integers(1, 9)))
            version = draw(st.integers(2, 5))
            fact = events.AgentUpdated(
                agent_id=agent, version=version, config=config, changed=["max_steps"]
            )
            self.record(fact, tenant)
        elif kind == "disable":
            self.record(events.AgentDisabled(agent_id=agent, version=9), tenant)
        elif kind == "tool":
            name = draw(st.sampled_from(["clock", "weather"]))
            tool = events.ToolDefinition(
                tool_id=self._id(f"{tenant}-{name}"),  # a replacement has an id of its own
                name=name,
                url=f"http://tools.test/{draw(st.integers(0, 3))}",
            )
            self.record(events.ToolRegistered(tenant_id=tenant, tool=tool), tenant)
        elif kind in ("key", "revoke"):
            # Key ids are unique across tenants (random); a revocation may name no key.
            key_id = f"{tenant}-k-{draw(st.integers(0, 2))}"
            key_fact: events.ApiKeyCreated | events.ApiKeyRevoked = (
                events.ApiKeyCreated(
                    tenant_id=tenant, key_id=key_id, key_prefix="al_", key_hash=key_id
                )
                if kind == "key"
                else events.ApiKeyRevoked(tenant_id=tenant, key_id=key_id)
            )
            self.record(key_fact, tenant)
        elif kind == "session":
            session = self._id("s")
            self.sessions[session] = tenant
            self.active[session] = None
            self.record(events.SessionCreated(session_id=session, agent_id=agent), tenant)
        elif self.sessions and kind in ("turn", "message", "end"):
            session = draw(st.sampled_from(sorted(self.sessions)))
            self.on_session(kind, session, self.sessions[session])
        elif kind == "repeat" and self.out:
            repeated = draw(st.sampled_from(self.out))
            # A decider's outcome is repeated only by its own retry, before it decides
            # the next command of its key: a tenant's tool or key fact, right after itself.
            if not isinstance(repeated.data, DECIDED) or repeated is self.out[-1]:
                self.out.append(repeated)  # delivered twice

    def on_session(self, kind: str, session: str, tenant: str) -> None:
        draw, running = self.draw, self.active[session]
        if kind == "turn" and running is None:
            turn = self._id("turn")
            self.out += accepted_turn(session, turn, tenant, source=SOURCE)
            self.active[session] = turn
            self.turns.append((session, turn))
        elif kind == "message":
            message = events.MessageValue(
                role=draw(st.sampled_from(["user", "assistant", "tool"])),
                content=draw(st.sampled_from(["x", "y"])),
            )
            turns = [t for s, t in self.turns if s == session]
            if not turns:
                return  # a message is a turn's
            turn = running or turns[-1]
            message_appended = events.MessageAppended(
                session_id=session, turn_id=turn, message_id=self._id("m"), message=message
            )
            self.record(message_appended, tenant)
        elif kind == "end":
            ended = [t for s, t in self.turns if s == session]
            if not ended:
                return
            turn = running if running and draw(st.booleans()) else draw(st.sampled_from(ended))
            end = draw(st.sampled_from(["completed", "failed", "cancelled"]))
            fact: events.TurnCompleted | events.TurnFailed | events.TurnCancelled
            if end == "completed":
                fact = events.TurnCompleted(
                    session_id=session,
                    turn_id=turn,
                    message_id="m",
                    usage=events.UsageValue(),
                    steps=1,
                )
            elif end == "failed":
                fact = events.TurnFailed(session_id=session, turn_id=turn, code="X", detail="x")
            else:
                fact = events.TurnCancelled(session_id=session, turn_id=turn)
            self.record(fact, tenant)
            if turn == running:
                self.active[session] = None


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Envelope[Any]], list[Envelope[Any]]]:
    """A history, cut in two: what the projector applies, and the tail it lags."""
    made = Histories(draw, uuid.uuid4().hex[:6])
    for _ in range(draw(st.integers(0, 40))):
        made.step()
    cut = draw(st.integers(0, len(made.out)))
    return made.out[:cut], made.out[cut:]


def kept(state: CommandState) -> tuple[Any, ...]:
    """What decisions are made on: agents, tools, and the owned sessions' conversations
    and tenants' keys."""
    return (state.agents, state.tools, state.conversations, state.keys)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories())
async def test_a_restarted_handler_holds_the_whole_logs_state(
    log: Log, history: tuple[list[Envelope[Any]], list[Envelope[Any]]]
) -> None:
    applied, tail = history
    await log.publisher.publish_all(applied)
    await log.project()
    await log.publisher.publish_all(tail)  # the snapshot lags these

    limits = TurnLimits(100, max_steps=8, max_tool_calls=8, history_messages=HISTORY)
    db = Database(DATABASE_URL, log.settings.database_schema, pool_size=1)
    handler = CommandHandler(log.settings.kafka_bootstrap_servers, log.catalog, db, limits)
    try:
        await handler.on_assigned([TopicPartition(log.catalog.commands, OWNED)])
        await handler.handle_batch([])  # its state is loaded before a batch
        restarted = kept(handler.state)
    finally:
        await handler.close()

    assert restarted == kept(await log.folded())
    await log.project()
    assert restarted == kept(await log.held())


async def test_a_fact_repeated_past_the_snapshot_is_folded_once(log: Log) -> None:
    """A writer repeated a turn's acceptance after the turn had ended (same id, a later
    offset), and the projection had applied the first one only: the turn stays ended."""
    tenant, session, turn = "t-a", f"s-{uuid.uuid4().hex[:8]}", "turn-1"
    request, accepted = accepted_turn(session, turn, tenant, source=SOURCE)
    ended = envelope(
        events.TurnCancelled(session_id=session, turn_id=turn), source=SOURCE, tenant_id=tenant
    )
    opened = envelope(
        events.SessionCreated(session_id=session, agent_id="a"), source=SOURCE, tenant_id=tenant
    )
    await log.publisher.publish_all([opened, request, accepted, ended])
    await log.project()
    await log.publisher.publish_all([accepted])

    numbers = list(range(PARTITIONS))
    owned = int(DefaultPartitioner()(session.encode(), numbers, numbers))
    limits = TurnLimits(100, max_steps=8, max_tool_calls=8, history_messages=HISTORY)
    db = Database(DATABASE_URL, log.settings.database_schema, pool_size=1)
    handler = CommandHandler(log.settings.kafka_bootstrap_servers, log.catalog, db, limits)
    try:
        await handler.on_assigned([TopicPartition(log.catalog.commands, owned)])
        await handler.handle_batch([])  # its state is loaded before a batch
        conversation = handler.state.conversations[session]
    finally:
        await handler.close()

    assert conversation.active_turn is None
