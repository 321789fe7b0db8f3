"""Billing replay: 1,000,000 usage events of 1,000 tenants through the broker, folded
from offset 0 into the billing read models and drafted into an invoice per tenant,
against a raw ``COPY`` of the same ledger rows into Postgres in the same run (the
ceiling).

    python -m tests.bench.bench_billing [--events N] [--tenants T] [--profile]

Records are produced with confluent-kafka from one CloudEvent template per tenant (the
same bytes ``to_kafka`` writes, ids and times filled in), so producing is not what is
measured. The replay is the one ``agentlog replay billing`` runs, twice: the first has
no live tables to match and is swapped in, the second (timed against the ``COPY``) is
verified against them; after each, every tenant's draft is priced from the replayed
tables, and the two runs' tables and drafts must hash alike.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import io
import pstats
import random
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer

from projections import invoices
from projections.database import Database
from projections.rebuild import BILLING_MODELS, rebuild, table_hashes
from projections.verify import replay_billing
from schemas import billing
from schemas.billing import PLATFORM, ModelRates, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope, to_kafka
from schemas.usage import UsageRecorded
from streams.catalog import Catalog, ensure_topics
from streams.publisher import Publisher
from streams.settings import Settings
from tests.bench.memory import PeakRss
from tests.e2e.conftest import drop_schemas
from tests.kafka import BrokerProcess
from tests.topics import produce_patiently
from workers.runner import prepare

DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
PERIOD = "2026-11"
START = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
SOURCE = "/bench/billing"


def produce_usage(bootstrap: str, topic: str, tenants: list[str], count: int) -> float:
    """Produce ``count`` usage events round-robin over ``tenants``; the seconds it took."""
    rng = random.Random(1)
    templates = {}
    for tenant in tenants:
        fact = UsageRecorded(
            tenant_id=tenant,
            kind="model",
            resource="m",
            quantities={"input_tokens": 100, "output_tokens": 10},
            used_at=START,
        )
        key, value, headers = to_kafka(envelope(fact, source=SOURCE, tenant_id=tenant))
        templates[tenant] = (key, value, headers)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20, "acks": "all"}
    )
    started = time.perf_counter()
    for n in range(count):
        tenant = tenants[n % len(tenants)]
        key, value, headers = templates[tenant]
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        used = (START + datetime.timedelta(seconds=n % (28 * 86400))).isoformat()
        body = value.replace(b'"2026-11-01T00:00:00Z"', f'"{used}"'.encode())
        fresh: list[tuple[str, str | bytes | None]] = [
            (k, event_id.encode() if k == "ce_id" else v) for k, v in headers
        ]
        produce_patiently(producer, topic, body, key, fresh)
        if n % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


async def plans_and_requests(bootstrap: str, catalog: Catalog, tenants: list[str]) -> None:
    plan = PricePlan(
        currency="USD",
        models={"m": ModelRates(input=Decimal("0.0000013"), output=Decimal("0.0000071"))},
        tools={"t": ToolRates(per_call=Decimal("0.003"))},
    )
    facts: list[Envelope[Any]] = [
        envelope(
            billing.PricePlanPublished(plan_id="std", version=1, plan=plan, operator_id="op"),
            source=SOURCE,
            tenant_id=PLATFORM,
        )
    ]
    for tenant in tenants:
        assigned = billing.TenantPlanAssigned(
            tenant_id=tenant, plan_id="std", version=1, effective_from=START, operator_id="op"
        )
        facts.append(envelope(assigned, source=SOURCE, tenant_id=tenant))
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    try:
        await publisher.publish_all(facts)
    finally:
        await publisher.stop()


async def replay(settings: Settings, tenants: list[str], first: bool) -> dict[str, Any]:
    """``agentlog replay billing``: the topics folded from offset 0 beside the live
    tables, verified against them, every recorded draft computed again, then a draft
    priced for every tenant from the replayed tables. The first run has no live tables
    to match (every table is named changed) and is swapped in; the second is verified
    against what the first swapped in, and leaves its tables beside them."""
    started = time.perf_counter()
    lines: list[str] = []
    if first:
        async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
            tables = frozenset(await table_hashes(conn, settings.billing_schema))
        report = await rebuild(
            settings, out=lines.append, models=BILLING_MODELS, swap=True, changed=tables
        )
        schema = settings.billing_schema
    else:
        report = await replay_billing(settings, swap=False, out=lines.append)
        schema = f"{settings.billing_schema}_rebuild"
    replayed = time.perf_counter()
    db = Database(DATABASE_URL, schema, pool_size=1)
    hashes = []
    try:
        for tenant in tenants:
            draft = await invoices.price_draft(db, tenant, f"inv-{tenant}", PERIOD, None, None)
            hashes.append(draft.content_hash)
    finally:
        await db.close()
    done = time.perf_counter()
    assert len(set(hashes)) == len(tenants)
    assert not any("record by record" in line for line in lines), lines
    return {
        "lines": lines,
        "replay_s": replayed - started,
        "draft_s": done - replayed,
        "total_s": done - started,
        "events": report.events,
        "tables": report.tables,
        "drafts": hashes,
    }


def copy_ceiling(schema: str) -> float:
    """``COPY`` the ledger's rows, as the replay made them, into a table like it."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        buffer = io.BytesIO()
        with conn.cursor().copy(f'COPY "{schema}".usage_ledger TO STDOUT (FORMAT binary)') as copy:
            for chunk in copy:
                buffer.write(chunk)
        conn.execute(
            f'CREATE TABLE "{schema}".ledger_copy (LIKE "{schema}".usage_ledger INCLUDING ALL)'
        )
        started = time.perf_counter()
        with conn.cursor().copy(f'COPY "{schema}".ledger_copy FROM STDIN (FORMAT binary)') as copy:
            copy.write(buffer.getvalue())
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=1_000)
    parser.add_argument("--profile", action="store_true", help="print the fold's top functions")
    args = parser.parse_args()
    tenants = [f"tenant-{i:04d}" for i in range(args.tenants)]
    tag = f"bench_billing_{uuid.uuid4().hex[:8]}"
    schema = f"{tag}_billing_rebuild"  # the second replay's tables
    with tempfile.TemporaryDirectory() as data:
        broker = BrokerProcess(Path(data), "--default-partitions", "3").start()
        try:
            catalog = Catalog(f"{tag}.")
            asyncio.run(ensure_topics(broker.bootstrap, catalog, 3))
            asyncio.run(plans_and_requests(broker.bootstrap, catalog, tenants))
            produced_s = produce_usage(broker.bootstrap, catalog.usage, tenants, args.events)
            settings = Settings(
                kafka_bootstrap_servers=broker.bootstrap,
                topic_prefix=f"{tag}.",
                database_url=DATABASE_URL,
                database_schema=tag,
            )
            asyncio.run(prepare(settings))
            profiler = cProfile.Profile() if args.profile else None
            with PeakRss() as peak:
                runs = [asyncio.run(replay(settings, tenants, first=True))]
                if profiler:
                    profiler.enable()
                runs.append(asyncio.run(replay(settings, tenants, first=False)))
                if profiler:
                    profiler.disable()
            copy_s = copy_ceiling(schema)
        finally:
            broker.stop()
            drop_schemas(tag)
    first, second = runs
    assert first["tables"] == second["tables"], "two replays gave different tables"
    assert first["drafts"] == second["drafts"], "two replays gave different drafts"
    rate = args.events / second["total_s"]
    print(f"billing replay: {args.events:,} usage events of {args.tenants:,} tenants")
    print(f"  produced in            {produced_s:6.1f} s (not part of the replay)")
    print(f"  first replay (no live) {first['total_s']:6.1f} s, swapped in")
    print(f"  replayed and verified  {second['replay_s']:6.1f} s (against the first's tables)")
    print(f"  drafted every tenant   {second['draft_s']:6.1f} s")
    wall = second["total_s"]
    print(f"  replay, wall           {wall:6.1f} s  ({rate:,.0f} events/s; target <= 20 s)")
    print(f"  COPY of the same rows  {copy_s:6.1f} s  (ceiling)")
    print(f"  replay / COPY rate     {copy_s / wall:6.1%}  (target >= 30%)")
    print("  tables and every tenant's draft hash identical in both replays")
    print(f"  peak RSS of one process {peak.kb / 1024:6.0f} MB  (target <= 1024 MB): {peak.name}")
    print("  the second replay said:")
    for line in second["lines"]:
        print(f"    {line}")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
