"""Applying the fold to Postgres: row operations and the projection's Kafka position in one
transaction, so a crash at any instruction neither loses nor double-applies an event."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from psycopg import AsyncConnection, sql
from psycopg.errors import UniqueViolation
from psycopg.rows import DictRow

from schemas.envelope import Envelope
from streams.handler import Position

from .database import Database
from .ops import PROJECTION, Add, Context, Notify, Update, Upsert, project
from .rounds import Group, Rounds, shape
from .waiter import channel, position_key


def swap_lock(schema: str) -> int:
    """The advisory lock id a live projector (shared) and a rebuild (exclusive) take for
    the read models in ``schema``: one per schema, so deployments sharing a database
    never wait for each other's rebuilds."""
    return int.from_bytes(
        hashlib.sha256(f"agentlog/{schema}".encode()).digest()[:8], "big", signed=True
    )


def json_scalar(value: Any) -> str:
    """Times, days and decimals in JSON, as Postgres reads them into their columns."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not storable: {type(value).__name__}")


def rows_json(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON array, made ``storable`` only if they need it (seldom: checked
    once encoded, which is the cheap way round)."""
    try:
        encoded = orjson.dumps(rows, default=json_scalar)
        clean = b"\\u0000" not in encoded  # NUL, which Postgres's text and jsonb cannot hold
    except TypeError:  # a lone surrogate, which orjson does not encode (nor Postgres store)
        clean = False
    if not clean:
        encoded = orjson.dumps(storable(rows), default=json_scalar)
    return encoded.decode()


def storable(value: Any) -> Any:
    """A value as Postgres stores it. Text and jsonb hold neither NUL nor a lone UTF-16
    surrogate (valid JSON can escape either): each is stored as U+FFFD, the same way in
    live tables and in a rebuild (a user message or a tool's answer may carry one)."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _merge(counters: dict[tuple[Any, ...], Add], op: Add) -> None:
    """Sum a batch's additions to one row into one: counters commute, and a row updated
    once per batch, not once per event, keeps Postgres from walking a chain of row
    versions the transaction itself made (it was twice as slow on a hot aggregate)."""
    key = (op.table, op.key, op.sums, *[op.row[c] for c in op.key])
    found = counters.get(key)
    if found is None:  # a row of its own, which the sums below change in place
        counters[key] = Add(op.table, op.key, dict(op.row), op.sums)
        return
    row = found.row
    for c in op.sums:
        row[c] += op.row[c]


T = TypeVar("T")


async def _one_round_trip(
    conn: AsyncConnection[DictRow], statements: Callable[[], Awaitable[T]]
) -> T:
    """Run ``statements()`` (which fetch nothing) as one transaction, pipelined with its
    BEGIN and COMMIT: one round trip to Postgres. If a statement fails, Postgres skips
    the rest, the COMMIT too; if the code sending them fails, no COMMIT is sent. Either
    way the connection is closed, which rolls the transaction back, and the pool opens
    another: a statement the driver prepared in a pipeline Postgres aborted was never
    prepared on the server, and on this connection the driver would name it in every
    later batch ("prepared statement does not exist"). A failed batch is rare (an event
    applied before, a fold that raises); the next connection costs milliseconds."""
    try:
        async with conn.pipeline():
            await conn.execute(b"BEGIN")
            done = await statements()
            await conn.execute(b"COMMIT")
    except BaseException:
        await conn.close()
        raise
    return done


async def _primary_keys(conn: AsyncConnection[DictRow], schema: str) -> dict[str, tuple[str, ...]]:
    """Each table's primary key's columns, from the catalog."""
    query = b"""
    SELECT c.relname, array_agg(a.attname::text ORDER BY k.n) AS columns
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace s ON s.oid = c.relnamespace
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
    WHERE i.indisprimary AND s.nspname = %s
    GROUP BY c.relname
