"""The consumer runtime over a real broker: log order, dead letters, poison records,
dedupe by event id, type filtering and committed offsets.

Each test reads its own fresh topic with a fresh group, and has catalog topics of its own
(its prefix) for the dead letters and the events it records.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiokafka import TopicPartition

from schemas.envelope import Envelope, envelope, from_kafka
from schemas.events import (
    ApiKeyCreated,
    TenantCreated,
    TurnStarted,
    TurnStepUnprocessable,
    UsageRecorded,
)
from streams.catalog import Catalog, ensure_topics
from streams.consumer import ConsumerRuntime
from streams.handler import Item, StoresPositions
from streams.logs import RedactingFilter, RedactingJsonFormatter, add_secrets
from streams.publisher import Publisher
from streams.settings import Settings
from tests.eventually import eventually_async
from tests.topics import read_all

from .records import (
    UNKNOWN_TYPE,
    agent_created,
    cloud_event,
    create_topic,
    garbage,
    of_unknown_type,
    produce,
    tenant_created,
)

T = TypeVar("T")

SESSION_TIMEOUT_MS = 6000  # the broker's minimum
DEADLINE_S = 20.0
TENANT_CREATED = TenantCreated.ce_type()


async def dead_letters(bootstrap: str, catalog: Catalog, topic: str) -> list[Any]:
    """Records on the catalog's dead-letter topic that came from ``topic``."""
    records = await asyncio.to_thread(read_all, bootstrap, catalog.dead_letter)
    return [r for r in records if dict(r.headers).get("dlq.topic") == topic.encode()]


async def replies_to(bootstrap: str, catalog: Catalog, cause_ids: set[str]) -> list[Any]:
    """Records on the catalog's events topic caused by one of ``cause_ids``."""
    records = await asyncio.to_thread(read_all, bootstrap, catalog.events)
    return [r for r in records if dict(r.headers).get("ce_causationid", b"").decode() in cause_ids]


# -- a handler and a running runtime -----------------------------------------------------


@dataclass
class RecordingHandler(StoresPositions):
    """Records what it is handed; raises on ``poison`` ids; answers with ``reply``."""

    topics: Sequence[str]
    types: frozenset[str] | None = None
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    poison: frozenset[str] = frozenset()
    reply: Callable[[Envelope[Any]], Envelope[Any]] | None = None
    calls: list[list[Item]] = field(default_factory=list)
    handled: list[Item] = field(default_factory=list)
    passed_ends: list[dict[tuple[str, int], int]] = field(default_factory=list)

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        self.calls.append(list(items))
        for env, _position in items:
            if env.id in self.poison:
                raise ValueError(f"poisoned by {env.id}")
        self.handled.extend(items)
        return [self.reply(env) for env, _position in items] if self.reply else []

    async def passed(self, ends: dict[tuple[str, int], int]) -> None:
        self.passed_ends.append(ends)

    def handled_ids(self) -> list[str]:
        return [env.id for env, _position in self.handled]


@dataclass
class Running:
    runtime: ConsumerRuntime
    task: asyncio.Task[None]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async def reached() -> bool:
            if self.task.done():  # fails at once, with the runtime's error if it raised one
                self.task.result()
                pytest.fail(f"the runtime stopped before {what}")
            return condition()

        await eventually_async(reached, what, timeout=DEADLINE_S)


