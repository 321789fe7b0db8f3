"""A rebuild's first pass as a bulk load: the log folded in memory, then copied.

The live projector writes each batch as statements. A rebuild from offset 0 into empty
tables need not: it reads the ranges with a C client (``streams.scan``), decodes each
record once, keeps the first occurrence of each event id, runs the same folds
(``ops.project``) and carries out their operations on rows held in memory
(``MemoryTables``); ``bulk_load`` then writes every table with ``COPY`` into tables
whose indexes and constraints are built after the load, and ``bulk_workers`` shares the
partitions out over the cores.

Rows are held as the ``COPY`` text they will be written as, a few hundred bytes each,
so a million ledger rows fit in well under a gigabyte. The operations mean in memory what
they mean in SQL (``store.ProjectionStore``): an ``Upsert`` inserts or overwrites its
``overwrite`` columns, an ``Add`` sums, an ``Update`` sets columns of the row its key
finds. Where the two could disagree the bulk pass gives up rather than guess
(``NotFoldableInMemory``: a table written under two different keys; a load the
database refuses, say a constraint a row breaks), and the rebuild folds record by record
instead, as the live projector does.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from schemas.envelope import EnvelopeError, from_kafka
from streams.handler import failure_reason
from streams.scan import Range, ScannedRecord, headers, scan

from .ops import Add, Context, Notify, Op, Update, Upsert, project
from .store import json_scalar, storable

_SPECIAL = re.compile("[\\\\\n\r\t\x00]")  # what text needs escaped or made storable
_ESCAPED = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
# ``json.dumps``'s encoder, made once rather than for every value.
_JSON = json.JSONEncoder(default=json_scalar, ensure_ascii=False).encode


class NotFoldableInMemory(RuntimeError):
    """The operations cannot be carried out in memory exactly as SQL would."""


class FoldStopped(Exception):
    """The caller stopped the bulk pass (its rebuild was cancelled: Ctrl-C, a shutdown)."""


def copy_text(value: Any, as_json: bool = False) -> str:
    """``value`` as a field of ``COPY``'s text format, read by its column as the live
    store's JSON rows are (``store.ProjectionStore._insert``)."""
    if value is None:
        return "\\N"
    kind = type(value)
    if as_json:
        text = _JSON(value)
        if not text.isascii() or "\\u0000" in text:  # what jsonb cannot hold: made storable
            text = _JSON(storable(value))
    elif kind is str:
        text = value if value.isascii() and "\x00" not in value else storable(value)
    elif kind is bool:
        return "true" if value else "false"
    elif kind is int or kind is Decimal or kind is float:
        return str(value)
    elif isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    else:
        raise TypeError(f"not storable: {kind.__name__}")
    if "\\" in text or "\n" in text or "\t" in text or "\r" in text:
        return text.translate(_ESCAPED)
    return text


def _key(values: list[Any]) -> tuple[Any, ...]:
    """A row's key as Postgres compares it: text as it is stored (``storable``)."""
    for n, value in enumerate(values):
        if type(value) is str and (not value.isascii() or "\x00" in value):
            values[n] = storable(value)
    return tuple(values)