"""
    rows = await (await conn.execute(query, (schema,))).fetchall()
    return {str(r["relname"]): tuple(r["columns"]) for r in rows}


class ProjectionStore:
    def __init__(
        self, database_url: str, schema: str, projection: str = PROJECTION, *, live: bool = True
    ) -> None:
        self.db = Database(database_url, schema, pool_size=1)
        self.schema = schema
        self.projection = projection
        # The live store takes a shared advisory lock per transaction, before touching any
        # table, so a rebuild can swap schemas between two of its transactions.
        self.live = live
        self._lock = swap_lock(schema)
        self._channel = channel(schema)
        # Statements by the shape of the operation, composed once, as bytes: psycopg
        # would otherwise compose a ``sql.Composed`` again on every execution (a third
        # of a replay's time), while bytes hit its cache of parsed queries.
        self._queries: dict[tuple[Any, ...], bytes] = {}
        self._keys: dict[str, tuple[str, ...]] | None = None  # tables' primary keys
        self._notify_all = b"SELECT pg_notify(%s, k) FROM unnest(%s::text[]) AS k"
        self._record_applied = (
            sql.SQL("INSERT INTO {} (event_id) SELECT unnest(%s::text[])")
            .format(self._table("applied_events"))
            .as_bytes(None)
        )
        self._save_positions_query = (
            sql.SQL(
                "INSERT INTO {} (projection, topic, partition, next_offset)"
                " SELECT %s, * FROM unnest(%s::text[], %s::int[], %s::bigint[])"
                " ON CONFLICT (projection, topic, partition)"
                " DO UPDATE SET next_offset = greatest({}.next_offset, EXCLUDED.next_offset)"
            )
            .format(self._table("projection_positions"), sql.Identifier("projection_positions"))
            .as_bytes(None)
        )

    async def close(self) -> None:
        await self.db.close()

    def _table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    async def positions(self, topic: str) -> dict[int, int]:
        """Next offset to apply, per partition of ``topic``."""
        return {
            partition: offset
            for (in_topic, partition), offset in (await self.positions_all()).items()
            if in_topic == topic
        }

    async def positions_all(self) -> dict[tuple[str, int], int]:
        async with self.db.connection() as conn:
            rows = await (
                await conn.execute(
                    sql.SQL(
                        "SELECT topic, partition, next_offset FROM {} WHERE projection = %s"
                    ).format(self._table("projection_positions")),
                    (self.projection,),
                )
            ).fetchall()
        return {(str(r["topic"]), int(r["partition"])): int(r["next_offset"]) for r in rows}

    async def apply(self, items: list[tuple[Envelope[Any], Position]]) -> int:
        """Apply the events whose ids were never applied (first occurrences only), and
        move the stored positions past every item; return how many events were applied.
        One transaction, pipelined. Each saved position is notified, which is what
        read-your-writes waits on (``waiter.Waiter``).

        An event applied before a crash or rebalance is skipped, and so is a
        re-published one (same id, later offset): live tables and a rebuild agree however
        often a crash made a reader or a writer repeat itself. That is rare, so a batch is
        first applied as if none of its events had been: one round trip to Postgres, the
        commit included (three when the ids were checked first). An id applied before
        aborts it (``applied_events``' key), and it is applied again, its ids checked."""
        if not items:
            return 0
        ends: dict[tuple[str, int], int] = {}
        first: dict[str, tuple[Envelope[Any], Position]] = {}
        for env, pos in items:
            key = (pos.topic, pos.partition)
            ends[key] = max(ends.get(key, 0), pos.offset + 1)
            first.setdefault(env.id, (env, pos))
        try:
            return await self._apply(list(first.values()), ends, checked=False)
        except UniqueViolation as exc:
            if exc.diag.table_name != "applied_events":
                raise
        return await self._apply(list(first.values()), ends, checked=True)

    async def _apply(
        self,
        items: list[tuple[Envelope[Any], Position]],
        ends: dict[tuple[str, int], int],
        *,
        checked: bool,
    ) -> int:
        async with self.db.connection() as conn:
            if self._keys is None:
                self._keys = await _primary_keys(conn, self.schema)
            if checked:  # the ids are fetched midway
                async with conn.transaction(), conn.pipeline():
                    return await self._write(conn, items, ends, checked=True)
            return await _one_round_trip(
                conn, lambda: self._write(conn, items, ends, checked=False)
            )

    async def _write(
        self,
        conn: AsyncConnection[DictRow],
        items: list[tuple[Envelope[Any], Position]],
        ends: dict[tuple[str, int], int],
        *,
        checked: bool,
    ) -> int:
        if self.live:
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self._lock,))
        if checked:
            items = await self._never_applied(conn, items)
        else:
            await conn.execute(self._record_applied, ([env.id for env, _pos in items],))
        counters: dict[tuple[Any, ...], Add] = {}
        rounds = Rounds(self._keys or {})
        notices: list[str] = []
        for env, pos in items:
            ctx = Context(
                env.id, env.tenant_id, env.causation_id, env.time, pos.partition, pos.offset
            )
            for op in project(env.data, ctx):
                if isinstance(op, Add):
                    _merge(counters, op)
                elif isinstance(op, Notify):
                    notices.append(op.key)
                elif not isinstance(op, Update) or op.values:
                    rounds.add(op)
        for op in counters.values():  # one per row, on tables only counters write
            rounds.add(op)
        for group in rounds.groups():
            await self._write_group(conn, group)
        await self._save_positions(conn, ends, notices)
        return len(items)

    async def advance(self, ends: dict[tuple[str, int], int]) -> None:
        """Move the stored positions to ``ends`` (topic, partition → next offset): past
        records the consumer passed without handing them over (a repeated event, one
        dead-lettered), so that a reader waiting for the partition's end is not kept
        waiting by a record that changes nothing."""
        async with self.db.connection() as conn:
            await _one_round_trip(conn, lambda: self._advance(conn, ends))

    async def _advance(
        self, conn: AsyncConnection[DictRow], ends: dict[tuple[str, int], int]
    ) -> None:
        if self.live:
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self._lock,))
        await self._save_positions(conn, ends)

    async def _save_positions(
        self,
        conn: AsyncConnection[DictRow],
        ends: dict[tuple[str, int], int],
        notices: list[str] | None = None,
    ) -> None:
        """Save each next offset (never moving one back); notify ``notices``, then each
        position saved (a rebuild beside the live tables has no readers to wake). One
        statement each, whatever the number of partitions."""
        saved = list(ends.items())
        await conn.execute(
            self._save_positions_query,
            (
                self.projection,
                [topic for (topic, _p), _o in saved],
                [partition for (_t, partition), _o in saved],
                [offset for _tp, offset in saved],
            ),
        )
        if self.live:
            keys = [f"{position_key(t, p, self.projection)}@{o}" for (t, p), o in saved]
            await conn.execute(self._notify_all, (self._channel, [*(notices or ()), *keys]))

    async def _never_applied(
        self, conn: AsyncConnection[DictRow], items: list[tuple[Envelope[Any], Position]]
    ) -> list[tuple[Envelope[Any], Position]]:
        """The items whose event id was never applied, recorded as applied now."""
        rows = await (
            await conn.execute(
                self._record_applied + b" ON CONFLICT DO NOTHING RETURNING event_id",
                ([env.id for env, _pos in items],),
            )
        ).fetchall()
        new = {str(r["event_id"]) for r in rows}
        return [item for item in items if item[0].id in new]

    async def _write_group(self, conn: AsyncConnection[DictRow], group: Group) -> None:
        """Write a group's rows with one statement, over the rows as one JSON array,
        which Postgres turns into rows of the table's own types. A statement per row
        cost most of a batch's time in per-statement work, and arrays per column most
        of the rest in psycopg's dumping of them."""
        first = group.first
        key = shape(first)
        query = self._queries.get(key)
        if query is None:
            composed = (
                self._update_query(first)
                if isinstance(first, Update)
                else self._insert_query(first, tuple(first.row))
            )
            query = self._queries[key] = composed.as_bytes(None)
        rows = [{**op.values, **op.key} if isinstance(op, Update) else op.row for op in group.ops]
        await conn.execute(query, (rows_json(rows),))

    def _update_query(self, op: Update) -> sql.Composed:
        if set(op.values) & set(op.key):
            raise ValueError(f"an update of {op.table} sets a column of its key")
        return sql.SQL(
            "UPDATE {0} AS t SET {1} FROM jsonb_populate_recordset(NULL::{0}, %s) AS v WHERE {2}"
        ).format(
            self._table(op.table),
            sql.SQL(", ").join(sql.SQL("{0} = v.{0}").format(sql.Identifier(c)) for c in op.values),
            sql.SQL(" AND ").join(
                sql.SQL("t.{0} = v.{0}").format(sql.Identifier(c)) for c in op.key
            ),
        )

    def _insert_query(self, op: Upsert | Add, columns: tuple[str, ...]) -> sql.Composed:
        conflict: sql.Composable
        if isinstance(op, Add):
            table = sql.Identifier(op.table)
            conflict = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{0} = {1}.{0} + EXCLUDED.{0}").format(sql.Identifier(c), table)
                for c in op.sums
            )
        elif op.overwrite:
            conflict = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in op.overwrite
            )
        else:
            conflict = sql.SQL("DO NOTHING")
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        return (
            sql.SQL(
                "INSERT INTO {0} ({1}) SELECT {1} FROM jsonb_populate_recordset(NULL::{0}, %s)"
                " ON CONFLICT ({2}) "
            ).format(self._table(op.table), names, sql.SQL(", ").join(map(sql.Identifier, op.key)))
            + conflict
        )
