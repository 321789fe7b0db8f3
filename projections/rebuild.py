"""Rebuilding a projection from offset 0 beside the live one, verifying it, swapping it in.

1. Migrate a fresh schema ``<live>_rebuild`` and fold every event from offset 0 into it,
   printing progress.
2. Take the swap lock (the live projector takes it shared per transaction), so the live
   tables stop moving; catch the rebuild up to the live positions.
3. Compare a hash of every table in both schemas; on a match rename the live schema to
   ``<live>_old_<time>`` and the rebuild to ``<live>``, in the same transaction.

The system keeps serving throughout; projector writes wait only for step 2 and 3.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

from schemas.envelope import EnvelopeError, from_kafka
from streams.catalog import COMMANDS, EVENTS, cluster_id, partitions_of
from streams.consumer import Position
from streams.settings import Settings

from .core import PROJECTION
from .migrate import LogSource, bind_to_log, upgrade
from .store import SWAP_LOCK, ProjectionStore

# Folded one topic after the other, commands first: a command is always applied before
# the outcome it caused (the command handler fences on it), so this is the live order.
TOPICS = (COMMANDS.name, EVENTS.name)
_SKIPPED_TABLES = {"alembic_version", "log_source"}  # bookkeeping, not folded


class RebuildMismatchError(RuntimeError):
    pass


@dataclass(frozen=True)
class RebuildReport:
    events: int
    seconds: float
    tables: dict[str, str]
    swapped_to: str | None


async def table_hashes(conn: AsyncConnection[Any], schema: str) -> dict[str, str]:
    """An order-independent digest of every row of every table in ``schema``."""
    cursor = conn.cursor(row_factory=tuple_row)  # whatever rows the connection makes
    rows = await (
        await cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " AND table_type = 'BASE TABLE' ORDER BY table_name",
            (schema,),
        )
    ).fetchall()
    hashes = {}
    for (table,) in rows:
        if table in _SKIPPED_TABLES:
            continue
        query = sql.SQL(
            "SELECT coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '')"
            " FROM {}.{} t"
        ).format(sql.Identifier(schema), sql.Identifier(table))
        (digest,) = await (await cursor.execute(query)).fetchone()  # type: ignore[misc]
        hashes[table] = str(digest)
    return hashes


async def _row_diff(conn: AsyncConnection[Any], live: str, rebuilt: str, table: str) -> str:
    """A few rows that only one side has, so an operator sees how a table differs."""
    lines = [f"{table}:"]
    for name, a, b in (("only live", live, rebuilt), ("only rebuilt", rebuilt, live)):
        query = sql.SQL("SELECT t::text FROM (TABLE {}.{} EXCEPT TABLE {}.{}) t LIMIT 3").format(
            sql.Identifier(a), sql.Identifier(table), sql.Identifier(b), sql.Identifier(table)
        )
        for (row,) in await (await conn.execute(query)).fetchall():
            lines.append(f"  {name}: {row}")
    return "\n".join(lines)


async def _fold_until(
    store: ProjectionStore,
    consumer: AIOKafkaConsumer,
    targets: dict[TopicPartition, int],
    progress: Callable[[int], None],
) -> int:
    """Apply events until every partition's next offset reaches its target, topic by topic
    in the order of ``TOPICS``."""
    applied = 0
    for topic in TOPICS:
        in_topic = {tp: end for tp, end in targets.items() if tp.topic == topic}
        applied += await _fold_topic_until(store, consumer, in_topic, progress, applied)
    return applied


async def _fold_topic_until(
    store: ProjectionStore,
    consumer: AIOKafkaConsumer,
    targets: dict[TopicPartition, int],
    progress: Callable[[int], None],
    applied_before: int,
) -> int:
    applied = 0
    positions = {tp: (await store.positions(tp.topic)).get(tp.partition, 0) for tp in targets}
    pending = {tp for tp, end in targets.items() if positions[tp] < end}
    for tp in pending:
        consumer.seek(tp, positions[tp])
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500, max_records=2000)
        items = []
        for tp, records in batches.items():
            for record in records:
                if record.offset >= targets[tp]:
                    continue
                positions[tp] = record.offset + 1
                try:
                    env = from_kafka(record.key, record.value, list(record.headers))
                except EnvelopeError:
                    continue  # the live consumers dead-lettered it too
                items.append((env, Position(record.topic, record.partition, record.offset)))
        if items:
            applied += await store.apply(items)
            progress(applied_before + applied)
        pending = {tp for tp in pending if positions[tp] < targets[tp]}
    return applied


async def rebuild(
    settings: Settings, *, swap: bool = True, out: Callable[[str], None] = print
) -> RebuildReport:
    live = settings.database_schema
    target = f"{live}_rebuild"
    started = time.monotonic()
    admin = await AsyncConnection.connect(settings.database_url, autocommit=True)
    await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target)))
    await asyncio.to_thread(upgrade, settings.database_url, target)
    source = LogSource(await cluster_id(settings.kafka_bootstrap_servers), settings.topic_prefix)
    await bind_to_log(settings.database_url, target, source)
    store = ProjectionStore(settings.database_url, target, live=False)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    last_report = [0.0]

    def progress(applied: int) -> None:
        now = time.monotonic()
        if now - last_report[0] >= 1.0:
            last_report[0] = now
            rate = applied / max(now - started, 1e-9)
            out(f"rebuild: {applied} events applied ({rate:,.0f}/s)")

    try:
        tps = [
            TopicPartition(t, p)
            for t in TOPICS
            for p in await partitions_of(settings.kafka_bootstrap_servers, t)
        ]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out(f"rebuild: folding {sum(ends.values())} records from offset 0 into {target}")
        applied = await _fold_until(store, consumer, ends, progress)
        lock = await AsyncConnection.connect(settings.database_url)
        try:
            async with lock.transaction():
                await lock.execute("SELECT pg_advisory_xact_lock(%s)", (SWAP_LOCK,))
                live_positions = await ProjectionStore(
                    settings.database_url, live, live=False
                ).positions_all()
                targets = {tp: live_positions.get((tp.topic, tp.partition), 0) for tp in tps}
                applied += await _fold_until(store, consumer, targets, progress)
                live_hashes = await table_hashes(lock, live)
                rebuilt_hashes = await table_hashes(lock, target)
                if live_hashes != rebuilt_hashes:
                    differing = sorted(
                        t for t in live_hashes if live_hashes[t] != rebuilt_hashes.get(t)
                    )
                    details = [await _row_diff(lock, live, target, t) for t in differing]
                    raise RebuildMismatchError(
                        f"tables differ: {', '.join(differing)}\n" + "\n".join(details)
                    )
                out(f"rebuild: {len(live_hashes)} tables verified identical at the live position")
                swapped_to = None
                if swap:
                    swapped_to = f"{live}_old_{int(time.time())}"
                    await lock.execute(
                        sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                            sql.Identifier(live), sql.Identifier(swapped_to)
                        )
                    )
                    await lock.execute(
                        sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                            sql.Identifier(target), sql.Identifier(live)
                        )
                    )
                    out(f"rebuild: swapped in; the previous tables are in {swapped_to}")
        finally:
            await lock.close()
    finally:
        await consumer.stop()
        await store.close()
        await admin.close()
    return RebuildReport(applied, time.monotonic() - started, rebuilt_hashes, swapped_to)


__all__ = ["PROJECTION", "RebuildMismatchError", "RebuildReport", "rebuild", "table_hashes"]
