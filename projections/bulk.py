"""A rebuild's first pass as a bulk load: the log folded in memory, then copied.

The live projector writes each batch as statements. A rebuild from offset 0 into empty
tables need not: it reads the ranges with a C client (``streams.scan``), decodes each
record once, keeps the first occurrence of each event id, runs the same folds
(``ops.project``) and carries out their operations on rows held in memory
(``MemoryTables``), then writes every table with ``COPY`` into tables whose indexes and
constraints are built after the load (``load``).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from schemas.envelope import EnvelopeError, from_kafka
from streams.handler import failure_reason
from streams.scan import Range, ScannedRecord, headers, scan

from .ops import Add, Context, Notify, Op, Update, Upsert, project
from .store import _json_scalar, storable

_ESCAPED = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_KEPT = ("alembic_version", "log_source")  # bookkeeping a migration writes: not reloaded


class NotFoldableInMemory(RuntimeError):
    """The operations cannot be carried out in memory exactly as SQL would."""


def copy_text(value: Any, as_json: bool) -> str:
    """``value`` as a field of ``COPY``'s text format, read by its column as the live
    store's JSON rows are (``store.ProjectionStore._insert``)."""
    if value is None:
        return "\\N"
    if as_json:
        text = json.dumps(storable(value), default=_json_scalar, ensure_ascii=False)
    elif isinstance(value, str):
        text = storable(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | Decimal | float):
        return str(value)
    elif isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    else:
        raise TypeError(f"not storable: {type(value).__name__}")
    if "\\" in text or "\n" in text or "\t" in text or "\r" in text:
        return text.translate(_ESCAPED)
    return text


def _key_value(value: Any) -> Any:
    return storable(value) if isinstance(value, str) else value


