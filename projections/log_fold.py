"""Folding ranges of the log record by record, as the live projector does: a rebuild's
catch-up to the live positions, and its whole first pass when the bulk pass cannot
fold the log exactly (``rebuild``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from schemas.envelope import EnvelopeError, from_kafka
from streams.catalog import Catalog
from streams.dead_letters import dead_letter_headers
from streams.handler import Item, Position, failure_reason
from streams.logs import redact
from streams.partitions import LogReader
from streams.publisher import Publisher

from .database import OUTAGES
from .store import ProjectionStore


@dataclass(frozen=True)
class SetAside:
    """A record a rebuild could not fold, and why: it was set aside as the live
    projector sets it aside (to the dead-letter topic), and the rebuild went on."""

    topic: str
    partition: int
    offset: int
    event_id: str | None
    reason: str

    def __str__(self) -> str:
        event = "" if self.event_id is None else f" (event {self.event_id})"
        return f"{self.topic}[{self.partition}]@{self.offset}{event}: {self.reason}"


class LogFold:
    """Folds ranges of the log into a store's tables the way the live projector does:
    unreadable records and records whose fold fails alone are set aside (written to
    ``catalog``'s dead-letter topic, counted and reported) and the stored positions
    pass them."""

    def __init__(
        self, store: ProjectionStore, reader: LogReader, bootstrap_servers: str, catalog: Catalog
    ) -> None:
        self.store = store
        self.reader = reader
        self.set_aside: list[SetAside] = []
        self._bootstrap_servers = bootstrap_servers
        self._catalog = catalog
        self._publisher: Publisher | None = None

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()

    async def until(
        self, targets: dict[TopicPartition, int], progress: Callable[[int], None]
    ) -> int:
        """Apply events until every partition's next offset reaches its target, one
        topic after the other in the order of ``targets``: commands first, since a
        command is always applied before the outcome it caused (the command handler
        fences on it), so this is the order the live projector saw. ``progress`` hears
        of every batch read."""
        applied = 0
        for topic in dict.fromkeys(tp.topic for tp in targets):
            stored = await self.store.positions(topic)
            ends = {tp: end for tp, end in targets.items() if tp.topic == topic}
            starts = {tp: stored.get(tp.partition, 0) for tp in ends}
            async for batch in self.reader.batches(starts, ends, max_records=2000):
                items: list[tuple[Item, Any]] = []
                for record in batch:
                    try:
                        env = from_kafka(record.key, record.value, list(record.headers))
                    except EnvelopeError as exc:
                        await self.put_aside(record, None, str(exc))
                        continue
                    position = Position(record.topic, record.partition, record.offset)
                    items.append(((env, position), record))
                applied += await self._apply(items)
                progress(len(batch))
        return applied

    async def _apply(self, items: list[tuple[Item, Any]]) -> int:
        """Apply a batch; if it fails, apply it record by record and set aside the
        records that fail alone (an outage of Postgres is not theirs: it is raised)."""
        if not items:
            return 0
        try:
            return await self.store.apply([item for item, _record in items])
        except OUTAGES:
            raise
        except Exception as exc:
            if len(items) == 1:
                await self.put_aside(items[0][1], items[0][0][0].id, failure_reason(exc))
                return 0
        applied = 0
        for item, record in items:
            try:
                applied += await self.store.apply([item])
            except OUTAGES:
                raise
            except Exception as exc:
                await self.put_aside(record, item[0].id, failure_reason(exc))
        return applied

    async def put_aside(
        self, record: Any, event_id: str | None, reason: str, *, advance: bool = True
    ) -> None:
        """Write ``record`` to the dead-letter topic with ``reason``, and move the
        stored position past it (unless the caller stores positions itself)."""
        if self._publisher is None:
            self._publisher = Publisher(self._bootstrap_servers, self._catalog, traced=False)
            await self._publisher.start()
        reason = redact(reason)
        headers = dead_letter_headers(record, reason, f"rebuild-{self.store.projection}")
        await self._publisher.send_raw(
            self._publisher.catalog.dead_letter, record.value, record.key, headers
        )
        if advance:
            await self.store.advance({(record.topic, record.partition): record.offset + 1})
        self.set_aside.append(
            SetAside(record.topic, record.partition, record.offset, event_id, reason)
        )
