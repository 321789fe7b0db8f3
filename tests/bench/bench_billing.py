"""Billing replay: 1,000,000 usage events of 1,000 tenants through the broker, folded
from offset 0 into the billing read models and drafted into an invoice per tenant,
against a raw ``COPY`` of the same ledger rows into Postgres in the same run (the
ceiling).

    python -m tests.bench.bench_billing [--events N] [--tenants T] [--profile]

Records are produced with confluent-kafka from one CloudEvent template per tenant (the
same bytes ``to_kafka`` writes, ids and times filled in), so producing is not what is
measured. The replay is the one ``agentlog replay billing`` runs (``LogFold`` over
the topics into a fresh schema), then the invoicer's pricing per tenant.
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
from projections.migrate import BILLING_SCRIPTS, upgrade
from projections.ops import BILLING
from projections.rebuild import LogFold
from projections.store import ProjectionStore
from schemas import billing
from schemas.billing import PLATFORM, ModelRates, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope, to_kafka
from schemas.usage import UsageRecorded
from streams.catalog import Catalog, ensure_topics
from streams.partitions import LogReader
from streams.publisher import Publisher
from tests.kafka import BrokerProcess
from tests.topics import produce_patiently

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


async def replay(
    bootstrap: str, catalog: Catalog, schema: str, tenants: list[str]
) -> dict[str, float]:
    """Fold both topics from offset 0 into ``schema``, then price every tenant's draft."""
    store = ProjectionStore(DATABASE_URL, schema, BILLING, live=False)
    reader = await LogReader(bootstrap).start()
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        tps = [
            tp
            for topic in (catalog.usage, catalog.billing)
            for tp in await reader.partitions(topic)
        ]
        ends = await reader.ends(tps)
        fold = LogFold(store, reader, bootstrap, catalog)
        await fold.until(ends, lambda _n: None)
        await fold.close()
        timings["fold_s"] = time.perf_counter() - started
        offsets = {tp.partition: end for tp, end in ends.items() if tp.topic == catalog.usage}
        db = Database(DATABASE_URL, schema, pool_size=1)
        drafted = time.perf_counter()
        hashes = set()
        for tenant in tenants:
            draft = await invoices.price_draft(db, tenant, f"inv-{tenant}", PERIOD, None, offsets)
            hashes.add(draft.content_hash)
        await db.close()
        timings["draft_s"] = time.perf_counter() - drafted
        timings["replay_s"] = time.perf_counter() - started
        assert len(hashes) == len(tenants)
    finally:
        await reader.stop()
        await store.close()
    return timings


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
    schema = f"{tag}_billing"
    with tempfile.TemporaryDirectory() as data:
        broker = BrokerProcess(Path(data), "--default-partitions", "3").start()
        try:
            catalog = Catalog(f"{tag}.")
            asyncio.run(ensure_topics(broker.bootstrap, catalog, 3))
            asyncio.run(plans_and_requests(broker.bootstrap, catalog, tenants))
            produced_s = produce_usage(broker.bootstrap, catalog.usage, tenants, args.events)
            upgrade(DATABASE_URL, schema, BILLING_SCRIPTS)
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            timings = asyncio.run(replay(broker.bootstrap, catalog, schema, tenants))
            if profiler:
                profiler.disable()
            copy_s = copy_ceiling(schema)
        finally:
            broker.stop()
            with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    rate = args.events / timings["replay_s"]
    print(f"billing replay: {args.events:,} usage events of {args.tenants:,} tenants")
    print(f"  produced in            {produced_s:6.1f} s (not part of the replay)")
    print(f"  folded into the ledger {timings['fold_s']:6.1f} s")
    print(f"  drafted every tenant   {timings['draft_s']:6.1f} s")
    wall = timings["replay_s"]
    print(f"  replay, wall           {wall:6.1f} s  ({rate:,.0f} events/s; target <= 20 s)")
    print(f"  COPY of the same rows  {copy_s:6.1f} s  (ceiling)")
    print(f"  replay / COPY rate     {copy_s / timings['replay_s']:6.1%}  (target >= 30%)")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
