"""``LogReader`` over a real broker: ranges of a partition, several partitions to their
ends, a partition followed live, and where partitions begin and end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition

from schemas.events import AgentCreated, TenantCreated
from streams.partitions import LogReader

from .records import (
    agent_created,
    cloud_event,
    create_topic,
    garbage,
    of_unknown_type,
    produce,
    tenant_created,
)


@pytest.fixture
async def reader(bootstrap: str) -> AsyncIterator[LogReader]:
    reader = await LogReader(bootstrap).start()
    yield reader
    await reader.stop()


async def test_a_range_gives_its_readable_envelopes_of_the_wanted_types(
    bootstrap: str, topic_name: str, reader: LogReader
) -> None:
    await create_topic(bootstrap, topic_name)
    tenants = [tenant_created(i) for i in range(3)]
    agents = [agent_created(i) for i in range(2)]
    records = [
        cloud_event(tenants[0]),  # 0
        cloud_event(agents[0]),  # 1
        garbage(),  # 2
        cloud_event(tenants[1]),  # 3
        of_unknown_type(tenant_created(97)),  # 4
        cloud_event(tenants[2]),  # 5
        cloud_event(agents[1]),  # 6
    ]
    positions = await produce(bootstrap, topic_name, records)
    assert [p.offset for p in positions] == list(range(7))
    tp = TopicPartition(topic_name, 0)
    tenant_type = frozenset({TenantCreated.ce_type()})

    assert await reader.envelopes(tp, 1, 6) == [agents[0], tenants[1], tenants[2]]
    assert await reader.envelopes(tp, 0, 7, tenant_type) == tenants
    assert await reader.envelopes(tp, 2, 6, frozenset({AgentCreated.ce_type()})) == []
    assert await reader.envelopes(tp, 3, 4) == [tenants[1]]
    assert await reader.envelopes(tp, 4, 4) == []


async def test_batches_end_at_each_partitions_end_and_edges_are_reported(
    bootstrap: str, topic_name: str, reader: LogReader
) -> None:
    await create_topic(bootstrap, topic_name, partitions=2)
    written = [cloud_event(tenant_created(i), partition=i % 2) for i in range(7)]
    await produce(bootstrap, topic_name, written)
    tps = await reader.partitions(topic_name)
    assert tps == [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
    assert await reader.beginnings(tps) == {tps[0]: 0, tps[1]: 0}
    ends = await reader.ends(tps)
    assert ends == {tps[0]: 4, tps[1]: 3}

    seen = [
        (r.partition, r.offset)
        async for batch in reader.batches({tps[0]: 1, tps[1]: 0}, {tps[0]: 3, tps[1]: 3})
        for r in batch
    ]

    assert sorted(seen) == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [o for p, o in seen if p == 0] == [1, 2], "each partition in log order"
    # Read to their ends, they are fetched no more (an idle reader costs no requests),
    # and read again when asked.
    assert reader.consumer.paused() == set(tps)
    again = [r.offset async for batch in reader.batches({tps[0]: 3}, {tps[0]: 4}) for r in batch]
    assert again == [3]


async def test_without_an_end_a_partition_is_followed_as_it_grows(
    bootstrap: str, topic_name: str, reader: LogReader
) -> None:
    await create_topic(bootstrap, topic_name)
    tp = TopicPartition(topic_name, 0)
    await produce(bootstrap, topic_name, [cloud_event(tenant_created(0))])
    later = tenant_created(1)

    async def follow() -> list[int]:
        offsets: list[int] = []
        async for batch in reader.batches({tp: 0}, poll_ms=100):
            offsets.extend(r.offset for r in batch)
            if len(offsets) == 1:  # read what was there: now write more
                await produce(bootstrap, topic_name, [cloud_event(later)])
            if len(offsets) == 2:
                return offsets
        raise AssertionError("following ended")

    assert await asyncio.wait_for(follow(), 20) == [0, 1]


async def test_a_range_that_cannot_be_reached_times_out(
    bootstrap: str, topic_name: str, reader: LogReader
) -> None:
    await create_topic(bootstrap, topic_name)
    await produce(bootstrap, topic_name, [cloud_event(tenant_created(0))])

    with pytest.raises(TimeoutError):
        await reader.envelopes(TopicPartition(topic_name, 0), 0, 5, timeout=0.5)


async def test_the_offset_at_a_time_is_the_first_record_written_then_or_later(
    bootstrap: str, topic_name: str, reader: LogReader
) -> None:
    await create_topic(bootstrap, topic_name)
    for n in range(3):
        await produce(bootstrap, topic_name, [cloud_event(tenant_created(n))])
        await asyncio.sleep(0.02)
    tp = TopicPartition(topic_name, 0)
    times = [r.timestamp async for batch in reader.batches({tp: 0}, {tp: 3}) for r in batch]
    assert times[0] < times[1] < times[2]

    assert await reader.offset_at(tp, 0) == 0
    assert await reader.offset_at(tp, times[0] + 1) == 1
    assert await reader.offset_at(tp, times[1]) == 1
    assert await reader.offset_at(tp, times[2]) == 2
    assert await reader.offset_at(tp, times[2] + 60_000) == 3  # none: the end
