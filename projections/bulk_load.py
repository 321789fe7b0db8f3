"""Writing what a bulk pass folded (``bulk.BulkFold``) into a rebuild's empty tables:
every table with ``COPY``, its indexes and constraints dropped before and made again
after, in one transaction."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from .bulk import BulkFold, copy_text

INDEX_MEMORY = "256MB"  # each loader's memory for sorting an index it builds
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
    indexes: list[tuple[str, str]]  # the table's, and the statement that makes it
    index_names: list[str]


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
        "SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text,"
        " pg_get_indexdef(i.indexrelid)"
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
        [(table, definition) for table, _name, definition in indexes],
        [name for _table, name, _definition in indexes],
    )
    for table, name, _definition in deferred.foreign_keys + deferred.constraints:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table), sql.Identifier(name)
            )
        )
    for name in deferred.index_names:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))
    return deferred


def _add_constraint(conn: psycopg.Connection[Any], table: str, name: str, definition: str) -> None:
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
        )
    )


def _restore(table: str, deferred: _Deferred, conn: psycopg.Connection[Any]) -> None:
    """``table``'s constraints (but its foreign keys) and indexes, made again."""
    for owner, name, definition in deferred.constraints:
        if owner == table:
            _add_constraint(conn, owner, name, definition)
    for owner, definition in deferred.indexes:
        if owner == table:
            conn.execute(sql.SQL(definition))


Job = Callable[[psycopg.Connection[Any]], None]


def _in_parallel(database_url: str, jobs: list[tuple[int, Job]]) -> None:
    """Run ``jobs`` (each with its size) on as many connections as the machine has
    cores, the largest first, each connection taking the next job as it is free: a
    server process per connection, so copies and index builds use every core."""
    pending = [job for _size, job in sorted(jobs, key=lambda j: -j[0])]
    lock = threading.Lock()

    def work() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"SET maintenance_work_mem = '{INDEX_MEMORY}'")
            while True:
                with lock:
                    if not pending:
                        return
                    job = pending.pop(0)
                job(conn)

    workers = min(os.cpu_count() or 1, len(pending))
    if not workers:
        return
    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(work) for _ in range(workers)]:
            done.result()


def _copy(
    schema: str,
    table: str,
    columns: tuple[str, ...],
    lines: list[bytes],
    conn: psycopg.Connection[Any],
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
    """Write what ``done`` folded into ``schema``'s empty tables: indexes and
    constraints dropped, every row copied (with the applied event ids and positions),
    indexes and constraints made again, tables side by side on the cores. A row that
    breaks a constraint fails the load (psycopg.IntegrityError). The schema is the
    rebuild's own until it is swapped in: a load cut short is dropped with it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        deferred = _defer(conn, schema)
    copies: list[tuple[int, Job]] = []
    rows: dict[str, int] = {}  # per table: the index builds are scheduled by size
    for name, table in sorted(done.tables.tables.items()):
        shapes: dict[tuple[str, ...], list[bytes]] = {}
        for columns, line in table.lines():
            shapes.setdefault(columns, []).append(line)
        for columns, lines in sorted(shapes.items()):
            copies.append((len(lines), partial(_copy, schema, name, columns, lines)))
            rows[name] = rows.get(name, 0) + len(lines)
    ids = [copy_text(event_id).encode() for event_id in done.applied]
    rows["applied_events"] = len(ids)
    copies.append((len(ids), partial(_copy, schema, "applied_events", ("event_id",), ids)))
    positions = [
        "\t".join(copy_text(v) for v in (projection, topic, partition, offset)).encode()
        for (topic, partition), offset in sorted(done.positions.items())
    ]
    columns = ("projection", "topic", "partition", "next_offset")
    positioned = partial(_copy, schema, "projection_positions", columns, positions)
    copies.append((len(positions), positioned))
    _in_parallel(database_url, copies)
    owners = {owner for owner, _name, _definition in deferred.constraints}
    owners |= {owner for owner, _definition in deferred.indexes}
    restores: list[tuple[int, Job]] = [
        (rows.get(owner.rpartition(".")[2].strip('"'), 0), partial(_restore, owner, deferred))
        for owner in sorted(owners)
    ]
    _in_parallel(database_url, restores)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for owner, name, definition in deferred.foreign_keys:
            _add_constraint(conn, owner, name, definition)