class _Table:
    """One table's rows by key, each as its columns and its ``COPY`` line."""

    def __init__(self, name: str, json_columns: frozenset[str]) -> None:
        self.name = name
        self.json_columns = json_columns
        self.key: tuple[str, ...] | None = None
        self.rows: dict[tuple[Any, ...], tuple[tuple[str, ...], bytes]] = {}
        self._columns: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per shape

    def _encode(self, row: dict[str, Any]) -> tuple[tuple[str, ...], bytes]:
        columns = tuple(row)
        columns = self._columns.setdefault(columns, columns)
        json_columns = self.json_columns
        line = "\t".join([copy_text(v, c in json_columns) for c, v in row.items()])
        return columns, line.encode()

    def _fields(self, found: tuple[tuple[str, ...], bytes]) -> dict[str, bytes]:
        columns, line = found
        return dict(zip(columns, line.split(b"\t"), strict=True))

    def _store(self, key: tuple[Any, ...], fields: dict[str, bytes]) -> None:
        columns = tuple(fields)
        self.rows[key] = (self._columns.setdefault(columns, columns), b"\t".join(fields.values()))

    def _key_of(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        if self.key is None:
            self.key = columns
        elif self.key != columns:
            raise NotFoldableInMemory(f"{self.name} is written under keys {self.key} and {columns}")
        return columns

    def upsert(self, op: Upsert | Add) -> None:
        key = tuple([_key_value(op.row[c]) for c in self._key_of(op.key)])
        found = self.rows.get(key)
        if found is None:
            self.rows[key] = self._encode(op.row)
            return
        if isinstance(op, Add):
            fields = self._fields(found)
            for c in op.sums:
                fields[c] = str(_number(fields[c]) + op.row[c]).encode()
            self._store(key, fields)
        elif op.overwrite:
            self._patch(key, found, {c: op.row[c] for c in op.overwrite})

    def update(self, op: Update) -> None:
        if self.key is None:
            return  # no row yet: an UPDATE finds none
        if not set(self.key) <= op.key.keys():
            raise NotFoldableInMemory(f"{self.name} is updated by {tuple(op.key)}, not its key")
        key = tuple([_key_value(op.key[c]) for c in self.key])
        found = self.rows.get(key)
        if found is None:
            return
        fields = self._fields(found)
        for c, v in op.key.items():
            if c in self.key:
                continue
            if c not in fields:
                raise NotFoldableInMemory(f"{self.name}.{c} is matched before it is written")
            if fields[c] != copy_text(v, c in self.json_columns).encode():
                return  # the row's other key columns differ: no row matches
        self._patch(key, found, op.values)

    def _patch(
        self, key: tuple[Any, ...], found: tuple[tuple[str, ...], bytes], values: dict[str, Any]
    ) -> None:
        if not values:
            return
        fields = self._fields(found)
        for c, v in values.items():
            fields[c] = copy_text(v, c in self.json_columns).encode()
        self._store(key, fields)


def _number(text: bytes) -> int | Decimal:
    try:
        return int(text)
    except ValueError:
        return Decimal(text.decode())


class MemoryTables:
    """The read models' tables, empty at first, as the operations leave them."""

    def __init__(self, json_columns: dict[str, frozenset[str]]) -> None:
        self._json_columns = json_columns
        self.tables: dict[str, _Table] = {}

    def apply(self, ops: Iterable[Op]) -> None:
        for op in ops:
            if isinstance(op, Notify):
                continue
            table = self.tables.get(op.table)
            if table is None:
                columns = self._json_columns.get(op.table, frozenset())
                table = self.tables[op.table] = _Table(op.table, columns)
            if isinstance(op, Update):
                table.update(op)
            else:
                table.upsert(op)


@dataclass
class BulkFold:
    """What a bulk pass folded: the tables, the event ids applied (first occurrences
    whose fold succeeded), each partition's next offset, and the records set aside."""

    tables: MemoryTables
    applied: set[str] = field(default_factory=set)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    set_aside: list[tuple[ScannedRecord, str | None, str]] = field(default_factory=list)
    read: int = 0


def fold(
    bootstrap_servers: str,
    ranges: list[Range],
    json_columns: dict[str, frozenset[str]],
    progress: Callable[[int], None],
) -> BulkFold:
    """Fold ``ranges`` (read in their order) into memory. A record that cannot be read,
    or whose fold raises, is set aside (the caller dead-letters it, as the live
    projector would) and its position passed; ``progress`` hears of every batch."""
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
    return done


def json_columns(conn: psycopg.Connection[Any], schema: str) -> dict[str, frozenset[str]]:
    """Per table of ``schema``, its json and jsonb columns."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND data_type IN ('json', 'jsonb')",
        (schema,),
    ).fetchall()
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    return {table: frozenset(columns) for table, columns in found.items()}


@dataclass(frozen=True)
class _Deferred:
    """The indexes and constraints of a schema's tables, dropped for a load and made
    again after it: building an index once over a million rows is several times
    cheaper than keeping it up to date row by row."""

    foreign_keys: list[tuple[str, str, str]]
    constraints: list[tuple[str, str, str]]
    indexes: list[tuple[str, str]]


def _defer(conn: psycopg.Connection[Any], schema: str) -> _Deferred:
    kept = list(_KEPT)
    constraints = conn.execute(
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype"
        " FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = %s AND c.contype IN ('p', 'u', 'f', 'x')"
        " AND NOT t.relname = ANY(%s) ORDER BY 1, 2",
        (schema, kept),
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)"
        " FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = %s AND NOT t.relname = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        " ORDER BY 1",
        (schema, kept),
    ).fetchall()
    deferred = _Deferred(
        [(t, n, d) for t, n, d, kind in constraints if kind == "f"],
        [(t, n, d) for t, n, d, kind in constraints if kind != "f"],
        [(name, definition) for name, definition in indexes],
    )
    for table, name, _definition in deferred.foreign_keys + deferred.constraints:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table), sql.Identifier(name)
            )
        )
    for name, _definition in deferred.indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))
    return deferred


def _restore(conn: psycopg.Connection[Any], deferred: _Deferred) -> None:
    for table, name, definition in deferred.constraints:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
            )
        )
    for _name, definition in deferred.indexes:
        conn.execute(sql.SQL(definition))
    for table, name, definition in deferred.foreign_keys:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
            )
        )


def _copy(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    columns: tuple[str, ...],
    lines: list[bytes],
) -> None:
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
    )
    with conn.cursor().copy(statement) as copy:
        for start in range(0, len(lines), 10_000):
            copy.write(b"\n".join(lines[start : start + 10_000]) + b"\n")


def load(database_url: str, schema: str, projection: str, done: BulkFold) -> None:
    """Write what ``done`` folded into ``schema``'s empty tables, in one transaction:
    indexes and constraints dropped, every row copied, its applied event ids and
    positions with them, indexes and constraints made again (a row that breaks one
    fails the load: psycopg.IntegrityError)."""
    with psycopg.connect(database_url) as conn:
        deferred = _defer(conn, schema)
        for name, table in sorted(done.tables.tables.items()):
            shapes: dict[tuple[str, ...], list[bytes]] = {}
            for columns, line in table.rows.values():
                shapes.setdefault(columns, []).append(line)
            for columns, lines in sorted(shapes.items()):
                _copy(conn, schema, name, columns, lines)
        ids = [copy_text(event_id, False).encode() for event_id in done.applied]
        _copy(conn, schema, "applied_events", ("event_id",), ids)
        positions = [
            "\t".join(copy_text(v, False) for v in (projection, topic, partition, offset)).encode()
            for (topic, partition), offset in sorted(done.positions.items())
        ]
        _copy(
            conn,
            schema,
            "projection_positions",
            ("projection", "topic", "partition", "next_offset"),
            positions,
        )
        _restore(conn, deferred)
