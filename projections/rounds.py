"""A batch's row operations as rounds of set-based statements: one statement per shape
of operation (table, columns, key, what a conflict does) per round, whatever order the
events interleave their shapes in.

Operations on different rows commute; those on one row keep their order. So an
operation goes to the round after the last one that touched its row, and a round holds
each row at most once (one statement may not touch a row twice). A row is known by its
table's primary key, which the operation's key must hold; an operation keyed otherwise
(it may touch any row of its table) goes after everything before it on its table, and
everything after it on its table goes after it. The read models have no foreign keys
and no triggers: a table's rows are what orders anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .ops import Add, Update, Upsert

RowOp = Upsert | Add | Update


def shape(op: RowOp) -> tuple[Any, ...]:
    """What one statement can write of many rows alike."""
    if isinstance(op, Update):
        return (Update, op.table, tuple(op.values), tuple(op.key))
    if isinstance(op, Add):
        return (Add, op.table, tuple(op.row), op.key, op.sums)
    return (Upsert, op.table, tuple(op.row), op.key, op.overwrite)


@dataclass
class Group:
    """The operations of one shape in one round: a statement's rows."""

    first: RowOp
    ops: list[RowOp] = field(default_factory=list)


@dataclass
class Rounds:
    """Plans a batch's row operations (``add``); ``groups`` gives them back, round
    by round, each round's shapes in the order they first came."""

    primary_keys: Mapping[str, tuple[str, ...]]  # table -> its primary key's columns
    _rounds: list[dict[tuple[Any, ...], Group]] = field(default_factory=list)
    _row_round: dict[tuple[Any, ...], int] = field(default_factory=dict)
    _table_round: dict[str, int] = field(default_factory=dict)  # the latest on the table
    _barrier: dict[str, int] = field(default_factory=dict)  # the latest keyed otherwise

    def add(self, op: RowOp) -> None:
        row = self._row(op)
        table = op.table
        if row is None:
            at = self._table_round.get(table, -1) + 1
            self._barrier[table] = at
        else:
            at = max(self._row_round.get(row, -1), self._barrier.get(table, -1)) + 1
            self._row_round[row] = at
        self._table_round[table] = max(self._table_round.get(table, -1), at)
        if at == len(self._rounds):
            self._rounds.append({})
        found = self._rounds[at].get(key := shape(op))
        if found is None:
            found = self._rounds[at][key] = Group(op)
        found.ops.append(op)

    def groups(self) -> list[Group]:
        return [group for round_ in self._rounds for group in round_.values()]

    def _row(self, op: RowOp) -> tuple[Any, ...] | None:
        """The row ``op`` touches, by its table's primary key; None if its key does not
        hold the primary key (it may touch any row)."""
        columns = self.primary_keys.get(op.table)
        if not columns:
            return None
        if isinstance(op, Update):
            if not all(c in op.key for c in columns):
                return None
            return (op.table, *(op.key[c] for c in columns))
        if not all(c in op.key for c in columns):
            return None
        return (op.table, *(op.row[c] for c in columns))