class _Table:
    """One table's rows by key, each as its columns and its ``COPY`` line: the shape
    of the rows ``Upsert`` inserts and ``Update`` changes."""

    def __init__(self, name: str, json_columns: frozenset[str]) -> None:
        self.name = name
        self.json_columns = json_columns
        self.key: tuple[str, ...] | None = None
        self.rows: dict[tuple[Any, ...], tuple[tuple[str, ...], bytes]] = {}
        self.missed: list[Update] = []  # updates that found no row (``BulkFold.merged``)
        self._columns: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per shape

    def encode(self, row: dict[str, Any]) -> tuple[tuple[str, ...], bytes]:
        columns = tuple(row)
        columns = self._columns.setdefault(columns, columns)
        json_columns = self.json_columns
        special = _SPECIAL.search
        line = "\t".join(
            [
                v  # most are plain text or whole numbers, written as they are
                if (kind := type(v)) is str
                and v.isascii()
                and special(v) is None
                and c not in json_columns
                else str(v)
                if kind is int  # as JSON too
                else copy_text(v, c in json_columns)
                for c, v in row.items()
            ]
        )
        return columns, line.encode()

    def lines(self) -> Iterable[tuple[tuple[str, ...], bytes]]:
        return self.rows.values()

    def _fields(self, found: tuple[tuple[str, ...], bytes]) -> dict[str, bytes]:
        columns, line = found
        return dict(zip(columns, line.split(b"\t"), strict=True))

    def _store(self, key: tuple[Any, ...], fields: dict[str, bytes]) -> None:
        columns = tuple(fields)
        self.rows[key] = (self._columns.setdefault(columns, columns), b"\t".join(fields.values()))

    def key_of(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        if self.key is None:
            self.key = columns
        elif self.key != columns:
            raise NotFoldableInMemory(f"{self.name} is written under keys {self.key} and {columns}")
        return columns

    def upsert(self, op: Upsert) -> None:
        row = op.row
        key = _key([row[c] for c in self.key_of(op.key)])
        found = self.rows.get(key)
        if found is None:
            self.rows[key] = self.encode(row)
        elif op.overwrite:
            self._patch(key, found, {c: row[c] for c in op.overwrite})

    def update(self, op: Update) -> None:
        key_columns = self.key or ()
        hit = self.find(op)
        if hit is None:
            self.missed.append(op)  # no row: an UPDATE finds none
            return
        key, found = hit
        fields = self._fields(found)
        for c, v in op.key.items():
            if c in key_columns:
                continue
            if c not in fields:
                raise NotFoldableInMemory(f"{self.name}.{c} is matched before it is written")
            if fields[c] != copy_text(v, c in self.json_columns).encode():
                return  # the row's other key columns differ: no row matches
        self._patch(key, found, op.values)

    def find(self, op: Update) -> tuple[tuple[Any, ...], tuple[tuple[str, ...], bytes]] | None:
        """The row ``op``'s key finds (its key and its columns and line), or None."""
        if self.key is None:
            return None
        if not set(self.key) <= op.key.keys():
            raise NotFoldableInMemory(f"{self.name} is updated by {tuple(op.key)}, not its key")
        key = _key([op.key[c] for c in self.key])
        found = self.rows.get(key)
        return None if found is None else (key, found)

    def _patch(
        self, key: tuple[Any, ...], found: tuple[tuple[str, ...], bytes], values: dict[str, Any]
    ) -> None:
        if not values:
            return
        fields = self._fields(found)
        for c, v in values.items():
            fields[c] = copy_text(v, c in self.json_columns).encode()
        self._store(key, fields)


class _Counters(_Table):
    """A table ``Add`` writes (and nothing else): few rows, each summed many times, so
    held as values and encoded once, when loaded."""

    def __init__(self, name: str, json_columns: frozenset[str]) -> None:
        super().__init__(name, json_columns)
        self.counters: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.sums: tuple[str, ...] = ()

    def add(self, op: Add) -> None:
        row = op.row
        key = _key([row[c] for c in self.key_of(op.key)])
        found = self.counters.get(key)
        if found is None:
            self.counters[key] = dict(row)
            self.sums = op.sums
            return
        for c in op.sums:
            found[c] += row[c]

    def lines(self) -> Iterable[tuple[tuple[str, ...], bytes]]:
        return (self.encode(row) for row in self.counters.values())


T = TypeVar("T", bound=_Table)


class MemoryTables:
    """The read models' tables, empty at first, as the operations leave them."""

    def __init__(self, json_columns: dict[str, frozenset[str]]) -> None:
        self._json_columns = json_columns
        self.tables: dict[str, _Table] = {}

    def _table(self, name: str, kind: type[T]) -> T:
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = kind(name, self._json_columns.get(name, frozenset()))
        if type(table) is not kind:
            raise NotFoldableInMemory(f"{name} is written by Add and by other operations")
        return table

    def apply(self, ops: Iterable[Op]) -> None:
        for op in ops:
            if type(op) is Notify:
                continue
            if type(op) is Add:
                self._table(op.table, _Counters).add(op)
            elif type(op) is Upsert:
                self._table(op.table, _Table).upsert(op)
            elif type(op) is Update:
                self._table(op.table, _Table).update(op)


def _merge_into(mine: _Table, theirs: _Table) -> None:
    """``theirs`` (folded from later partitions) into ``mine``. Rows of one key in both
    are summed if they are counters; otherwise their order would matter, and the
    partitions must be folded one after the other (NotFoldableInMemory)."""
    if type(mine) is not type(theirs) or (
        None not in (mine.key, theirs.key) and mine.key != theirs.key
    ):
        raise NotFoldableInMemory(f"{mine.name} is written differently in two partitions")
    mine.key = mine.key or theirs.key
    mine.missed += theirs.missed
    if isinstance(mine, _Counters) and isinstance(theirs, _Counters):
        for key, row in theirs.counters.items():
            found = mine.counters.get(key)
            if found is None:
                mine.counters[key] = row
                continue
            sums = set(mine.sums) | set(theirs.sums)
            if any(found[c] != row[c] for c in found.keys() - sums) or found.keys() != row.keys():
                raise NotFoldableInMemory(f"{mine.name} counts one key differently")
            for c in sums:
                found[c] += row[c]
        mine.sums = mine.sums or theirs.sums
        return
    if not mine.rows.keys().isdisjoint(theirs.rows.keys()):
        raise NotFoldableInMemory(f"{mine.name} has rows of one key in two partitions")
    mine.rows.update(theirs.rows)


@dataclass
class BulkFold:
    """What a bulk pass folded: the tables, the event ids applied (first occurrences
    whose fold succeeded), each partition's next offset, and the records set aside."""

    tables: MemoryTables
    applied: set[str] = field(default_factory=set)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    set_aside: list[tuple[ScannedRecord, str | None, str]] = field(default_factory=list)
    read: int = 0

    @classmethod
    def merged(cls, parts: list[BulkFold]) -> BulkFold:
        """What folding the parts' partitions one after the other gives, from their
        folds apart: the same as long as no row is written from two parts but a
        counter's, no event is in two parts, and no part's update missed a row another
        part holds (else NotFoldableInMemory, and they are folded one after the other)."""
        done = cls(MemoryTables({}))
        for n, part in enumerate(parts):
            for name, table in part.tables.tables.items():
                for update in table.missed:
                    for other in parts[:n] + parts[n + 1 :]:
                        theirs = other.tables.tables.get(name)
                        if isinstance(theirs, _Table) and theirs.find(update) is not None:
                            raise NotFoldableInMemory(f"{name} is updated from two partitions")
            if not done.applied.isdisjoint(part.applied):
                raise NotFoldableInMemory("an event is in two partitions")
            done.applied |= part.applied
            for name, table in part.tables.tables.items():
                mine = done.tables.tables.get(name)
                if mine is None:
                    done.tables.tables[name] = table
                else:
                    _merge_into(mine, table)
            done.positions.update(part.positions)
            done.set_aside += part.set_aside
            done.read += part.read
        return done


def fold(
    bootstrap_servers: str,
    ranges: list[Range],
    json_columns: dict[str, frozenset[str]],
    progress: Callable[[int], None],
    stop: threading.Event | None = None,
) -> BulkFold:
    """Fold ``ranges`` (read in their order) into memory. A record that cannot be read,
    or whose fold raises, is set aside (the caller dead-letters it, as the live
    projector would) and its position passed; ``progress`` hears of every batch.
    FoldStopped at the first batch after ``stop`` is set."""
    done = BulkFold(MemoryTables(json_columns))
    applied = done.applied
    apply = done.tables.apply
    for batch in scan(bootstrap_servers, ranges):
        for message in batch:
            offset = message.offset() or 0
            partition = message.partition() or 0
            try:
                env = from_kafka(message.key(), message.value(), headers(message))
            except EnvelopeError as exc:
                done.set_aside.append((ScannedRecord.of(message), None, str(exc)))
                continue
            if env.id in applied:
                continue
            ctx = Context(env.id, env.tenant_id, env.causation_id, env.time, partition, offset)
            try:
                ops = project(env.data, ctx)
            except Exception as exc:  # the live projector sets it aside alike
                done.set_aside.append((ScannedRecord.of(message), env.id, failure_reason(exc)))
                continue
            apply(ops)
            applied.add(env.id)
        last = batch[-1]
        done.positions[(str(last.topic()), last.partition() or 0)] = (last.offset() or 0) + 1
        done.read += len(batch)
        progress(len(batch))
        if stop is not None and stop.is_set():
            raise FoldStopped(f"stopped after {done.read} records")
    return done
