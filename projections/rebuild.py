"""Rebuilding a projection from offset 0 beside the live one, verifying it, swapping it in.

1. Migrate a fresh schema ``<live>_rebuild`` and fold every event from offset 0 into it:
   in bulk (``bulk``, ``bulk_load``, ``bulk_workers``), or record by record
   (``log_fold``) where the bulk pass cannot give exactly what the live projector gives.
2. Take the swap lock (the live projector takes it shared per transaction), so the live
   tables stop moving; catch the rebuild up to the live positions.
3. Compare a hash of every table in both schemas; on a match rename the live schema to
   ``<live>_old_<time>`` and the rebuild to ``<live>``, in the same transaction.

The system keeps serving throughout; projector writes wait only for step 2 and 3. What
the rebuild finds it reports through callbacks (``out`` for lines, ``on_progress`` for
records read), which the CLI and the gateway's replays render each their own way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import TopicPartition
from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

from streams.catalog import Catalog, cluster_id
from streams.handler import failure_reason
from streams.partitions import LogReader
from streams.scan import Range
from streams.settings import Settings

from . import bulk, bulk_load, bulk_workers
from .bulk import BulkFold, NotFoldableInMemory
from .bulk_workers import PartsOverlapError
from .database import OUTAGES
from .log_fold import LogFold, SetAside
from .migrate import BILLING_SCRIPTS, CORE_SCRIPTS, LogSource, bind_to_log, upgrade
from .ops import BILLING, PROJECTION
from .store import ProjectionStore, swap_lock

_SKIPPED_TABLES = {"alembic_version", "log_source"}  # bookkeeping, not folded


# Records read so far, of how many: heard after every batch a rebuild reads.
OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Pace:
    """How fast a pass reads, as every display of one shows it (the CLI's bar and a
    replay's report over HTTP): records per second so far, and the seconds left at that
    rate (None until there is a rate, or without a total)."""

    per_second: float
    seconds_left: float | None

    @classmethod
    def of(cls, read: int, total: int | None, seconds: float) -> Pace:
        per_second = read / seconds if seconds > 0 else 0.0
        if not per_second or total is None:
            return cls(per_second, None)
        return cls(per_second, max(total - read, 0) / per_second)


class RebuildMismatchError(RuntimeError):
    pass


@dataclass(frozen=True)
class ReadModels:
    """A set of read models rebuilt together: one projection, its schema, its topics
    (in the order the rebuild folds them) and the migrations that make its tables."""

    projection: str
    scripts: Path
    schema: Callable[[Settings], str]
    topics: Callable[[Catalog], tuple[str, ...]]


CORE = ReadModels(
    PROJECTION, CORE_SCRIPTS, lambda s: s.database_schema, lambda c: (c.commands, c.events)
)
BILLING_MODELS = ReadModels(
    BILLING, BILLING_SCRIPTS, lambda s: s.billing_schema, lambda c: (c.usage, c.billing)
)


@dataclass(frozen=True)
class RebuildReport:
    events: int
    seconds: float
    tables: dict[str, str]
    swapped_to: str | None
    set_aside: list[SetAside]


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


async def _fresh(
    settings: Settings, admin: AsyncConnection[Any], target: str, models: ReadModels
) -> None:
    """``target`` made anew: the read models' empty tables, bound to the log."""
    await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target)))
    await asyncio.to_thread(upgrade, settings.database_url, target, models.scripts)
    source = LogSource(await cluster_id(settings.kafka_bootstrap_servers), settings.topic_prefix)
    await bind_to_log(settings.database_url, target, source, scripts=models.scripts)


async def _bulk(
    settings: Settings,
    target: str,
    models: ReadModels,
    fold: LogFold,
    ends: dict[TopicPartition, int],
    progress: Callable[[int], None],
    out: Callable[[str], None],
    restart: Callable[[str], None],
) -> int:
    """The first pass in bulk (``bulk``): the ranges folded in memory and copied into
    ``target``, in a thread of its own; the records it set aside dead-lettered after.
    NotFoldableInMemory when the operations or the rows need the record-by-record pass."""
    loop = asyncio.get_running_loop()
    ranges = [Range(tp.topic, tp.partition, 0, end) for tp, end in ends.items()]

    def heard(records: int) -> None:
        loop.call_soon_threadsafe(progress, records)

    took: dict[str, float] = {}
    stop = threading.Event()

    def fold_and_load() -> BulkFold:
        started = time.monotonic()
        with psycopg.connect(settings.database_url) as conn:
            columns = bulk_load.json_columns(conn, target)
        try:
            done = bulk_workers.fold(
                settings.kafka_bootstrap_servers, ranges, columns, heard, stop=stop
            )
        except PartsOverlapError as exc:
            loop.call_soon_threadsafe(restart, f"folding the partitions in one process: {exc}")
            done = bulk.fold(settings.kafka_bootstrap_servers, ranges, columns, heard, stop)
        folded = time.monotonic()
        took["fold"] = folded - started
        try:
            bulk_load.load(settings.database_url, target, models.projection, done)
        except OUTAGES:
            raise
        except psycopg.Error as exc:
            raise NotFoldableInMemory(f"the load was refused: {failure_reason(exc)}") from exc
        took["load"] = time.monotonic() - folded
        return done

    try:
        done = await asyncio.to_thread(fold_and_load)
    except asyncio.CancelledError:
        # The thread cannot be cancelled, only asked: it stops at its next batch, its
        # processes with it, so that Ctrl-C or a shutdown does not wait out the fold.
        stop.set()
        raise
    out(
        f"rebuild: {len(done.applied)} events folded in memory in {took['fold']:.1f} s,"
        f" copied into {target} in {took['load']:.1f} s"
    )
    for record, event_id, reason in done.set_aside:
        await fold.put_aside(record, event_id, reason, advance=False)
    return len(done.applied)


