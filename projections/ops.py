"""The operations a fold returns, and the root fold that gathers every read model's.

A fold reads nothing but the event and its position (``Context``): no wall clock, no
random ids, no database. The same events in give the same operations out, so a rebuild
from offset 0 reproduces the live tables byte for byte. Each read model module registers
its folds here with ``@folds(EventClass, ...)``; ``project`` returns what all of them make
of an event, and ``store.ProjectionStore`` executes it.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from schemas.base import Fact

PROJECTION = "core"  # the read models of the commands and events topics
BILLING = "billing"  # those of the usage and billing topics, in a schema of their own


@dataclass(frozen=True, slots=True)
class Context:
    event_id: str
    tenant_id: str
    causation_id: str
    time: datetime.datetime
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert the row, or overwrite the given columns of the existing one."""

    table: str
    key: tuple[str, ...]
    row: dict[str, Any]
    overwrite: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Add:
    """Insert the row, or add its ``sums`` columns to the existing row's (a counter).
    A table written by ``Add`` is written by nothing else: the store sums a batch's
    additions to one row before it writes them."""

    table: str
    key: tuple[str, ...]
    row: dict[str, Any]
    sums: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Update:
    table: str
    key: dict[str, Any]
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notify:
    """Wake the readers waiting on ``key`` (a request with ``?wait=``) once the
    transaction commits. It changes no table, so folds stay comparable by their rows."""

    key: str


Op = Upsert | Add | Update | Notify
Fold = Callable[[Any, Context], list[Op]]
F = TypeVar("F", bound=Fold)


class Folds:
    """Per fact class, the folds of every read model that keeps something of it, in the
    order of the read models' names (a read model's own in the order it registered
    them): which module happened to import which first changes no event's operations."""

    def __init__(self) -> None:
        self._by_type: defaultdict[type[Fact], list[tuple[str, Fold]]] = defaultdict(list)

    def __call__(self, *types: type[Fact]) -> Callable[[F], F]:
        """Register the decorated fold for ``types``; its module names the read model."""

        def register(fold: F) -> F:
            read_model = fold.__module__.rpartition(".")[2]
            for type_ in types:
                self._by_type[type_].append((read_model, fold))
                self._by_type[type_].sort(key=lambda entry: entry[0])  # stable
            return fold

        return register

    def project(self, data: Fact, ctx: Context) -> list[Op]:
        return [op for _name, fold in self._by_type.get(type(data), ()) for op in fold(data, ctx)]

    def read_models(self, type_: type[Fact]) -> list[str]:
        """The read models that fold facts of ``type_``."""
        return sorted({name for name, _fold in self._by_type.get(type_, ())})


folds = Folds()


def project(data: Fact, ctx: Context) -> list[Op]:
    """Every read model's operations for one event; facts no read model keeps give none."""
    return folds.project(data, ctx)
