"""Writing what a bulk pass folded (``bulk.BulkFold``) into a rebuild's empty tables:
every table with ``COPY``, its indexes and constraints dropped before and made again
after, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .bulk import BulkFold, copy_text

_KEPT = ("alembic_version", "log_source")  # bookkeeping a migration writes: not reloaded


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
            for columns, line in table.lines():
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
