"""The projector process: folds the commands and events topics into the read models."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.consumer import Item

from .store import ProjectionStore


class Projector:
    name = "projector"
    types = None  # every type

    def __init__(self, store: ProjectionStore, catalog: Catalog) -> None:
        self.store = store
        self.topics = (catalog.commands, catalog.events)

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Resume from the positions stored with the rows, not from Kafka's commits."""
        stored = await self.store.positions_all()
        return {tp: stored.get((tp.topic, tp.partition), 0) for tp in partitions}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        await self.store.apply(items)
        return []

    async def close(self) -> None:
        await self.store.close()
