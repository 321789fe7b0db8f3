"""Where the billing decider (the invoicer role) starts on its partitions: at its
group's commits, not at the billing projection's position. The projector runs on while
the decider is down, and passes requests the decider never decided: they are decided
when it comes back, and those it decided before are not decided again."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from aiokafka import TopicPartition

from projections.database import Database
from projections.ops import BILLING
from schemas import billing, billing_requests
from schemas.billing import PLATFORM, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope, from_kafka
from streams.catalog import Catalog
from streams.partitions import LogReader
from tests.e2e.conftest import DATABASE_URL
from tests.eventually import eventually_async
from tests.topics import read_all
from tests.workers.deployment import Deployed, deployment, project
from workers.runner import run_roles

SOURCE = "/tests/invoicer-start"
START = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


@contextlib.asynccontextmanager
async def running(log: Deployed, *roles: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_roles(log.settings, list(roles), stop, probes=False))
    try:
        yield
    finally:
        stop.set()
        await task


async def outcomes(log: Deployed, requests: list[Envelope[Any]]) -> dict[str, list[Any]]:
    """Each request's outcomes on the billing topic, by request id."""
    found: dict[str, list[Any]] = {r.id: [] for r in requests}
    bootstrap = log.settings.kafka_bootstrap_servers
    for record in await asyncio.to_thread(read_all, bootstrap, log.catalog.billing):
        env = from_kafka(record.key, record.value, list(record.headers))
        if env.causation_id in found and env.causation_id != env.id:
            found[env.causation_id].append(env.data)
    return found


async def test_requests_the_projection_passed_while_the_decider_was_down_are_decided(
    bootstrap: str,
) -> None:
    async with deployment(bootstrap, "istart") as (config, publisher):
        db = Database(DATABASE_URL, config.billing_schema, pool_size=1)
        log = Deployed(config, Catalog.from_settings(config), publisher, db)
        tenant_id = f"t-{uuid.uuid4().hex[:8]}"
        plan = PricePlan(currency="USD", tools={"t": ToolRates(per_call=Decimal(1))})

        def request(data: Any) -> Envelope[Any]:
            return envelope(data, source=SOURCE, tenant_id=tenant_id)

        published = envelope(
            billing.PricePlanPublished(plan_id="usd", version=1, plan=plan, operator_id="op"),
            source=SOURCE,
            tenant_id=PLATFORM,
        )
        first = request(
            billing_requests.TenantPlanAssignRequested(
                tenant_id=tenant_id,
                plan_id="usd",
                version=1,
                effective_from=START,
                operator_id="op",
            )
        )
        later = [
            request(
                billing_requests.TenantPlanWithdrawRequested(
                    tenant_id=tenant_id, effective_from=START, operator_id="op"
                )
            ),
            request(
                billing.InvoiceDraftRequested(
                    tenant_id=tenant_id, invoice_id="inv", period="2026-11", operator_id="op"
                )
            ),
        ]
        try:
            async with running(log, "billing", "invoicer"):
                await publisher.publish_all([published, first])

                async def first_decided() -> bool:
                    return bool((await outcomes(log, [first]))[first.id])

                await eventually_async(first_decided, "the first request's outcome")
            records = await asyncio.to_thread(read_all, bootstrap, log.catalog.billing)
            [(partition, offset)] = [
                (r.partition, r.offset)
                for r in records
                if from_kafka(r.key, r.value, list(r.headers)).id == first.id
            ]
            group = log.catalog.group_id("invoicer")
            async with LogReader(bootstrap, group_id=group) as reader:
                committed = await reader.committed(TopicPartition(log.catalog.billing, partition))
            assert committed > offset, "the decider committed past its request"

            # The decider is down; the projector passes the requests recorded meanwhile.
            await publisher.publish_all(later)
            await project(config, db, log.catalog.billing, BILLING)

            async with running(log, "invoicer"):

                async def all_decided() -> dict[str, list[Any]]:
                    found = await outcomes(log, [first, *later])
                    assert all(found.values()), found
                    return found

                decided = await eventually_async(all_decided, "every request's outcome")
        finally:
            await db.close()
    assert [type(o) for o in decided[first.id]] == [billing.TenantPlanAssigned]
    withdraw, draft = (decided[r.id] for r in later)
    assert [type(o) for o in withdraw] == [billing.TenantPlanWithdrawn]
    assert [type(o) for o in draft] in (
        [billing.InvoiceDrafted],
        [billing.InvoiceDraftRejected],
    )
