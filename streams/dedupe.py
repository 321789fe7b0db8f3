"""Dropping redelivered duplicates: a bounded memory of the event ids a consumer has
handled."""

from __future__ import annotations

from collections import OrderedDict


class SeenIds:
    """A bounded memory of handled event ids (dedupe of redelivered duplicates)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
