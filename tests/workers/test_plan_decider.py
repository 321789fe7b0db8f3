"""The billing decider's state after a restart or a rebalance, for random histories
through the real broker and the real billing projector: a snapshot (the read model at
the projection's position, which lags) plus the log's tail equals a fold of the whole
log, and equals what the read models hold once the projector has caught up. And its
re-drives and operators, decided without Postgres."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import snapshots
from projections.database import Database
from projections.ops import BILLING
from projections.tenant_plans import TenantPlans, evolve
from schemas import billing, billing_requests
from schemas.billing import PLATFORM, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope, from_kafka, to_kafka
from streams.catalog import Catalog
from streams.handler import Position
from streams.partitions import LogReader
from tests.e2e.conftest import DATABASE_URL
from tests.workers.deployment import Deployed, deployment, project
from workers.invoicer import Invoicer
from workers.plan_decider import PlanDecider

SOURCE = "/tests/plan-decider"
START = datetime.datetime(2026, 9, 1, tzinfo=datetime.UTC)
INSTANTS = [START + datetime.timedelta(days=d) for d in (0, 20, 45, 70, 100)]
PERIODS = ["2026-09", "2026-10", "2026-11", "2026-12"]
TENANTS = 4


class Log(Deployed):
    async def partitions(self) -> list[TopicPartition]:
        async with LogReader(self.settings.kafka_bootstrap_servers) as reader:
            return await reader.partitions(self.catalog.billing)

    async def project(self) -> None:
        await project(self.settings, self.db, self.catalog.billing, BILLING)

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

    async def redriven(self) -> set[str]:
        """The dead letters re-driven, from the whole billing topic."""
        async with LogReader(self.settings.kafka_bootstrap_servers) as reader:
            tps = await reader.partitions(self.catalog.billing)
            ends = await reader.ends(tps)
            return {
                env.data.dead_letter
                async for batch in reader.batches(dict.fromkeys(tps, 0), ends)
                for env in (from_kafka(r.key, r.value, list(r.headers)) for r in batch)
                if isinstance(env.data, billing.DeadLetterRedriven)
            }


@pytest.fixture
async def log(bootstrap: str) -> AsyncIterator[Log]:
    async with deployment(bootstrap, "pdec") as (config, publisher):
        db = Database(DATABASE_URL, config.billing_schema, pool_size=2)
        try:
            yield Log(config, Catalog.from_settings(config), publisher, db)
        finally:
            await db.close()


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


def redriven(dead_letter: str) -> list[Envelope[Any]]:
    """A re-drive as the decider records it: the request, then where the record went."""
    request = envelope(
        billing.DeadLetterRedriveRequested(dead_letter=dead_letter, operator_id="op", topic="t"),
        source=SOURCE,
        tenant_id=PLATFORM,
    )
    done = billing.DeadLetterRedriven(
        dead_letter=dead_letter, operator_id="op", topic="t", partition=0, offset=1
    )
    return [request, request.follow(done, step="outcome", source=SOURCE)]


@st.composite
def histories(draw: st.DrawFn, tenants: list[str], letters: list[str]) -> list[Envelope[Any]]:
    """Plan facts of a few tenants and re-drives of a few dead letters, in the order
    they are recorded; some repeated."""
    out: list[Envelope[Any]] = []
    for _ in range(draw(st.integers(0, 24))):
        tenant_id = draw(st.sampled_from(tenants))
        kind = draw(st.sampled_from(["assign", "withdraw", "draft", "redrive", "repeat"]))
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
        elif kind == "redrive":
            out += redriven(draw(st.sampled_from(letters)))
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
    letters = {f"0:{uuid.uuid4().int % 10**12}" for _ in range(3)}
    applied = data.draw(histories(tenants, sorted(letters)), label="applied before the restart")
    tail = data.draw(
        histories(tenants, sorted(letters)), label="recorded after the projector stopped"
    )
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

    decider = PlanDecider(
        log.settings.kafka_bootstrap_servers, log.catalog, log.db, group_id="pdec"
    )
    try:
        partitions = await log.partitions()
        await decider.on_assigned(partitions)
        # It consumes the tail, and is then assigned its partitions again (a
        # rebalance): the projection still lags, so the tail is read again.
        for env in tail:
            await decider.handle((env, Position(log.catalog.billing, 0, 0)))
        await decider.on_assigned(partitions)
        restarted = {t: decider.tenants.get(t) or TenantPlans(t) for t in tenants}
        restarted_redriven = decider.redriven & letters
        assert (plan_id, 1) in decider.table.versions
    finally:
        await decider.close()

    whole = await log.folded()
    assert restarted == {t: whole.get(t) or TenantPlans(t) for t in tenants}
    assert restarted_redriven == await log.redriven() & letters

    await log.project()
    held: dict[str, TenantPlans] = {}
    for tp in await log.partitions():
        held |= await snapshots.tenant_plans(log.db, tp.partition)
    assert restarted == {t: held.get(t) or TenantPlans(t) for t in tenants}
    assert restarted_redriven == await snapshots.redriven(log.db) & letters


async def decided(
    log: Log,
    tenant_id: str,
    requests: list[Any],
    meanwhile: Callable[[PlanDecider], Awaitable[None]] | None = None,
) -> list[Any]:
    """The outcomes of ``requests`` (of ``tenant_id``), decided one after the other by a
    decider once its partitions were assigned and ``meanwhile`` ran (by default: its
    database pool is closed)."""
    db = Database(DATABASE_URL, log.settings.billing_schema, pool_size=1)
    decider = PlanDecider(
        log.settings.kafka_bootstrap_servers,
        log.catalog,
        db,
        group_id=log.catalog.group_id("invoicer"),
    )
    outcomes = []
    try:
        await decider.on_assigned(await log.partitions())
        await (meanwhile(decider) if meanwhile is not None else db.close())
        for offset, request in enumerate(requests, start=10_000):
            env = envelope(request, source=SOURCE, tenant_id=tenant_id)
            outcome = await decider.handle((env, Position(log.catalog.billing, 0, offset)))
            assert outcome is not None
            outcomes.append(outcome.data)
    finally:
        await decider.close()
        await db.close()
    return outcomes


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
    outcomes = await decided(log, tenant_id, [*requests, withdraw, publish])
    assigned, mismatch, missing, version = outcomes
    assert isinstance(assigned, billing.TenantPlanAssigned)
    assert (mismatch.code, missing.code) == ("CURRENCY_MISMATCH", "PLAN_ASSIGNMENT_NOT_FOUND")
    assert isinstance(version, billing.PricePlanPublished)
    assert version.version == 2


async def test_a_dead_letter_is_redriven_once_with_the_database_closed(log: Log) -> None:
    """The decider writes an accepted re-drive's record back to its topic, without the
    dead-letter headers, and records where; refuses a second, and one the topic does
    not hold; and reads no Postgres to do it."""
    command = envelope(
        billing.InvoiceDraftRequested(
            tenant_id="t", invoice_id="inv", period="2026-11", operator_id="op"
        ),
        source=SOURCE,
        tenant_id="t",
    )
    key, value, headers = to_kafka(command)
    why = [("dlq.topic", log.catalog.billing.encode()), ("dlq.reason", b"HANDLER_FAILED: x")]
    planted = await log.publisher.send_raw(log.catalog.dead_letter, value, key, headers + why)
    letter = f"{planted.partition}:{planted.offset}"
    asked = [
        billing.DeadLetterRedriveRequested(
            dead_letter=dead_letter, operator_id="op", topic=log.catalog.billing
        )
        for dead_letter in (letter, letter, "0:999999")
    ]

    done, again, missing = await decided(log, PLATFORM, asked)
    assert isinstance(done, billing.DeadLetterRedriven)
    assert (again.code, missing.code) == ("DEAD_LETTER_REDRIVEN", "DEAD_LETTER_NOT_FOUND")
    async with LogReader(log.settings.kafka_bootstrap_servers) as reader:
        tp = TopicPartition(done.topic, done.partition)
        [written] = [
            r
            async for batch in reader.batches({tp: done.offset}, {tp: done.offset + 1})
            for r in batch
        ]
    assert written.value == value
    assert [name for name, _ in written.headers] == [name for name, _ in headers]


async def test_a_batch_whose_outcomes_were_not_written_is_decided_again(log: Log) -> None:
    """Publishing the outcomes failed: the runtime hands the requests over again, and
    they are decided again, not passed over as decided."""
    tenant_id = f"t-{uuid.uuid4().hex[:8]}"
    plan = PricePlan(currency="USD", tools={"t": ToolRates(per_call=Decimal(1))})
    publish = billing.PricePlanPublished(plan_id="usd", version=1, plan=plan, operator_id="op")
    await log.publisher.publish_all([envelope(publish, source=SOURCE, tenant_id=PLATFORM)])
    await log.project()
    db = Database(DATABASE_URL, log.settings.billing_schema, pool_size=1)
    invoicer = Invoicer(log.settings.kafka_bootstrap_servers, log.catalog, db)
    request = billing_requests.TenantPlanAssignRequested(
        tenant_id=tenant_id, plan_id="usd", version=1, effective_from=INSTANTS[0], operator_id="op"
    )
    item = (envelope(request, source=SOURCE, tenant_id=tenant_id), Position("b", 0, 10_000))
    try:
        await invoicer.on_assigned(await log.partitions())
        first = await invoicer.handle_batch([item])
        again = await invoicer.handle_batch([item])
        invoicer.published(await log.publisher.publish_all(again))
        after_written = await invoicer.handle_batch([item])
    finally:
        await invoicer.close()

    assert [type(o.data) for o in first] == [billing.TenantPlanAssigned]
    assert [(o.id, o.data) for o in again] == [(o.id, o.data) for o in first]
    assert after_written == []


async def test_a_plan_table_whose_follower_stopped_follows_again(log: Log) -> None:
    """The plans table's follower stopped (its reads failed while the broker was away),
    and a plan was published meanwhile: an assignment naming it starts the follower
    again and is accepted, not refused for a plan it has not seen."""
    tenant_id = f"t-{uuid.uuid4().hex[:8]}"
    decider = PlanDecider(
        log.settings.kafka_bootstrap_servers, log.catalog, log.db, group_id="pdec"
    )
    try:
        await decider.on_assigned(await log.partitions())
        await decider.table.stop()
        plan = PricePlan(currency="USD", tools={"t": ToolRates(per_call=Decimal(1))})
        published = billing.PricePlanPublished(
            plan_id="late", version=1, plan=plan, operator_id="op"
        )
        await log.publisher.publish(envelope(published, source=SOURCE, tenant_id=PLATFORM))
        request = billing_requests.TenantPlanAssignRequested(
            tenant_id=tenant_id, plan_id="late", version=1, effective_from=START, operator_id="op"
        )
        env = envelope(request, source=SOURCE, tenant_id=tenant_id)
        outcome = await decider.handle((env, Position(log.catalog.billing, 0, 10_000)))
    finally:
        await decider.close()
    assert outcome is not None
    assert isinstance(outcome.data, billing.TenantPlanAssigned), outcome.data


async def test_an_operators_name_is_taken_once_whoever_decided_it(log: Log) -> None:
    """An operator is keyed by its id, its request by its name: a decider that has not
    seen the first operator of a name (the partition's previous owner decided it, and
    wrote it on its id's partition) refuses a second one of that name, and accepts the
    first request, handed to it again, with the same fact."""
    name = f"on-call-{uuid.uuid4().hex[:8]}"
    first, second = (
        billing_requests.OperatorCreateRequested(
            operator_id=f"op-{n}",
            display_name=name,
            key_id=f"k-{n}",
            key_prefix="alop_x",
            key_hash=f"h-{uuid.uuid4().hex}",
        )
        for n in (1, 2)
    )
    created = billing.OperatorCreated(**first.model_dump())

    async def previous_owner_decided(decider: PlanDecider) -> None:
        await decider.table.stop()  # it follows no partition until a decision asks
        await log.publisher.publish(envelope(created, source=SOURCE, tenant_id=PLATFORM))

    outcomes = await decided(log, PLATFORM, [second, first], previous_owner_decided)
    refused, again = outcomes
    assert isinstance(refused, billing_requests.BillingCommandRejected)
    assert refused.code == "OPERATOR_NAME_TAKEN"
    assert again == created
