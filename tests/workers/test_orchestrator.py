"""The orchestrator's runtime against the real broker and Postgres (``decide`` itself is
``test_turn_decisions``'s): a fresh orchestrator rebuilds the open turns of its partition
from the log and carries them on, publishes nothing its predecessor already wrote, and
fails a turn whose deadline passed, but not one that moved on meanwhile.

The roles run as ``agentlog worker <role>`` runs them (``workers.runner.run_roles``), on
topics and schemas of the test's own; the test plays the command handler (it records
each turn's request and acceptance) and the model and tool workers (it answers their
requests)."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
from aiokafka import TopicPartition
from psycopg import sql

from projections import turns
from projections.database import Database
from projections.secrets import new_key
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, from_kafka
from schemas.errors import ErrorCode
from streams.catalog import Catalog
from streams.handler import Position
from streams.partitions import LogReader
from streams.publisher import Publisher
from streams.settings import Settings
from tests import services
from tests.eventually import eventually_async
from tests.workers.deployment import accepted_turn
from workers.orchestrator import Orchestrator
from workers.runner import prepare, run_roles
from workers.turn_decisions import decide

F = TypeVar("F", bound=Fact)
TENANT = "tenant-orchestrator"
SOURCE = "/tests/orchestrator"
QUESTION = "What is the weather in Oslo and Bergen?"
WEATHER = events.ToolDefinition(
    tool_id="tool-weather", name="weather", url="http://tools.test/weather"
)
CONFIG = events.AgentConfig(name="forecaster", model="dev", tools=["weather"])
OSLO = events.ToolCallValue(id="c-oslo", name="weather", arguments={"city": "Oslo"})
BERGEN = events.ToolCallValue(id="c-bergen", name="weather", arguments={"city": "Bergen"})


def usage(tokens: int) -> events.UsageValue:
    return events.UsageValue(input_tokens=tokens, output_tokens=tokens // 10)


def turn(session_id: str, turn_id: str) -> tuple[Envelope[Any], Envelope[Any]]:
    return accepted_turn(
        session_id,
        turn_id,
        TENANT,
        source=SOURCE,
        message=QUESTION,
        agent_id="agent-1",
        config=CONFIG,
        tools=[WEATHER],
    )


def first_call(accepted: Envelope[Any]) -> Envelope[Any]:
    """The model call the orchestrator requests when it starts the turn: the same
    record, so that the test can answer it before the orchestrator runs."""
    _state, decided = decide(None, accepted.data, accepted.id)
    (request,) = [fact for step, fact in decided if step == "model"]
    return accepted.follow(request, step="model", source="/workers/orchestrator")


def answered(
    call: Envelope[Any],
    *,
    text: str = "",
    tool_calls: Iterable[events.ToolCallValue] = (),
    tokens: int = 10,
) -> Envelope[Any]:
    """The model worker's answer to ``call``."""
    data: events.ModelCallRequested = call.data
    result = events.ModelCallCompleted(
        session_id=data.session_id,
        turn_id=data.turn_id,
        call_id=data.call_id,
        step=data.step,
        text=text,
        tool_calls=list(tool_calls),
        usage=usage(tokens),
    )
    return call.follow(result, step="result", source="/tests/model-worker")


def tool_answered(call: Envelope[Any], result: str) -> Envelope[Any]:
    """The tool worker's answer to ``call``."""
    data: events.ToolCallRequested = call.data
    done = events.ToolCallCompleted(
        session_id=data.session_id,
        turn_id=data.turn_id,
        tool_call_id=data.tool_call_id,
        step=data.step,
        tool=data.tool,
        status_code=200,
        result=result,
    )
    return call.follow(done, step="result", source="/tests/tool-worker")