async def rebuild(
    settings: Settings,
    *,
    swap: bool = True,
    out: Callable[[str], None],
    models: ReadModels = CORE,
    check: Callable[[str], Awaitable[None]] | None = None,
    on_progress: OnProgress | None = None,
    changed: frozenset[str] = frozenset(),
) -> RebuildReport:
    """Rebuild ``models``, saying what it does and finds to ``out`` line by line.
    ``check(schema)``, if given, also vets the rebuilt tables before the swap (raising
    RebuildMismatchError to refuse it); ``on_progress(read, total)`` hears of every batch
    of records read. ``changed`` names the tables a changed fold writes otherwise: they
    may differ from the live ones (the rebuild's are the new fold's), every other table
    must not."""
    live = models.schema(settings)
    target = f"{live}_rebuild"
    started = time.monotonic()
    admin = await AsyncConnection.connect(settings.database_url, autocommit=True)
    await _fresh(settings, admin, target, models)
    store = ProjectionStore(settings.database_url, target, models.projection, live=False)
    catalog = Catalog.from_settings(settings)
    reader = await LogReader(settings.kafka_bootstrap_servers).start()
    fold = LogFold(store, reader, settings.kafka_bootstrap_servers, catalog)
    read = [0, 0]  # records read, of how many

    def progress(records: int) -> None:
        read[0] += records
        if on_progress is not None:
            on_progress(*read)

    def restart(reason: str) -> None:
        """The pass starts again from offset 0, for ``reason``."""
        out(f"rebuild: {reason}")
        read[0] = 0

    try:
        tps = [
            tp
            for topic in models.topics(catalog)
            for tp in sorted(await reader.partitions(topic), key=lambda tp: tp.partition)
        ]
        ends = await reader.ends(tps)
        read[1] = sum(ends.values())
        out(f"rebuild: folding {read[1]} records from offset 0 into {target}")
        try:
            applied = await _bulk(settings, target, models, fold, ends, progress, out, restart)
        except NotFoldableInMemory as exc:
            restart(f"folding record by record, not in bulk: {exc}")
            await _fresh(settings, admin, target, models)
            applied = await fold.until(ends, progress)
        lock = await AsyncConnection.connect(settings.database_url)
        try:
            async with lock.transaction():
                await lock.execute("SELECT pg_advisory_xact_lock(%s)", (swap_lock(live),))
                live_positions = await ProjectionStore(
                    settings.database_url, live, models.projection, live=False
                ).positions_all()
                targets = {tp: live_positions.get((tp.topic, tp.partition), 0) for tp in tps}
                applied += await fold.until(targets, progress)
                verifying = time.monotonic()
                # Side by side, a server process each: the live tables under the lock,
                # the rebuilt ones (which nothing else writes) on a connection of their own.
                async with await AsyncConnection.connect(settings.database_url) as beside:
                    live_hashes, rebuilt_hashes = await asyncio.gather(
                        table_hashes(lock, live), table_hashes(beside, target)
                    )
                differing = sorted(
                    t
                    for t in live_hashes
                    if live_hashes.get(t) != rebuilt_hashes.get(t) and t not in changed
                )
                if differing:
                    details = [await _row_diff(lock, live, target, t) for t in differing]
                    raise RebuildMismatchError(
                        f"tables differ: {', '.join(differing)}\n" + "\n".join(details)
                    )
                kept = len(live_hashes.keys() - changed)
                took = time.monotonic() - verifying
                out(
                    f"rebuild: {kept} tables verified identical at the live position"
                    f" in {took:.1f} s"
                )
                if fold.set_aside:
                    out(
                        f"rebuild: {len(fold.set_aside)} records set aside, as the live"
                        " projector sets them aside (each to the dead-letter topic):"
                    )
                    for aside in fold.set_aside:
                        out(f"  {aside}")
                if changed:
                    out(f"rebuild: tables taken from the rebuild as changed: {sorted(changed)}")
                if check is not None:
                    await check(target)
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
        await fold.close()
        await reader.stop()
        await store.close()
        await admin.close()
    return RebuildReport(
        applied, time.monotonic() - started, rebuilt_hashes, swapped_to, fold.set_aside
    )
