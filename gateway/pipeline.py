"""The pipeline as Kafka sees it, for the operators' view: every role's consumer group,
its committed offset and lag per partition, and each topic's log end offsets.

Read from the cluster (a metadata client and one unassigned consumer), not from the
roles' own ``/metrics``: it shows a role that is down, whose lag then grows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.catalog import SPECS, Catalog
from streams.partitions import LogReader
from workers.runner import ROLES

FRESH_S = 1.0


@dataclass(frozen=True)
class GroupLag:
    role: str
    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True)
class Snapshot:
    groups: list[GroupLag]
    ends: dict[str, dict[int, int]]  # topic -> partition -> log end offset


class Pipeline:
    def __init__(self, bootstrap_servers: str, catalog: Catalog) -> None:
        self.catalog = catalog
        self.bootstrap_servers = bootstrap_servers
        self._admin: AIOKafkaAdminClient | None = None  # made in the event loop, on first use
        self._reader = LogReader(bootstrap_servers)
        self._lock = asyncio.Lock()  # the reader is not for concurrent use
        self._last: tuple[float, Snapshot] | None = None

    async def snapshot(self) -> Snapshot:
        """The groups' lag and the topics' ends; one read of the cluster serves every
        page open within ``FRESH_S`` of it."""
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < FRESH_S:
                return self._last[1]
            snapshot = await self._read()
            self._last = (time.monotonic(), snapshot)
            return snapshot

    async def _read(self) -> Snapshot:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            await self._admin.start()
            await self._reader.start()
        topics = [self.catalog.name(spec) for spec in SPECS]
        tps = [tp for topic in topics for tp in await self._reader.partitions(topic)]
        ends = await self._reader.ends(tps)
        groups = []
        for role in ROLES:
            group = self.catalog.group_id(role)
            offsets = await self._admin.list_consumer_group_offsets(group)
            for tp, meta in sorted(offsets.items()):
                end = ends.get(TopicPartition(tp.topic, tp.partition))
                if end is not None and meta.offset >= 0:
                    groups.append(GroupLag(role, group, tp.topic, tp.partition, meta.offset, end))
        by_topic: dict[str, dict[int, int]] = {}
        for tp, end in sorted(ends.items()):
            by_topic.setdefault(tp.topic, {})[tp.partition] = end
        return Snapshot(groups, by_topic)

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            await self._reader.stop()
