"""Command handler cold start: a handler assigned a partition that holds 100,000 prior
events, timed until it has decided a turn again (its snapshot, then the log's tail, then
one decision). Measured twice: with the core projection at the log's end, and with it
10,000 records behind (a tail to fold); beside both, the baseline a snapshot avoids: a
fold of the partition's whole history.

    python -m tests.bench.bench_cold_start [--events N] [--sessions S] [--tail T]

The history is bench_rebuild's: model-only turns of many sessions, on one partition.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.database import Database
from schemas import events
from schemas.envelope import envelope
from streams.catalog import Catalog
from streams.handler import Position
from streams.partitions import LogReader
from tests.bench.bench_rebuild import _records, bench_env, fold, produce
from tests.e2e.conftest import DATABASE_URL, drop_schemas
from tests.kafka import REPO, BrokerProcess
from workers.command_decisions import TurnLimits
from workers.command_handler import CommandHandler
from workers.command_state import CommandState

LIMITS = TurnLimits(max_message_bytes=10_000, max_steps=8, max_tool_calls=8)


async def cold_start(bootstrap: str, catalog: Catalog, schema: str, n: int) -> float:
    """Seconds from a new handler's assignment until it has decided a turn."""
    db = Database(DATABASE_URL, schema, pool_size=1)
    handler = CommandHandler(bootstrap, catalog, db, LIMITS)
    started = time.perf_counter()
    try:
        await handler.on_assigned([TopicPartition(catalog.commands, 0)])
        request = events.TurnRequested(session_id="session-0", turn_id=f"cold-{n}", message="hi")
        env = envelope(request, source="/bench", tenant_id="tenant-0")
        (outcome,) = await handler.handle_batch([(env, Position(catalog.commands, 0, 0))])
        elapsed = time.perf_counter() - started
    finally:
        await handler.close()
    if not isinstance(outcome.data, events.TurnAccepted) or not outcome.data.history:
        raise SystemExit(f"the turn was not accepted with its history: {outcome.data!r}")
    return elapsed


async def commit_commands(bootstrap: str, catalog: Catalog) -> None:
    """Commit the command handlers' group at the commands' end, as the previous owner of
    the partition would have: only what it had not committed is read again."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=catalog.group_id("commands"))
    await consumer.start()
    try:
        tp = TopicPartition(catalog.commands, 0)
        consumer.assign([tp])
        (end,) = (await consumer.end_offsets([tp])).values()
        await consumer.commit({tp: end})
    finally:
        await consumer.stop()


async def ends(bootstrap: str, topic: str) -> int:
    async with LogReader(bootstrap) as reader:
        return sum((await reader.ends(await reader.partitions(topic))).values())


async def whole_log(bootstrap: str, catalog: Catalog) -> float:
    """Seconds to fold the events partition from offset 0, as a handler with no
    snapshot would."""
    state = CommandState(LIMITS.history_messages, frozenset({0}))
    started = time.perf_counter()
    async with LogReader(bootstrap) as reader:
        tps = await reader.partitions(catalog.events)
        async for batch in reader.batches(dict.fromkeys(tps, 0), await reader.ends(tps)):
            state.fold_records(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # bench_rebuild's count spans both topics: this many put 100,000 on the events topic.
    parser.add_argument("--events", type=int, default=115_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--tail", type=int, default=10_000)
    args = parser.parse_args()
    tag = f"bench_cold_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as data:
        broker = BrokerProcess(Path(data) / "data").start()
        env = bench_env(broker.bootstrap, tag, AGENTLOG_TOPIC_PARTITIONS="1")
        cli = [sys.executable, "-m", "agentlog_cli"]
        catalog = Catalog(f"{tag}.")
        bootstrap = broker.bootstrap
        try:
            subprocess.run([*cli, "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
            produce(bootstrap, catalog, args.events, args.sessions, catalog.commands)
            produce(bootstrap, catalog, args.events, args.sessions, catalog.events)
            fold(cli, env, tag, asyncio.run(_records(bootstrap, catalog)))
            asyncio.run(commit_commands(bootstrap, catalog))
            history = asyncio.run(_records(bootstrap, catalog))
            events_records = asyncio.run(ends(bootstrap, catalog.events))
            at_end = [asyncio.run(cold_start(bootstrap, catalog, tag, n)) for n in range(3)]
            replay = [asyncio.run(whole_log(bootstrap, catalog)) for _ in range(3)]
            produce(bootstrap, catalog, args.tail, args.sessions, catalog.events)
            behind = [asyncio.run(cold_start(bootstrap, catalog, tag, n)) for n in range(3, 6)]
        finally:
            broker.stop()
            drop_schemas(tag)
    median = sorted(at_end)[1]
    print(
        f"command handler cold start: one partition, {events_records:,} records on the events"
        f" topic, {history - events_records:,} on the commands topic ({args.sessions:,} sessions)"
    )
    print(f"  projection at the log's end      {median:6.2f} s median of 3 (target <= 2 s)")
    print(f"  projection {args.tail:,} records behind {sorted(behind)[1]:6.2f} s median of 3")
    print(
        f"  a fold of the whole log instead  {sorted(replay)[1]:6.2f} s median of 3"
        f" ({sorted(replay)[1] / median:.1f}x the snapshot's start)"
    )


if __name__ == "__main__":
    main()
