"""The projector process: folds the commands and events topics into the core read models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition

from schemas.envelope import Envelope
from streams.catalog import COMMANDS, EVENTS
from streams.consumer import Item

from .store import ProjectionStore


class Projector:
    name = "projector"
    topics: Sequence[str] = (COMMANDS.name, EVENTS.name)
    types = None  # every type

    def __init__(self, store: ProjectionStore) -> None:
        self.store = store

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Resume from the positions stored with the rows, not from Kafka's commits."""
        seeks = {}
        for topic in {tp.topic for tp in partitions}:
            stored = await self.store.positions(topic)
            for tp in partitions:
                if tp.topic == topic:
                    seeks[tp] = stored.get(tp.partition, 0)
        return seeks

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        await self.store.apply(items)
        return []