@dataclass
class Platform:
    settings: Settings
    catalog: Catalog
    publisher: Publisher
    reader: LogReader
    db: Database

    @property
    def partition(self) -> TopicPartition:
        return TopicPartition(self.catalog.events, 0)  # the topics have one partition

    @asynccontextmanager
    async def running(self, role: str, **settings: Any) -> AsyncIterator[None]:
        """``role`` running as its own process would run it, until the block ends; it
        stops as a role stops: the batch in hand finished, its offsets committed."""
        stop = asyncio.Event()
        config = self.settings.model_copy(update=settings)
        task = asyncio.create_task(run_roles(config, [role], stop, probes=False))
        try:
            yield
        finally:
            stop.set()
            await task  # and raises a role's failure

    async def publish(self, *envs: Envelope[Any]) -> None:
        await self.publisher.publish_all(list(envs))

    async def accept(self, session_id: str, turn_id: str) -> Envelope[Any]:
        """Record a turn's request, and its acceptance once the projector has applied
        the request (the command handler's fence), so that the turns read model knows
        where the turn was accepted."""
        request, accepted = turn(session_id, turn_id)
        await self.publish(request)
        await eventually_async(
            lambda: turns.turn(self.db, TENANT, turn_id), f"the request of {turn_id} projected"
        )
        await self.publish(accepted)
        return accepted

    async def log(self) -> list[tuple[int, Envelope[Any]]]:
        """Every record of the events topic, with its offset."""
        tp = self.partition
        (end,) = (await self.reader.ends([tp])).values()
        found: list[tuple[int, Envelope[Any]]] = []
        async for batch in self.reader.batches({tp: 0}, {tp: end}):
            found.extend((r.offset, from_kafka(r.key, r.value, list(r.headers))) for r in batch)
        return found

    async def all(self, kind: type[F], turn_id: str) -> list[Envelope[F]]:
        """The turn's facts of ``kind`` in the log, in log order."""
        return [
            env
            for _offset, env in await self.log()
            if isinstance(env.data, kind) and env.data.turn_id == turn_id  # type: ignore[attr-defined]
        ]

    async def first(self, kind: type[F], turn_id: str, **fields: Any) -> Envelope[F]:
        """Wait for the turn's first fact of ``kind`` whose data has ``fields``."""

        async def found() -> Envelope[F]:
            matching = [
                env
                for env in await self.all(kind, turn_id)
                if all(getattr(env.data, name) == value for name, value in fields.items())
            ]
            assert matching, "none yet"
            return matching[0]

        what = f"{kind.__name__} of {turn_id} with {fields}"
        return await eventually_async(found, what, poll=0.1)

    async def offset_of(self, event_id: str) -> int:
        (offset,) = [offset for offset, env in await self.log() if env.id == event_id]
        return offset

    async def committed(self) -> int:
        """The orchestrators' committed offset of the events partition."""
        return await self.reader.committed(self.partition)

    @asynccontextmanager
    async def orchestrator(self, **options: Any) -> AsyncIterator[Orchestrator]:
        """An orchestrator driven by the test as its runtime would drive it, assigned
        the events partition (its state rebuilt, what is past the committed offset
        learnt)."""
        orchestrator = Orchestrator(
            self.settings.kafka_bootstrap_servers,
            self.catalog,
            Database(self.settings.database_url, self.settings.database_schema),
            **options,
        )
        try:
            await orchestrator.on_assigned([self.partition])
            yield orchestrator
        finally:
            await orchestrator.close()

    async def crashing_predecessor(self) -> list[Envelope[Any]]:
        """An orchestrator decides on every record past the committed offset, publishes
        what it decided, and is gone before it commits: one killed between its
        publishing and its commit. Returns what it published."""
        async with self.orchestrator() as orchestrator:
            committed = await self.committed()
            items = [
                (env, Position(self.catalog.events, 0, offset))
                for offset, env in await self.log()
                if offset >= committed and env.type in Orchestrator.types
            ]
            decided = await orchestrator.handle_batch(items)
            await self.publish(*decided)
        return decided


@pytest.fixture
async def platform(bootstrap: str) -> AsyncIterator[Platform]:
    tag = f"orch_{uuid.uuid4().hex[:10]}"
    config = services.settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{tag}.",
        topic_partitions=1,
        database_schema=tag,
        secrets_key=new_key(),
    )
    await prepare(config)
    catalog = Catalog.from_settings(config)
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    reader = await LogReader(bootstrap, group_id=catalog.group_id("orchestrator")).start()
    db = Database(config.database_url, tag, pool_size=1)
    try:
        yield Platform(config, catalog, publisher, reader, db)
    finally:
        await db.close()
        await reader.stop()
        await publisher.stop()
        with psycopg.connect(config.database_url, autocommit=True) as conn:
            for suffix in ("", "_billing", "_secrets"):
                name = sql.Identifier(f"{tag}{suffix}")
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


