"""Billing replays are deterministic: the billing projector killed with SIGKILL at
random points of the log it folds, then three replays from offset 0 (each
compared with the live tables and every draft computed again), give byte-identical
tables and hashes."""

from __future__ import annotations

import asyncio
import datetime
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from projections.rebuild import table_hashes
from projections.secrets import new_key
from schemas import billing
from schemas.billing import PLATFORM, ModelRates, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope
from schemas.usage import UsageRecorded
from streams.catalog import Catalog
from streams.publisher import Publisher
from streams.settings import Settings
from tests.e2e.conftest import DATABASE_URL, applied_records, drop_schemas
from tests.eventually import NotYetError, eventually
from tests.kafka import REPO
from tests.services import redis_url
from workers.runner import prepare

pytestmark = pytest.mark.slow
SOURCE = "/tests/replay"
TENANTS = 20
USAGE_EVENTS = 20_000
KILLS = 8
PERIOD = "2026-11"
START = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


def role(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentlog_cli", "worker", name],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def until(probe: Callable[[], object], what: str, log: Path, **wait: float) -> None:
    """``eventually``, with the end of the roles' log in a failure (read then, once)."""
    try:
        eventually(probe, what, **wait)
    except NotYetError as exc:
        exc.add_note(log.read_text()[-3000:])
        raise


def history(rng: random.Random, catalog_tenants: list[str]) -> list[Envelope[Any]]:
    plan = PricePlan(
        currency="USD",
        models={"m": ModelRates(input=Decimal("0.0000013"), output=Decimal("0.0000071"))},
        tools={"t": ToolRates(per_call=Decimal("0.0033"), free_calls=5)},
        monthly_minimum=Decimal("1"),
    )
    dearer = plan.model_copy(update={"tools": {"t": ToolRates(per_call=Decimal("0.005"))}})
    facts: list[Envelope[Any]] = [
        envelope(
            billing.PricePlanPublished(plan_id="std", version=v, plan=p, operator_id="op"),
            source=SOURCE,
            tenant_id=PLATFORM,
        )
        for v, p in ((1, plan), (2, dearer))
    ]
    for tenant in catalog_tenants:
        for version, day in ((1, 0), (2, rng.randint(5, 25))):
            assigned = billing.TenantPlanAssigned(
                tenant_id=tenant,
                plan_id="std",
                version=version,
                effective_from=START + datetime.timedelta(days=day),
                operator_id="op",
            )
            facts.append(envelope(assigned, source=SOURCE, tenant_id=tenant))
    usage = []
    for n in range(USAGE_EVENTS):
        tenant = rng.choice(catalog_tenants)
        used = START + datetime.timedelta(seconds=rng.randint(0, 29 * 86400))
        fact = (
            UsageRecorded(
                tenant_id=tenant,
                kind="model",
                resource="m",
                quantities={
                    "input_tokens": rng.randint(1, 900),
                    "output_tokens": rng.randint(1, 90),
                },
                used_at=used,
                call_id=f"c{n}",
            )
            if n % 3
            else UsageRecorded(
                tenant_id=tenant, kind="tool", resource="t", quantities={"calls": 1}, used_at=used
            )
        )
        usage.append(envelope(fact, source=SOURCE, tenant_id=tenant))
    usage += rng.sample(usage, USAGE_EVENTS // 50)  # redelivered copies, same ids
    return facts + usage


@pytest.fixture
def tag() -> Iterator[str]:
    name = f"replay_{uuid.uuid4().hex[:10]}"
    yield name
    drop_schemas(name)


@pytest.mark.timeout(300)
def test_replays_after_kills_give_identical_tables_and_hashes(
    bootstrap: str, tag: str, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{tag}.",
        database_url=DATABASE_URL,
        database_schema=tag,
        secrets_key=new_key(),
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTLOG_TOPIC_PREFIX": settings.topic_prefix,
        "AGENTLOG_DATABASE_URL": DATABASE_URL,
        "AGENTLOG_REDIS_URL": redis_url(),
        "AGENTLOG_DATABASE_SCHEMA": tag,
        "AGENTLOG_SECRETS_KEY": settings.secrets_key,
        "AGENTLOG_LOG_LEVEL": "WARNING",
        # A killed member holds its partitions until its session times out: a short
        # session (the least a broker allows by default) lets each restarted projector take
        # them back in seconds.
        "AGENTLOG_CONSUMER_SESSION_TIMEOUT_MS": "6000",
    }
    rng = random.Random(7)
    tenants = [f"tenant-{i:02d}" for i in range(TENANTS)]
    records = history(rng, tenants)

    async def publish(envs: list[Envelope[Any]]) -> None:
        publisher = Publisher(bootstrap, Catalog.from_settings(settings))
        await publisher.start()
        try:
            await publisher.publish_all(envs)
        finally:
            await publisher.stop()

    asyncio.run(prepare(settings))
    asyncio.run(publish(records))
    total = len(records)
    log = tmp_path / "roles.log"

    # The billing projector, killed with SIGKILL at random points of its catch-up. The
    # points are positions in the log, not times: the fold takes two seconds or twenty
    # depending on the machine, and a kill after it has finished proves nothing.
    caught_mid_fold = 0
    stretch = total / (KILLS + 1)
    roles = {"billing": role(env, "billing", log)}
    try:
        for n in range(KILLS):
            target = (n + rng.uniform(0.2, 0.8)) * stretch
            # Looked at every 5 ms: the kill is aimed at that position in the fold.
            until(
                lambda: applied_records(settings.billing_schema) >= target,  # noqa: B023
                f"{target:.0f} records applied",
                log,
                timeout=60,
                poll=0.005,
            )
            roles["billing"].kill()
            roles["billing"].wait(10)
            done = applied_records(settings.billing_schema)
            caught_mid_fold += 0 < done < total
            roles["billing"] = role(env, "billing", log)
        roles["invoicer"] = role(env, "invoicer", log)
        until(
            lambda: applied_records(settings.billing_schema) >= total,
            f"all {total} records applied",
            log,
            timeout=120,
        )
        assert caught_mid_fold >= KILLS // 2, f"only {caught_mid_fold} kills landed mid-fold"
        requests = [
            envelope(
                billing.InvoiceDraftRequested(
                    tenant_id=t, invoice_id=f"inv-{t}", period=PERIOD, operator_id="op"
                ),
                source=SOURCE,
                tenant_id=t,
            )
            for t in tenants
        ]
        asyncio.run(publish(requests))

        def drafted() -> bool:
            with psycopg.connect(DATABASE_URL) as conn:
                (count,) = conn.execute(  # type: ignore[misc]
                    f'SELECT count(*) FROM "{settings.billing_schema}".invoice_revisions'
                ).fetchone()
            assert count == TENANTS, f"{count} drafts"
            return True

        until(drafted, f"{TENANTS} drafts", log, timeout=60)

        # Three replays from offset 0: each matches the live tables (or exits 1) and
        # computes every draft again; the tables each leaves are the same, byte for byte.
        rebuilt = f"{settings.billing_schema}_rebuild"
        digests = []
        for _ in range(3):
            replay = subprocess.run(
                [sys.executable, "-m", "agentlog_cli", "replay", "billing"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert replay.returncode == 0, replay.stdout + replay.stderr
            assert "every draft's totals and hash computed again: identical" in replay.stdout

            async def digest() -> dict[str, str]:
                conn = await psycopg.AsyncConnection.connect(DATABASE_URL)
                try:
                    return await table_hashes(conn, rebuilt)
                finally:
                    await conn.close()

            digests.append(asyncio.run(digest()))
        assert digests[0] == digests[1] == digests[2]
        assert {"usage_ledger", "invoice_revisions", "invoices"} <= digests[0].keys()
        with psycopg.connect(DATABASE_URL) as conn:
            live, again = (
                conn.execute(
                    "SELECT invoice_id, revision, content_hash, total"
                    f' FROM "{schema}".invoice_revisions ORDER BY invoice_id'
                ).fetchall()
                for schema in (settings.billing_schema, rebuilt)
            )
        assert live == again
        assert len({row[2] for row in live}) == TENANTS
    finally:
        for proc in roles.values():  # whatever failed, no role outlives the test
            proc.terminate()
            proc.wait(20)
