"""The billing decider's state after a restart or a rebalance, for random histories
through the real broker and the real billing projector: a snapshot (the read model at
the projection's position, which lags) plus the log's tail equals a fold of the whole
log, and equals what the read models hold once the projector has caught up."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import plans
from projections.database import Database
from projections.ops import BILLING
from projections.secrets import new_key
from projections.tenant_plans import TenantPlans, evolve
from projections.waiter import next_offset
from schemas import billing, billing_requests
from schemas.billing import PLATFORM, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope, from_kafka
from streams.catalog import Catalog
from streams.handler import Position
from streams.partitions import LogReader
from streams.publisher import Publisher
from streams.settings import Settings
from tests.e2e.conftest import DATABASE_URL
from tests.eventually import eventually_async
from workers.plan_decider import PlanDecider
from workers.runner import prepare, run_roles

SOURCE = "/tests/plan-decider"
START = datetime.datetime(2026, 9, 1, tzinfo=datetime.UTC)
INSTANTS = [START + datetime.timedelta(days=d) for d in (0, 20, 45, 70, 100)]
PERIODS = ["2026-09", "2026-10", "2026-11", "2026-12"]
TENANTS = 4


@dataclass
class Log:
    settings: Settings
    catalog: Catalog
    publisher: Publisher
    db: Database

    async def partitions(self) -> list[TopicPartition]:
        async with LogReader(self.settings.kafka_bootstrap_servers) as reader:
            return await reader.partitions(self.catalog.billing)

    async def project(self) -> None:
        """Run the billing projector until it has applied the billing topic to its end."""
        async with LogReader(self.settings.kafka_bootstrap_servers) as reader:
            ends = await reader.ends(await reader.partitions(self.catalog.billing))
        stop = asyncio.Event()
        role = asyncio.create_task(run_roles(self.settings, ["billing"], stop))

        async def applied() -> bool:
            for tp, end in ends.items():
                assert await next_offset(self.db, tp.topic, tp.partition, BILLING) >= end
            return True

        try:
            await eventually_async(applied, "the billing projection at the log's end")
        finally:
            stop.set()
            await role

    async def folded(self) -> dict[str, TenantPlans]:
        """Every tenant's plans, folded from the whole billing topic (each event once)."""
        tenants: dict[str, TenantPlans] = {}
        seen: set[str] = set()
        async with LogReader(self.settings.kafka_bootstrap_servers) as reader:
            tps = await reader.partitions(self.catalog.billing)
            ends = await reader.ends(tps)
            async for batch in reader.batches(dict.fromkeys(tps, 0), ends):
                for record in batch:
                    env = from_kafka(record.key, record.value, list(record.headers))
                    fact = env.data
                    kinds = billing.TenantPlanAssigned | billing.TenantPlanWithdrawn
                    if env.id in seen or not isinstance(fact, kinds | billing.InvoiceDrafted):
                        continue
                    seen.add(env.id)
                    state = tenants.get(fact.tenant_id) or TenantPlans(fact.tenant_id)
                    tenants[fact.tenant_id] = evolve(state, fact, record.offset)
        return tenants


@pytest.fixture
async def log(bootstrap: str) -> AsyncIterator[Log]:
    tag = f"pdec_{uuid.uuid4().hex[:10]}"
    config = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{tag}.",
        database_url=DATABASE_URL,
        database_schema=tag,
        secrets_key=new_key(),
    )
    await prepare(config)
    catalog = Catalog.from_settings(config)
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    db = Database(DATABASE_URL, config.billing_schema, pool_size=2)
    try:
        yield Log(config, catalog, publisher, db)
    finally:
        await publisher.stop()
        await db.close()
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{tag}%",)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def drafted(tenant_id: str, period: str) -> list[Envelope[Any]]:
    """A draft as the invoicer records it: the request, then the draft naming it."""
    request = envelope(
        billing.InvoiceDraftRequested(
            tenant_id=tenant_id, invoice_id=f"inv-{period}", period=period, operator_id="op"
        ),
        source=SOURCE,
        tenant_id=tenant_id,
    )
    draft = billing.InvoiceDrafted(
        tenant_id=tenant_id,
        invoice_id=f"inv-{period}",
        revision=1,
        request_id=request.id,
        period=period,
        currency="USD",
        lines=[],
        subtotal=Decimal(0),
        total=Decimal(0),
        plans=[],
        offsets={},
        usage_events=0,
        content_hash="h",
    )
    return [request, request.follow(draft, step="draft", source=SOURCE)]


