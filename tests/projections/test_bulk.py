"""A rebuild's bulk pass (``projections.bulk``: the log folded in memory, then copied)
leaves exactly the tables the live store leaves, and a store fed one event at a time.

Histories are random: facts of every kind the read models fold, a whole conversation
whose facts update and overwrite each other's rows, usage that sums into the same daily
rows, usage recorded as v1 (upcast on reading), and events published again (same id,
later offset). They go through the real broker, keyed as every writer keys them, onto
several partitions per topic. The live store reads the partitions interleaved at random
in batches cut at random, as the live projector's polls would; the bulk pass reads them
one after the other, in one process or in two whose folds are merged."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import multiprocessing
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection

from projections import bulk, bulk_load, bulk_workers
from projections.migrate import BILLING_SCRIPTS, CORE_SCRIPTS, upgrade
from projections.ops import BILLING, PROJECTION
from projections.rebuild import table_hashes
from projections.store import ProjectionStore
from schemas import usage
from schemas.envelope import Envelope, envelope, from_kafka
from streams.catalog import Catalog, ensure_topics
from streams.handler import Item, Position
from streams.partitions import LogReader
from streams.publisher import Publisher
from streams.scan import Range
from tests.bench.bench_billing import produce_usage

from .conftest import DATABASE_URL
from .conversation import Ids, conversation, model_answers
from .strategies import fact_strategies

PARTITIONS = 3
TENANTS = ("tenant-a", "tenant-b")
DAY = datetime.datetime(2026, 11, 3, 9, tzinfo=datetime.UTC)


def _on(topics: tuple[str, ...]) -> list[type[Any]]:
    catalog = Catalog()
    return [t for t in fact_strategies("x") if catalog.topic_for(t) in topics]


CORE_FACTS = _on((Catalog().commands, Catalog().events))
BILLING_FACTS = _on((Catalog().usage, Catalog().billing))
# Usage that lands on the same daily rows: one agent, two resources, one day.
same_day_usage = st.builds(
    usage.UsageRecorded,
    tenant_id=st.just("tenant-a"),
    kind=st.just("model"),
    resource=st.sampled_from(["m1", "m2"]),
    quantities=st.fixed_dictionaries({"input_tokens": st.integers(1, 500)}),
    used_at=st.just(DAY),
    agent_id=st.just("agent-1"),
)


@st.composite
def histories(draw: st.DrawFn, kinds: list[type[Any]], billing: bool) -> list[Envelope[Any]]:
    facts: list[Envelope[Any]] = []
    for _ in range(draw(st.integers(0, 12))):
        tenant = draw(st.sampled_from(TENANTS))
        kind = draw(st.sampled_from(kinds))
        fact = draw(fact_strategies(tenant)[kind])
        facts.append(envelope(fact, source="/tests/bulk", tenant_id=tenant))
    if billing:
        for fact in draw(st.lists(same_day_usage, min_size=1, max_size=8)):
            facts.append(envelope(fact, source="/tests/bulk", tenant_id=fact.tenant_id))
    else:  # two sessions of one tenant at one time: on two partitions, the same counters
        first = Ids.new("bulk")
        second = dataclasses.replace(Ids.new("bulk"), tenant_id=first.tenant_id)
        for ids in (first, second):
            facts += [*conversation(ids).values(), *model_answers(ids)]
    again = draw(st.lists(st.sampled_from(facts), max_size=4)) if facts else []
    return facts + again


async def _publish(bootstrap: str, catalog: Catalog, envs: list[Envelope[Any]]) -> None:
    publisher = Publisher(bootstrap, catalog, traced=False)
    await publisher.start()
    try:
        for env in envs:
            await publisher.publish(env)
    finally:
        await publisher.stop()


async def _read(bootstrap: str, topics: tuple[str, ...]) -> tuple[list[list[Item]], list[Range]]:
    """Every record of ``topics``, per partition in log order; and the partitions' ranges."""
    reader = await LogReader(bootstrap).start()
    try:
        tps = [tp for topic in topics for tp in await reader.partitions(topic)]
        tps.sort(key=lambda tp: (topics.index(tp.topic), tp.partition))
        ends = await reader.ends(tps)
        per: dict[tuple[str, int], list[Item]] = {(tp.topic, tp.partition): [] for tp in tps}
        async for batch in reader.batches(dict.fromkeys(tps, 0), ends):
            for record in batch:
                env = from_kafka(record.key, record.value, list(record.headers))
                position = Position(record.topic, record.partition, record.offset)
                per[(record.topic, record.partition)].append((env, position))
    finally:
        await reader.stop()
    ranges = [Range(tp.topic, tp.partition, 0, ends[tp]) for tp in tps]
    return list(per.values()), ranges


async def _apply(store: ProjectionStore, batch: list[Item], set_aside: list[str]) -> None:
    """A batch as the live projector applies one: a record whose fold fails alone is
    set aside (why, in ``set_aside``) and passed."""
    try:
        await store.apply(batch)
        return
    except psycopg.OperationalError:
        raise
    except Exception:  # applied again record by record, below
        pass
    for item in batch:
        try:
            await store.apply([item])
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            set_aside.append(f"{item[0].type} {item[0].id}: {type(exc).__name__}: {exc}")
            await store.advance({(item[1].topic, item[1].partition): item[1].offset + 1})