@contextlib.asynccontextmanager
async def running(
    bootstrap: str, catalog: Catalog, handler: RecordingHandler, group: str
) -> AsyncIterator[Running]:
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    runtime = ConsumerRuntime(
        handler, publisher, group_id=group, session_timeout_ms=SESSION_TIMEOUT_MS
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        yield Running(runtime, task)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await publisher.stop()


async def until_read(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """``fetch()``'s value once ``done`` holds for it: every 0.2 s, as each look reads a
    whole topic."""

    async def read() -> tuple[T]:
        value = await fetch()
        assert done(value), value
        return (value,)

    return (await eventually_async(read, what, timeout=DEADLINE_S, poll=0.2))[0]


@pytest.fixture
async def catalog(bootstrap: str, topic_name: str) -> Catalog:
    """Catalog topics of this test's own."""
    catalog = Catalog(f"{topic_name}.")
    await ensure_topics(bootstrap, catalog, Settings().topic_partitions)
    return catalog


@pytest.fixture
def group(topic_name: str) -> str:
    return f"g-{topic_name}"


# -- the tests ---------------------------------------------------------------------------


async def test_records_reach_the_handler_in_log_order_and_its_answers_are_published(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name, partitions=2)
    sent = [tenant_created(i) for i in range(12)]
    positions = await produce(
        bootstrap, topic_name, [cloud_event(env, partition=i % 2) for i, env in enumerate(sent)]
    )

    def answer(env: Envelope[Any]) -> Envelope[Any]:
        key = ApiKeyCreated(tenant_id=env.tenant_id, key_id="k1", key_prefix="al_", key_hash="h")
        return env.follow(key, step="key", source="tests")

    handler = RecordingHandler(topics=[topic_name], reply=answer)
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: len(handler.handled) >= len(sent), "every record")
        replies = await until_read(
            lambda: replies_to(bootstrap, catalog, {env.id for env in sent}),
            lambda found: len(found) >= len(sent),
            "the handler's answers on the events topic",
        )

    expected = list(zip(sent, positions, strict=True))
    for partition in (0, 1):
        assert [item for item in handler.handled if item[1].partition == partition] == [
            item for item in expected if item[1].partition == partition
        ]
    assert len(handler.handled) == len(sent)
    assert sorted(dict(r.headers)["ce_id"].decode() for r in replies) == sorted(
        answer(env).id for env in sent
    )
    assert {dict(r.headers)["ce_type"] for r in replies} == {ApiKeyCreated.ce_type().encode()}


async def test_unreadable_records_are_dead_lettered_and_the_consumer_carries_on(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name)
    good = [tenant_created(i) for i in range(3)]
    unknown = tenant_created(99)
    records = [
        cloud_event(good[0]),
        garbage(),
        cloud_event(good[1]),
        of_unknown_type(unknown),
        cloud_event(good[2]),
    ]
    positions = await produce(bootstrap, topic_name, records)

    handler = RecordingHandler(topics=[topic_name])
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: len(handler.handled) >= 3, "the readable records")
        dead = await until_read(
            lambda: dead_letters(bootstrap, catalog, topic_name),
            lambda found: len(found) >= 2,
            "two dead letters",
        )

    assert handler.handled_ids() == [env.id for env in good]
    assert len(dead) == 2
    by_offset = {int(dict(r.headers)["dlq.offset"]): r for r in dead}
    assert sorted(by_offset) == [positions[1].offset, positions[3].offset]
    for index, reason in ((1, b"no ce_type header"), (3, UNKNOWN_TYPE.encode())):
        record = by_offset[positions[index].offset]
        headers = dict(record.headers)
        assert record.value == records[index].value
        assert record.key == records[index].key
        assert reason in headers["dlq.reason"]
        assert headers["dlq.topic"] == topic_name.encode()
        assert headers["dlq.partition"] == b"0"
        assert headers["dlq.consumer"] == handler.name.encode()
        for original in records[index].headers:
            assert original in record.headers
    assert b"unknown event type" in dict(by_offset[positions[3].offset].headers)["dlq.reason"]


async def test_a_poison_record_alone_is_dead_lettered_and_the_rest_of_its_batch_is_handled(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name)
    sent = [tenant_created(i) for i in range(5)]
    poison = sent[2]
    positions = await produce(bootstrap, topic_name, [cloud_event(env) for env in sent])

    handler = RecordingHandler(topics=[topic_name], poison=frozenset({poison.id}))
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: len(handler.handled) >= 4, "the healthy records")
        (dead,) = await until_read(
            lambda: dead_letters(bootstrap, catalog, topic_name),
            lambda found: len(found) >= 1,
            "the poison record's dead letter",
        )

    assert any(len(call) > 1 and poison.id in {e.id for e, _ in call} for call in handler.calls), (
        "the poison record was handed over in a batch with others"
    )
    assert handler.handled_ids() == [env.id for env in sent if env is not poison]
    headers = dict(dead.headers)
    assert int(headers["dlq.offset"]) == positions[2].offset
    assert headers["ce_id"] == poison.id.encode()
    # A code and the exception's class: its text may quote anything.
    assert headers["dlq.reason"] == b"HANDLER_FAILED: ValueError"
    assert headers["dlq.consumer"] == handler.name.encode()


