"""The projector process: folds topics into read models. The core projector folds the
commands and events topics; the billing projector the usage and billing topics, into
the billing schema."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.handler import (
    Closes,
    Item,
    RecordsUnprocessable,
    StoresPositions,
    unprocessable_step,
)

from .store import ProjectionStore


class Projector(RecordsUnprocessable, StoresPositions, Closes):
    types = None  # every type

    def __init__(
        self,
        store: ProjectionStore,
        topics: tuple[str, ...],
        name: str = "projector",
        *,
        runs_turns: bool = True,
    ) -> None:
        """``runs_turns``: whether a record it cannot fold may be a step of a running
        turn (the core topics), which then fails; usage and billing records are not."""
        self.store = store
        self.topics = topics
        self.name = name
        self.runs_turns = runs_turns

    @classmethod
    def core(cls, store: ProjectionStore, catalog: Catalog) -> Projector:
        return cls(store, (catalog.commands, catalog.events))

    @classmethod
    def billing(cls, store: ProjectionStore, catalog: Catalog) -> Projector:
        return cls(store, (catalog.usage, catalog.billing), name="billing", runs_turns=False)

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Resume from the positions stored with the rows, not from Kafka's commits."""
        stored = await self.store.positions_all()
        return {tp: stored.get((tp.topic, tp.partition), 0) for tp in partitions}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        await self.store.apply(items)
        return []

    def unprocessable(self, env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
        """What is recorded when a record goes to the dead-letter topic from here."""
        return unprocessable_step(env, self.name, reason) if self.runs_turns else []

    async def passed(self, ends: dict[tuple[str, int], int]) -> None:
        await self.store.advance(ends)

    async def close(self) -> None:
        await self.store.close()