def _interleaved(
    partitions: list[list[Item]], topics: tuple[str, ...], rng: random.Random
) -> list[list[Item]]:
    """Batches as a live consumer's polls could give them: each topic's partitions
    interleaved at random (each in its order), cut at random, topic after topic."""
    batches: list[list[Item]] = []
    for topic in topics:
        queues = [list(p) for p in partitions if p and p[0][1].topic == topic]
        batch: list[Item] = []
        while any(queues):
            queue = rng.choice([q for q in queues if q])
            taken = rng.randint(1, 3)
            batch += queue[:taken]
            del queue[:taken]
            if rng.random() < 0.4:
                batches.append(batch)
                batch = []
        batches.append(batch)
    return [b for b in batches if b]


async def _schema(scripts: Path) -> str:
    name = f"bulk_{uuid.uuid4().hex[:12]}"
    upgrade(DATABASE_URL, name, scripts)
    return name


async def _drop(names: list[str]) -> None:
    async with await AsyncConnection.connect(DATABASE_URL, autocommit=True) as conn:
        for name in names:
            for dropped in (name, f"{name}_secrets"):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{dropped}" CASCADE')


async def _bulk_equals_live(
    bootstrap: str, envs: list[Envelope[Any]], rng: random.Random, billing: bool, processes: int
) -> None:
    catalog = Catalog(f"bulk_{uuid.uuid4().hex[:10]}.")
    topics = (catalog.usage, catalog.billing) if billing else (catalog.commands, catalog.events)
    projection, scripts = (BILLING, BILLING_SCRIPTS) if billing else (PROJECTION, CORE_SCRIPTS)
    await ensure_topics(bootstrap, catalog, PARTITIONS)
    await _publish(bootstrap, catalog, envs)
    partitions, ranges = await _read(bootstrap, topics)
    schemas = [await _schema(scripts) for _ in range(3)]
    live_schema, single_schema, bulk_schema = schemas
    try:
        live = ProjectionStore(DATABASE_URL, live_schema, projection)
        single = ProjectionStore(DATABASE_URL, single_schema, projection, live=False)
        set_aside: tuple[list[str], list[str]] = ([], [])
        try:
            for batch in _interleaved(partitions, topics, rng):
                await _apply(live, batch, set_aside[0])
            for item in (item for p in partitions for item in p):
                await _apply(single, [item], set_aside[1])
        finally:
            await live.close()
            await single.close()
        with psycopg.connect(DATABASE_URL) as conn:
            columns = bulk_load.json_columns(conn, bulk_schema)
        try:
            folded = bulk_workers.fold(
                bootstrap, ranges, columns, lambda _n: None, processes=processes, at_least=0
            )
        except bulk_workers.PartsOverlapError:  # as a rebuild does: in one process
            folded = bulk.fold(bootstrap, ranges, columns, lambda _n: None)
        bulk_load.load(DATABASE_URL, bulk_schema, projection, folded)

        async with await AsyncConnection.connect(DATABASE_URL, autocommit=True) as conn:
            hashes = [await table_hashes(conn, s) for s in schemas]
        assert folded.read == sum(len(p) for p in partitions)
        assert hashes[2] == hashes[0], f"the bulk pass differs from live: {set_aside[0]}"
        assert hashes[1] == hashes[0], f"one event at a time differs from live: {set_aside}"
    finally:
        await _drop(schemas)


@pytest.mark.parametrize("billing", [False, True], ids=["core", "billing"])
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_a_bulk_rebuild_equals_the_live_tables_and_one_event_at_a_time(
    bootstrap: str, billing: bool, data: st.DataObject
) -> None:
    envs = data.draw(histories(BILLING_FACTS if billing else CORE_FACTS, billing))
    # A seed, not st.randoms(): how the batches are cut depends on which partition the
    # broker put each record on, which Hypothesis does not know to replay.
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    processes = data.draw(st.sampled_from([1, 2]), label="processes")
    await _bulk_equals_live(bootstrap, envs, rng, billing, processes)


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_bulk_pass_told_to_stop_ends_at_its_next_batch(
    bootstrap: str, processes: int
) -> None:
    """A rebuild cancelled (Ctrl-C, a shutdown) sets ``stop``: the fold ends long before
    the log's end rather than holding the process until it gets there."""
    catalog = Catalog(f"bulk_{uuid.uuid4().hex[:10]}.")
    await ensure_topics(bootstrap, catalog, PARTITIONS)
    records = 25_000  # about 8,000 a partition: a batch each, three batches in all
    produce_usage(bootstrap, catalog.usage, [f"tenant-{n}" for n in range(30)], records)
    reader = await LogReader(bootstrap).start()
    try:
        ends = await reader.ends(await reader.partitions(catalog.usage))
    finally:
        await reader.stop()
    ranges = [Range(tp.topic, tp.partition, 0, end) for tp, end in ends.items()]
    stop = threading.Event()
    heard: list[int] = []

    def progress(read: int) -> None:
        heard.append(read)
        stop.set()

    with pytest.raises(bulk.FoldStopped):
        await asyncio.to_thread(
            bulk_workers.fold,
            bootstrap,
            ranges,
            {"usage_ledger": frozenset({"quantities"})},
            progress,
            processes=processes,
            at_least=0,
            stop=stop,
        )
    assert 0 < sum(heard) < records
    assert multiprocessing.active_children() == []
