"""The projector process: folds topics into read models. The core projector folds the
commands and events topics; the billing projector the usage and billing topics, into
the billing schema."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.consumer import Item

from .store import ProjectionStore


class Projector:
    types = None  # every type

    def __init__(
        self, store: ProjectionStore, topics: tuple[str, ...], name: str = "projector"
    ) -> None:
        self.store = store
        self.topics = topics
        self.name = name

    @classmethod
    def core(cls, store: ProjectionStore, catalog: Catalog) -> Projector:
        return cls(store, (catalog.commands, catalog.events))

    @classmethod
    def billing(cls, store: ProjectionStore, catalog: Catalog) -> Projector:
        return cls(store, (catalog.usage, catalog.billing), name="billing")

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Resume from the positions stored with the rows, not from Kafka's commits."""
        stored = await self.store.positions_all()
        return {tp: stored.get((tp.topic, tp.partition), 0) for tp in partitions}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        await self.store.apply(items)
        return []

    async def passed(self, ends: dict[tuple[str, int], int]) -> None:
        await self.store.advance(ends)

    async def close(self) -> None:
        await self.store.close()
