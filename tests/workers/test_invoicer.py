"""The invoicer and the billing projector, running, fed random usage through the real
broker: every draft's total equals a plain reference computation over the deduplicated
events, whatever the duplicates, the order of arrival, and the plan changes."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import invoices
from projections.database import Database
from projections.invoices import DraftStatus
from schemas import billing
from schemas.billing import PLATFORM, ModelRates, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope
from schemas.usage import UsageRecorded
from streams.publisher import Publisher
from streams.settings import Settings
from tests.e2e.conftest import DATABASE_URL
from tests.eventually import eventually_async
from tests.workers.deployment import deployment
from workers.runner import run_roles

SOURCE = "/tests/invoicer"
PERIOD = "2026-11"
START = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
END = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
MODELS = ("m-priced", "m-unpriced")
TOOLS = ("t-priced", "t-unpriced")


@dataclass
class Billing:
    settings: Settings
    publisher: Publisher
    db: Database

    async def publish(self, *envs: Envelope[Any]) -> None:
        await self.publisher.publish_all(list(envs))

    async def draft(self, tenant_id: str) -> invoices.RevisionRow:
        found = await self.decided(tenant_id)
        assert found.status is DraftStatus.DRAFTED, found
        (revision,) = [
            r
            for r in await invoices.revisions(self.db, "*", f"inv-{tenant_id}")
            if r.request_id == found.request_id
        ]
        return revision

    async def decided(self, tenant_id: str) -> invoices.DraftRequestRow:
        """Request a draft of the tenant's period; what became of the request."""
        request = envelope(
            billing.InvoiceDraftRequested(
                tenant_id=tenant_id, invoice_id=f"inv-{tenant_id}", period=PERIOD, operator_id="op"
            ),
            source=SOURCE,
            tenant_id=tenant_id,
        )
        await self.publish(request)

        async def decided() -> invoices.DraftRequestRow:
            found = await invoices.draft_request(self.db, "*", request.id)
            assert found is not None, "not recorded yet"
            assert found.status is not DraftStatus.REQUESTED, found.status
            return found

        return await eventually_async(decided, f"a decision on {request.id}", timeout=30)


@pytest.fixture
async def running_billing(bootstrap: str) -> AsyncIterator[Billing]:
    """The billing projector and the invoicer, on topics and schemas of the test's own."""
    async with deployment(bootstrap, "bill") as (config, publisher):
        stop = asyncio.Event()
        roles = asyncio.create_task(run_roles(config, ["billing", "invoicer"], stop))
        db = Database(DATABASE_URL, config.billing_schema, pool_size=2)
        try:
            yield Billing(config, publisher, db)
        finally:
            stop.set()
            await asyncio.gather(roles, return_exceptions=True)
            await db.close()


# -- random histories ---------------------------------------------------------------------

rates = st.decimals(min_value=0, max_value=Decimal("0.01"), places=8)
plans = st.builds(
    PricePlan,
    currency=st.just("EUR"),
    models=st.fixed_dictionaries(
        {
            "m-priced": st.builds(
                ModelRates,
                input=rates,
                output=rates,
                cached_input=rates,
                free_input_tokens=st.integers(0, 500),
            )
        }
    ),
    tools=st.fixed_dictionaries(
        {"t-priced": st.builds(ToolRates, per_call=rates, free_calls=st.integers(0, 3))}
    ),
    monthly_minimum=st.decimals(min_value=0, max_value=5, places=2),
)
times = st.integers(-3 * 86400, 33 * 86400).map(lambda s: START + datetime.timedelta(seconds=s))


@st.composite
def usages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["model", "tool"]))
    if kind == "model":
        resource = draw(st.sampled_from(MODELS))
        units = ("input_tokens", "output_tokens", "cached_input_tokens")
        quantities = {u: draw(st.integers(0, 5000)) for u in units}
    else:
        resource = draw(st.sampled_from(TOOLS))
        quantities = {"calls": draw(st.integers(1, 3))}
    return {"kind": kind, "resource": resource, "quantities": quantities, "used_at": draw(times)}


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    versions = draw(st.lists(plans, min_size=1, max_size=3))
    starts = sorted(draw(st.lists(times, min_size=1, max_size=4, unique=True)))
    assignments = [(start, draw(st.integers(1, len(versions)))) for start in starts]
    events = draw(st.lists(usages(), max_size=25))
    repeats = draw(st.lists(st.integers(0, max(len(events) - 1, 0)), max_size=5))
    order = draw(st.permutations(range(len(events) + len(repeats))))
    noise = draw(st.lists(usages(), max_size=5))  # another tenant's, on the same topic
    return {
        "versions": versions,
        "assignments": assignments,
        "events": events,
        "repeats": repeats,
        "order": order,
        "noise": noise,
    }


# -- the reference ------------------------------------------------------------------------


