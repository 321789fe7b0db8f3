"""Applying the fold to Postgres: row operations and the projection's Kafka position in one
transaction, so a crash at any instruction neither loses nor double-applies an event."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from schemas.envelope import Envelope
from streams.consumer import Position

from .core import PROJECTION, Context, Op, Upsert, project

SWAP_LOCK = 0x6167656E746C6F67  # advisory lock id shared by projectors and rebuilds


def _adapt(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


class ProjectionStore:
    def __init__(
        self, database_url: str, schema: str, projection: str = PROJECTION, *, live: bool = True
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.projection = projection
        # The live store takes a shared advisory lock per transaction, before touching any
        # table, so a rebuild can swap schemas between two of its transactions.
        self.live = live
        self._conn: AsyncConnection[Any] | None = None

    async def connect(self) -> AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(self.database_url)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def _table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    async def positions(self, topic: str) -> dict[int, int]:
        """Next offset to apply, per partition of ``topic``."""
        conn = await self.connect()
        async with conn.transaction():
            rows = await (
                await conn.execute(
                    sql.SQL(
                        "SELECT partition, next_offset FROM {} WHERE projection = %s AND topic = %s"
                    ).format(self._table("projection_positions")),
                    (self.projection, topic),
                )
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    async def positions_all(self) -> dict[tuple[str, int], int]:
        conn = await self.connect()
        async with conn.transaction():
            rows = await (
                await conn.execute(
                    sql.SQL(
                        "SELECT topic, partition, next_offset FROM {} WHERE projection = %s"
                    ).format(self._table("projection_positions")),
                    (self.projection,),
                )
            ).fetchall()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    async def apply(self, items: list[tuple[Envelope[Any], Position]]) -> int:
        """Apply events not yet applied (by stored position); return how many were."""
        conn = await self.connect()
        applied = 0
        async with conn.transaction():
            if self.live:
                await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SWAP_LOCK,))
            stored: dict[tuple[str, int], int] = {}
            for topic, partition in {(p.topic, p.partition) for _e, p in items}:
                row = await (
                    await conn.execute(
                        sql.SQL(
                            "SELECT next_offset FROM {} WHERE projection = %s AND topic = %s"
                            " AND partition = %s FOR UPDATE"
                        ).format(self._table("projection_positions")),
                        (self.projection, topic, partition),
                    )
                ).fetchone()
                stored[(topic, partition)] = int(row[0]) if row else 0
            next_offsets = dict(stored)
            fresh: list[tuple[Envelope[Any], Position]] = []
            for env, pos in items:
                key = (pos.topic, pos.partition)
                if pos.offset < next_offsets[key]:
                    continue  # applied before a crash or rebalance; the position says so
                next_offsets[key] = pos.offset + 1
                fresh.append((env, pos))
            for env, pos in await self._first_occurrences(conn, fresh):
                ctx = Context(
                    env.id, env.tenant_id, env.causation_id, env.time, pos.partition, pos.offset
                )
                for op in project(env.data, ctx):
                    await self._execute(conn, op)
                applied += 1
            for (topic, partition), offset in next_offsets.items():
                if offset != stored[(topic, partition)]:
                    await conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (projection, topic, partition, next_offset)"
                            " VALUES (%s, %s, %s, %s) ON CONFLICT (projection, topic, partition)"
                            " DO UPDATE SET next_offset = EXCLUDED.next_offset"
                        ).format(self._table("projection_positions")),
                        (self.projection, topic, partition, offset),
                    )
        return applied

    async def _first_occurrences(
        self, conn: AsyncConnection[Any], items: list[tuple[Envelope[Any], Position]]
    ) -> list[tuple[Envelope[Any], Position]]:
        """The items whose event id was never applied: a re-published event (same id,
        later offset) is skipped, so live tables and a rebuild agree however often a
        crash made a writer repeat itself."""
        first: dict[str, tuple[Envelope[Any], Position]] = {}
        for env, pos in items:
            first.setdefault(env.id, (env, pos))
        if not first:
            return []
        rows = await (
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (event_id) SELECT unnest(%s::text[])"
                    " ON CONFLICT DO NOTHING RETURNING event_id"
                ).format(self._table("applied_events")),
                (list(first),),
            )
        ).fetchall()
        new = {str(r[0]) for r in rows}
        return [item for event_id, item in first.items() if event_id in new]

    async def _execute(self, conn: AsyncConnection[Any], op: Op) -> None:
        if isinstance(op, Upsert):
            columns = list(op.row)
            conflict = (
                sql.SQL("DO UPDATE SET ")
                + sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in op.overwrite
                )
                if op.overwrite
                else sql.SQL("DO NOTHING")
            )
            query = (
                sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) ").format(
                    self._table(op.table),
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                    sql.SQL(", ").join(map(sql.Identifier, op.key)),
                )
                + conflict
            )
            await conn.execute(query, [_adapt(op.row[c]) for c in columns])
            return
        assignments = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in op.values]
        params = [_adapt(v) for v in op.values.values()]
        if not assignments:
            return
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in op.key)
        query = sql.SQL("UPDATE {} SET {} WHERE {}").format(
            self._table(op.table), sql.SQL(", ").join(assignments), where
        )
        await conn.execute(query, [*params, *op.key.values()])


async def wait_for_position(
    conn: AsyncConnection[Any],
    schema: str,
    topic: str,
    partition: int,
    offset: int,
    *,
    timeout: float = 10.0,
    projection: str = PROJECTION,
) -> None:
    """The offset fence: return once the projection has applied ``offset`` (and all
    before it) of the partition. Raises TimeoutError otherwise."""
    query = sql.SQL(
        "SELECT next_offset FROM {}.projection_positions WHERE projection = %s AND topic = %s"
        " AND partition = %s"
    ).format(sql.Identifier(schema))
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        async with conn.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(query, (projection, topic, partition))
            row = await cursor.fetchone()
        await conn.commit()
        if row is not None and int(row[0]) > offset:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"projection has not reached {topic}/{partition}@{offset}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