async def test_a_dead_lettered_turn_record_is_recorded_for_its_turn_and_leaks_no_secret(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name)
    secret = f"s3cr\u00e9t-{uuid.uuid4().hex}"
    add_secrets(secret)
    started = envelope(
        TurnStarted(session_id=f"session-{uuid.uuid4().hex[:8]}", turn_id="turn-1"),
        source="tests",
        tenant_id="tenant-t",
    )
    await produce(bootstrap, topic_name, [cloud_event(started)])
    log_text = io.StringIO()
    capture = logging.StreamHandler(log_text)
    capture.addFilter(RedactingFilter())
    capture.setFormatter(RedactingJsonFormatter("%(levelname)s %(message)s"))
    logging.getLogger().addHandler(capture)

    @dataclass
    class Leaky(RecordingHandler):
        async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
            raise ValueError(f"could not use {secret}")

    handler = Leaky(topics=[topic_name])
    try:
        async with running(bootstrap, catalog, handler, group):
            (dead,) = await until_read(
                lambda: dead_letters(bootstrap, catalog, topic_name),
                lambda found: len(found) >= 1,
                "the dead letter",
            )
            (recorded,) = await until_read(
                lambda: replies_to(bootstrap, catalog, {started.id}),
                lambda found: len(found) >= 1,
                "the record of the unprocessable step",
            )
    finally:
        logging.getLogger().removeHandler(capture)

    fact = from_kafka(recorded.key, recorded.value, list(recorded.headers))
    assert isinstance(fact.data, TurnStepUnprocessable)
    assert (fact.data.turn_id, fact.data.record_id) == ("turn-1", started.id)
    assert fact.data.consumer == handler.name
    assert fact.data.reason == "HANDLER_FAILED: ValueError"
    assert recorded.key == started.data.session_id.encode()  # the turn's partition
    assert dict(dead.headers)["dlq.reason"] == b"HANDLER_FAILED: ValueError"
    logged = log_text.getvalue()
    assert "could not use [REDACTED]" in logged  # the traceback is there, blotted
    for form in (secret, secret.encode("unicode_escape").decode()):
        assert form not in logged


async def test_an_event_id_sent_again_is_handled_once(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name)
    first, second = tenant_created(1), tenant_created(2)
    await produce(bootstrap, topic_name, [cloud_event(first), cloud_event(second)])

    handler = RecordingHandler(topics=[topic_name])
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: len(handler.handled) >= 2, "the first two records")
        third = tenant_created(3)
        # The same event again (as a producer retry or a re-publish after a crash would
        # write it), then a new one: the runtime must get past the copy to the new one.
        await produce(bootstrap, topic_name, [cloud_event(first), cloud_event(third)])
        await run.until(lambda: third.id in handler.handled_ids(), "the record after the copy")

    assert handler.handled_ids() == [first.id, second.id, third.id]
    assert await dead_letters(bootstrap, catalog, topic_name) == []


async def test_a_handler_hears_where_a_batch_ended_past_records_it_was_not_handed(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    """A projector stores its positions, and readers wait on them: a repeated record or a
    dead-lettered one at the end of a partition must still move them."""
    await create_topic(bootstrap, topic_name)
    first = tenant_created(1)
    await produce(bootstrap, topic_name, [cloud_event(first)])

    handler = RecordingHandler(topics=[topic_name])
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: len(handler.handled) == 1, "the first record")
        assert handler.passed_ends == []  # its batch ended with a record it was handed
        await produce(bootstrap, topic_name, [cloud_event(first), garbage()])
        # The copy and the garbage may come in one poll or two: either way, the end.
        await run.until(
            lambda: {(topic_name, 0): 3} in handler.passed_ends, "the end past the garbage"
        )

    assert handler.handled_ids() == [first.id]


async def test_a_handler_hears_where_a_batch_ended_past_a_record_it_failed_on(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    """A record set aside for the dead-letter topic at the end of a partition moves the
    positions too (the invoicer's fence waits for the billing projector's), and a usage
    record, which names no turn, records no unprocessable step."""
    await create_topic(bootstrap, topic_name)
    healthy = tenant_created(1)
    poison = envelope(
        UsageRecorded(
            tenant_id="tenant-u",
            kind="tool",
            resource="search",
            quantities={"calls": 1},
            used_at=datetime.datetime.now(datetime.UTC),
        ),
        source="tests",
        tenant_id="tenant-u",
    )
    await produce(bootstrap, topic_name, [cloud_event(healthy), cloud_event(poison)])

    handler = RecordingHandler(topics=[topic_name], poison=frozenset({poison.id}))
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(
            lambda: {(topic_name, 0): 2} in handler.passed_ends, "the end past the poison"
        )
        await until_read(
            lambda: dead_letters(bootstrap, catalog, topic_name),
            lambda found: len(found) == 1,
            "the poison record's dead letter",
        )

    assert handler.handled_ids() == [healthy.id]
    assert await replies_to(bootstrap, catalog, {poison.id}) == []


async def test_an_event_id_twice_in_one_poll_is_handled_once(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name)
    first, second = tenant_created(1), tenant_created(2)
    await produce(
        bootstrap, topic_name, [cloud_event(first), cloud_event(first), cloud_event(second)]
    )

    handler = RecordingHandler(topics=[topic_name])
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: second.id in handler.handled_ids(), "the record after the copy")

    assert len(handler.calls) == 1, "all three records came in one poll"
    assert handler.handled_ids() == [first.id, second.id]