def repeated(log: list[tuple[int, Envelope[Any]]]) -> list[str]:
    """The ids of the events recorded more than once: none, if nothing was published
    again."""
    counts = Counter(env.id for _offset, env in log)
    return sorted(event_id for event_id, n in counts.items() if n > 1)


# -- rebuilding on assignment --------------------------------------------------------------


async def test_a_fresh_orchestrator_rebuilds_open_turns_from_the_log_and_carries_them_on(
    platform: Platform,
) -> None:
    async with platform.running("projector"):
        async with platform.running("orchestrator"):  # the predecessor
            await platform.accept("s-1", "t-1")
            await platform.accept("s-2", "t-2")
            call = await platform.first(events.ModelCallRequested, "t-1", step=1)
            await platform.publish(answered(call, tool_calls=[OSLO], tokens=100))
            oslo = await platform.first(events.ToolCallRequested, "t-1", tool_call_id="c-oslo")
            sunny = tool_answered(oslo, "sunny")
            await platform.publish(sunny)
            second_call = await platform.first(events.ModelCallRequested, "t-1", step=2)
            other_call = await platform.first(events.ModelCallRequested, "t-2", step=1)
        # Both turns are open, every step of theirs so far behind the committed offset.
        assert await platform.committed() > await platform.offset_of(sunny.id)
        # Answers that come while no orchestrator runs.
        await platform.publish(
            answered(second_call, tool_calls=[BERGEN], tokens=200),
            answered(other_call, text="Hello.", tokens=50),
        )

        async with platform.running("orchestrator"):  # the successor
            bergen = await platform.first(events.ToolCallRequested, "t-1", tool_call_id="c-bergen")
            await platform.publish(tool_answered(bergen, "rainy"))
            third_call = await platform.first(events.ModelCallRequested, "t-1", step=3)
            answer = answered(third_call, text="Sunny in Oslo, rainy in Bergen.", tokens=300)
            await platform.publish(answer)
            completed = await platform.first(events.TurnCompleted, "t-1")
            other_completed = await platform.first(events.TurnCompleted, "t-2")

    # The third call carries the whole turn: what the predecessor saw and what came since.
    assert third_call.data.messages == [
        events.MessageValue(role="user", content=QUESTION),
        events.MessageValue(role="assistant", tool_calls=[OSLO]),
        events.MessageValue(role="tool", content="sunny", tool_call_id="c-oslo"),
        events.MessageValue(role="assistant", tool_calls=[BERGEN]),
        events.MessageValue(role="tool", content="rainy", tool_call_id="c-bergen"),
    ]
    assert (completed.causation_id, completed.data.steps, completed.data.usage) == (
        answer.id,
        3,
        usage(100) + usage(200) + usage(300),
    )
    assert (other_completed.data.steps, other_completed.data.usage) == (1, usage(50))
    assert await platform.all(events.TurnFailed, "t-1") == []
    assert repeated(await platform.log()) == []


# -- not publishing again -------------------------------------------------------------------


async def test_what_a_predecessor_published_before_it_committed_is_not_published_again(
    platform: Platform,
) -> None:
    async with platform.running("projector"):
        async with platform.running("orchestrator"):
            await platform.accept("s-1", "t-1")
            call = await platform.first(events.ModelCallRequested, "t-1", step=1)
        committed = await platform.committed()
        await platform.publish(answered(call, tool_calls=[OSLO]))

        published = await platform.crashing_predecessor()

        assert [type(env.data) for env in published] == [
            events.MessageAppended,
            events.ToolCallRequested,
        ]
        assert await platform.committed() == committed
        async with platform.running("orchestrator"):  # the successor
            oslo = await platform.first(events.ToolCallRequested, "t-1", tool_call_id="c-oslo")
            await platform.publish(tool_answered(oslo, "sunny"))
            second_call = await platform.first(events.ModelCallRequested, "t-1", step=2)
            await platform.publish(answered(second_call, text="Sunny."))
            completed = await platform.first(events.TurnCompleted, "t-1")

    log = await platform.log()
    assert [sum(env.id == e.id for _o, e in log) for env in published] == [1, 1]
    assert repeated(log) == []
    assert completed.data.steps == 2