@st.composite
def histories(draw: st.DrawFn, tenants: list[str]) -> list[Envelope[Any]]:
    """Plan facts of a few tenants, in the order they are recorded; some repeated."""
    out: list[Envelope[Any]] = []
    for _ in range(draw(st.integers(0, 24))):
        tenant_id = draw(st.sampled_from(tenants))
        kind = draw(st.sampled_from(["assign", "withdraw", "draft", "repeat"]))
        if kind == "assign":
            fact: Any = billing.TenantPlanAssigned(
                tenant_id=tenant_id,
                plan_id=draw(st.sampled_from(["a", "b"])),
                version=1,
                effective_from=draw(st.sampled_from(INSTANTS)),
                operator_id="op",
            )
        elif kind == "withdraw":
            fact = billing.TenantPlanWithdrawn(
                tenant_id=tenant_id,
                effective_from=draw(st.sampled_from(INSTANTS)),
                operator_id="op",
            )
        elif kind == "draft":
            out += drafted(tenant_id, draw(st.sampled_from(PERIODS)))
            continue
        else:
            if out:
                out.append(draw(st.sampled_from(out)))  # delivered twice
            continue
        out.append(envelope(fact, source=SOURCE, tenant_id=tenant_id))
    return out


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
async def test_a_restarted_decider_holds_the_whole_logs_state(
    log: Log, data: st.DataObject
) -> None:
    tenants = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(TENANTS)]
    applied = data.draw(histories(tenants), label="applied before the restart")
    tail = data.draw(histories(tenants), label="recorded after the projector stopped")
    plan_id = f"p-{uuid.uuid4().hex[:8]}"
    published = envelope(
        billing.PricePlanPublished(
            plan_id=plan_id,
            version=1,
            plan=PricePlan(currency="USD", tools={"t": ToolRates(per_call=Decimal(1))}),
            operator_id="op",
        ),
        source=SOURCE,
        tenant_id=PLATFORM,
    )
    await log.publisher.publish_all([published, *applied])
    await log.project()
    await log.publisher.publish_all(tail)  # the snapshot lags these

    decider = PlanDecider(log.settings.kafka_bootstrap_servers, log.catalog, log.db)
    try:
        partitions = await log.partitions()
        await decider.on_assigned(partitions)
        # It consumes the tail, and is then assigned its partitions again (a
        # rebalance): the projection still lags, so the tail is read again.
        for env in tail:
            await decider.handle((env, Position(log.catalog.billing, 0, 0)))
        await decider.on_assigned(partitions)
        restarted = {t: decider.tenants.get(t) or TenantPlans(t) for t in tenants}
        assert (plan_id, 1) in decider.table.versions
    finally:
        await decider.close()

    whole = await log.folded()
    assert restarted == {t: whole.get(t) or TenantPlans(t) for t in tenants}

    await log.project()
    held: dict[str, TenantPlans] = {}
    for tp in await log.partitions():
        held |= await plans.tenants_of_partition(log.db, tp.partition)
    assert restarted == {t: held.get(t) or TenantPlans(t) for t in tenants}


async def test_a_decider_decides_with_its_database_closed(log: Log) -> None:
    """Postgres is read when partitions are assigned, never to decide: with its pool
    closed after the assignment, the decider still decides every kind of request."""
    tenant_id = f"t-{uuid.uuid4().hex[:8]}"
    facts = [
        billing.PricePlanPublished(
            plan_id=f"{currency}-plan",
            version=1,
            plan=PricePlan(currency=currency, tools={"t": ToolRates(per_call=Decimal(1))}),
            operator_id="op",
        )
        for currency in ("USD", "EUR")
    ]
    await log.publisher.publish_all([envelope(f, source=SOURCE, tenant_id=PLATFORM) for f in facts])
    await log.project()
    db = Database(DATABASE_URL, log.settings.billing_schema, pool_size=1)
    decider = PlanDecider(log.settings.kafka_bootstrap_servers, log.catalog, db)
    try:
        await decider.on_assigned(await log.partitions())
        await db.close()
        requests = [
            billing_requests.TenantPlanAssignRequested(
                tenant_id=tenant_id,
                plan_id=plan_id,
                version=1,
                effective_from=at,
                operator_id="op",
            )
            for plan_id, at in (("USD-plan", INSTANTS[0]), ("EUR-plan", INSTANTS[1]))
        ]
        withdraw = billing_requests.TenantPlanWithdrawRequested(
            tenant_id=tenant_id, effective_from=INSTANTS[2], operator_id="op"
        )
        publish = billing_requests.PricePlanPublishRequested(
            plan_id="USD-plan", plan=facts[0].plan, operator_id="op"
        )
        outcomes = []
        for offset, request in enumerate([*requests, withdraw, publish], start=10_000):
            env = envelope(request, source=SOURCE, tenant_id=tenant_id)
            outcome = await decider.handle((env, Position(log.catalog.billing, 0, offset)))
            assert outcome is not None
            outcomes.append(outcome.data)
    finally:
        await decider.close()
    assigned, mismatch, missing, version = outcomes
    assert isinstance(assigned, billing.TenantPlanAssigned)
    assert (mismatch.code, missing.code) == ("CURRENCY_MISMATCH", "PLAN_ASSIGNMENT_NOT_FOUND")
    assert isinstance(version, billing.PricePlanPublished)
    assert version.version == 2