async def test_records_of_other_types_never_reach_the_handler(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name)
    wanted = [tenant_created(i) for i in range(3)]
    records = [
        cloud_event(wanted[0]),
        cloud_event(agent_created(1)),
        cloud_event(wanted[1]),
        of_unknown_type(tenant_created(98)),  # not wanted either: skipped, not dead-lettered
        cloud_event(agent_created(2)),
        cloud_event(wanted[2]),
    ]
    await produce(bootstrap, topic_name, records)

    handler = RecordingHandler(topics=[topic_name], types=frozenset({TENANT_CREATED}))
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: len(handler.handled) >= 3, "the wanted records")

    assert handler.handled_ids() == [env.id for env in wanted]
    assert {env.type for call in handler.calls for env, _ in call} == {TENANT_CREATED}
    assert await dead_letters(bootstrap, catalog, topic_name) == []


async def test_a_restarted_consumer_resumes_after_the_records_it_handled(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    await create_topic(bootstrap, topic_name, partitions=2)
    before = [tenant_created(i) for i in range(4)]
    await produce(
        bootstrap,
        topic_name,
        [
            *(cloud_event(env, partition=i % 2) for i, env in enumerate(before)),
            garbage(),
            cloud_event(agent_created(1), partition=1),  # skipped by type, committed too
        ],
    )

    first = RecordingHandler(topics=[topic_name], types=frozenset({TENANT_CREATED}))
    async with running(bootstrap, catalog, first, group) as run:
        await run.until(lambda: len(first.handled) >= len(before), "the first records")
        await until_read(
            lambda: dead_letters(bootstrap, catalog, topic_name),
            lambda f: len(f) == 1,
            "the dead letter",
        )

    after = [tenant_created(10 + i) for i in range(2)]
    await produce(
        bootstrap, topic_name, [cloud_event(env, partition=i % 2) for i, env in enumerate(after)]
    )
    second = RecordingHandler(topics=[topic_name], types=frozenset({TENANT_CREATED}))
    async with running(bootstrap, catalog, second, group) as run:
        await run.until(lambda: len(second.handled) >= len(after), "the new records")

    assert sorted(first.handled_ids()) == sorted(env.id for env in before)
    assert sorted(second.handled_ids()) == sorted(env.id for env in after)
    assert len(await dead_letters(bootstrap, catalog, topic_name)) == 1, "not dead-lettered again"


@dataclass
class CancelledOnce(RecordingHandler):
    """Raises ``CancelledError`` the first time it is handed a batch, as aiokafka's
    consumer stop did when a handler reloaded its state with the broker down."""

    raised: bool = False

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        if not self.raised:
            self.raised = True
            raise asyncio.CancelledError
        return await super().handle_batch(items)


async def test_a_cancellation_nobody_asked_for_is_retried_as_an_outage(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    """Not the end of the consumer's task, nor a dead letter: the batch is handled
    again, and the consumer goes on with what comes after it."""
    await create_topic(bootstrap, topic_name)
    first = [tenant_created(i) for i in range(3)]
    handler = CancelledOnce(topics=[topic_name])
    async with running(bootstrap, catalog, handler, group) as run:
        await produce(bootstrap, topic_name, [cloud_event(env) for env in first])
        await run.until(lambda: len(handler.handled) >= len(first), "the batch handled again")
        later = tenant_created(3)
        await produce(bootstrap, topic_name, [cloud_event(later)])
        await run.until(lambda: len(handler.handled) > len(first), "a later record")

    assert handler.raised
    assert handler.handled_ids() == [env.id for env in [*first, later]]
    assert await dead_letters(bootstrap, catalog, topic_name) == []


@dataclass
class SlowToStartAt(RecordingHandler):
    """Takes a while to prepare its partitions (as a decider reading its tail does), and
    starts each at ``start``, past the group's commits."""

    start: int = 0

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        await asyncio.sleep(1.0)  # the consumer fetches from the commits meanwhile
        return dict.fromkeys(partitions, self.start)


async def test_a_partition_starts_where_its_handler_said_though_records_came_before(
    bootstrap: str, topic_name: str, group: str, catalog: Catalog
) -> None:
    """What the consumer fetched while the handler prepared its partitions, from before
    the offset the handler started them at, is never handed to it."""
    await create_topic(bootstrap, topic_name)
    envs = [tenant_created(i) for i in range(5)]
    await produce(bootstrap, topic_name, [cloud_event(env) for env in envs])
    handler = SlowToStartAt(topics=[topic_name], start=3)
    async with running(bootstrap, catalog, handler, group) as run:
        await run.until(lambda: len(handler.handled) >= 2, "the records from the start")
        await produce(bootstrap, topic_name, [cloud_event(tenant_created(5))])
        await run.until(lambda: len(handler.handled) >= 3, "a later record")

    assert [position.offset for _env, position in handler.handled] == [3, 4, 5]