# -- deadlines ------------------------------------------------------------------------------


async def test_a_turn_without_progress_gets_its_deadline_once_it_passes_and_fails(
    platform: Platform,
) -> None:
    _request, accepted = turn("s-1", "t-1")

    async with platform.running("orchestrator", turn_deadline_s=2.0):
        await platform.publish(accepted)
        failed = await platform.first(events.TurnFailed, "t-1")

    (passed,) = await platform.all(events.TurnDeadlinePassed, "t-1")
    assert passed.data == events.TurnDeadlinePassed(
        session_id="s-1", turn_id="t-1", progress=accepted.id, deadline_s=2.0
    )
    assert passed.causation_id == accepted.id
    assert (passed.time - accepted.time).total_seconds() >= 2.0, "not before it passed"
    assert (failed.causation_id, failed.data.code, failed.data.detail) == (
        passed.id,
        ErrorCode.TURN_TIMED_OUT,
        "no progress for 2 s",
    )


async def test_a_turn_that_moved_on_after_its_deadline_was_set_is_not_failed(
    platform: Platform,
) -> None:
    """Times are the events' own: two turns accepted two hours ago, one answered then
    (and stalled since: its tool never answers), the other answered now. A deadline
    recorded for the second one's acceptance, as a tick would have just before its
    answer came, is read after the answer."""
    hours_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    stalled, moving = (turn(f"s-{n}", f"t-{n}")[1].at(hours_ago) for n in ("stalled", "moving"))
    stalled_answer = answered(first_call(stalled), tool_calls=[OSLO]).at(hours_ago)
    stale = moving.follow(
        events.TurnDeadlinePassed(
            session_id="s-moving", turn_id="t-moving", progress=moving.id, deadline_s=60.0
        ),
        step="deadline",
        source="/workers/orchestrator",
    )
    await platform.publish(
        stalled, stalled_answer, moving, answered(first_call(moving), tool_calls=[OSLO]), stale
    )

    async with platform.running("orchestrator", turn_deadline_s=60.0):
        failed = await platform.first(events.TurnFailed, "t-stalled")
        oslo = await platform.first(events.ToolCallRequested, "t-moving", tool_call_id="c-oslo")
        await platform.publish(tool_answered(oslo, "sunny"))
        second_call = await platform.first(events.ModelCallRequested, "t-moving", step=2)
        await platform.publish(answered(second_call, text="Sunny."))
        completed = await platform.first(events.TurnCompleted, "t-moving")

    # The stalled turn's deadline ran from its last progress, its answer.
    (cause,) = [
        env
        for env in await platform.all(events.TurnDeadlinePassed, "t-stalled")
        if env.id == failed.causation_id
    ]
    assert cause.data.progress == stalled_answer.id
    assert failed.data.code == ErrorCode.TURN_TIMED_OUT
    assert await platform.all(events.TurnFailed, "t-moving") == []
    assert completed.data.steps == 2


async def test_a_deadline_is_recorded_once_for_the_progress_it_names(platform: Platform) -> None:
    """``tick`` called as the runtime calls it between batches: until the deadline it
    recorded is read back, a later tick records none again."""
    _request, accepted = turn("s-1", "t-1")
    accepted = accepted.at(accepted.time - datetime.timedelta(seconds=61))

    topic = platform.catalog.events
    async with platform.orchestrator(deadline_s=60.0) as orchestrator:
        started = await orchestrator.handle_batch([(accepted, Position(topic, 0, 0))])
        (passed,) = await orchestrator.tick()
        again = await orchestrator.tick()
        offset = 1 + len(started)  # after what it decided on the acceptance
        read_back = await orchestrator.handle_batch([(passed, Position(topic, 0, offset))])
        after = await orchestrator.tick()

    assert [type(env.data) for env in started][-1] is events.ModelCallRequested
    assert passed.data.progress == accepted.id
    assert again == []
    assert [type(env.data) for env in read_back] == [events.TurnFailed]
    assert after == []