def reference_totals(history: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """The subtotal and total, computed as plainly as can be: each event once, priced by the version
    in force when it was used; per plan window and unit, the free units off, each line
    rounded to 1e-6; the last window's minimum; the total to cents."""
    in_force = sorted(history["assignments"])
    lines: dict[tuple[Any, ...], int] = {}
    for event in history["events"]:  # each once: the repeats are copies
        used = event["used_at"]
        if not START <= used < END:
            continue
        window = max((i for i, (start, _v) in enumerate(in_force) if start <= used), default=None)
        for unit, quantity in event["quantities"].items():
            if quantity:
                key = (window, event["kind"], event["resource"], unit)
                lines[key] = lines.get(key, 0) + quantity
    subtotal = Decimal(0)
    for (window, kind, resource, unit), quantity in lines.items():
        if window is None:
            continue
        plan: PricePlan = history["versions"][in_force[window][1] - 1]
        if kind == "model" and resource in plan.models:
            rates_of = plan.models[resource]
            price, free = {
                "input_tokens": (rates_of.input, rates_of.free_input_tokens),
                "output_tokens": (rates_of.output, rates_of.free_output_tokens),
                "cached_input_tokens": (rates_of.cached_input, rates_of.free_cached_input_tokens),
            }[unit]
        elif kind == "tool" and resource in plan.tools:
            price, free = plan.tools[resource].per_call, plan.tools[resource].free_calls
        else:
            continue
        amount = Decimal(max(quantity - free, 0)) * price
        subtotal += amount.quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
    windows_in_period = [i for i, (start, _v) in enumerate(in_force) if start < END]
    last = history["versions"][in_force[windows_in_period[-1]][1] - 1]
    subtotal = max(subtotal, last.monthly_minimum)
    return subtotal, subtotal.quantize(Decimal("0.01"), ROUND_HALF_EVEN)


# -- the property -------------------------------------------------------------------------


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories())
async def test_every_draft_total_equals_the_reference(
    running_billing: Billing, history: dict[str, Any]
) -> None:
    if not any(start < END for start, _v in history["assignments"]):
        history["assignments"][0] = (START, history["assignments"][0][1])
    tenant, other = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    plan_id = f"plan-{tenant}"
    facts: list[Envelope[Any]] = [
        envelope(
            billing.PricePlanPublished(plan_id=plan_id, version=v, plan=plan, operator_id="op"),
            source=SOURCE,
            tenant_id=PLATFORM,
        )
        for v, plan in enumerate(history["versions"], start=1)
    ]
    facts += [
        envelope(
            billing.TenantPlanAssigned(
                tenant_id=tenant, plan_id=plan_id, version=v, effective_from=start, operator_id="op"
            ),
            source=SOURCE,
            tenant_id=tenant,
        )
        for start, v in history["assignments"]
    ]
    await running_billing.publish(*facts)

    def usage_of(tenant_id: str, event: dict[str, Any]) -> Envelope[Any]:
        return envelope(
            UsageRecorded(tenant_id=tenant_id, **event), source=SOURCE, tenant_id=tenant_id
        )

    recorded = [usage_of(tenant, e) for e in history["events"]]
    copies = [recorded[i] for i in history["repeats"] if recorded]
    arriving = [
        [*recorded, *copies][i] for i in history["order"] if i < len(recorded) + len(copies)
    ]
    noise = [usage_of(other, e) for e in history["noise"]]
    # Interleaved with another tenant's usage (on another partition, likely).
    mixed = [
        x for pair in zip(arriving, noise + [None] * len(arriving), strict=False) for x in pair if x
    ]
    await running_billing.publish(*mixed, *noise[len(arriving) :])

    drafted = await running_billing.draft(tenant)

    assert (drafted.subtotal, drafted.total) == reference_totals(history)
    assert drafted.usage_events == len(
        {
            e.id
            for e, raw in zip(recorded, history["events"], strict=True)
            if START <= raw["used_at"] < END
        }
    )


async def test_a_draft_that_cannot_be_priced_is_rejected_with_its_code(
    running_billing: Billing,
) -> None:
    """A plan recorded before rates were bounded: the request is rejected, never left
    ``requested`` behind a dead letter."""
    tenant_id = f"t-{uuid.uuid4().hex[:8]}"
    for n, rate in enumerate((Decimal("1e999999999"), Decimal("1e-999999999"))):
        plan = PricePlan(currency="EUR", tools={"t-priced": ToolRates(per_call=rate)})
        published = billing.PricePlanPublished(
            plan_id="old", version=n + 1, plan=plan, operator_id="op"
        )
        assigned = billing.TenantPlanAssigned(
            tenant_id=tenant_id,
            plan_id="old",
            version=n + 1,
            effective_from=START + datetime.timedelta(days=n),
            operator_id="op",
        )
        await running_billing.publish(
            envelope(published, source=SOURCE, tenant_id=PLATFORM),
            envelope(assigned, source=SOURCE, tenant_id=tenant_id),
        )
    used = UsageRecorded(
        tenant_id=tenant_id,
        kind="tool",
        resource="t-priced",
        quantities={"calls": 1},
        used_at=START + datetime.timedelta(days=2),
    )
    await running_billing.publish(envelope(used, source=SOURCE, tenant_id=tenant_id))

    found = await running_billing.decided(tenant_id)
    assert (found.status, found.code) == (DraftStatus.REJECTED, "AMOUNT_OUT_OF_RANGE")
