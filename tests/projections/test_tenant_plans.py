"""A tenant's plans, one rule three ways: the typed state a decider keeps
(``tenant_plans.evolve``) and the read model's answers over real Postgres
(``plans.assignments`` before any position, ``invoices.drafted_periods``) agree for
random histories of assignments, withdrawals and drafts."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import invoices, plans
from projections.tenant_plans import TenantPlanFact, TenantPlans, evolve
from schemas import billing

from .billing_models import billing_models, recorded

START = datetime.datetime(2026, 9, 1, tzinfo=datetime.UTC)
TENANT = "tenant-p"
# A few instants (so that withdrawals and repeats meet the assignments they name).
INSTANTS = [START + datetime.timedelta(days=d) for d in (0, 20, 45, 70, 100)]
PERIODS = ["2026-09", "2026-10", "2026-11", "2026-12", "2027-01"]

facts = st.lists(
    st.one_of(
        st.builds(
            billing.TenantPlanAssigned,
            tenant_id=st.just(TENANT),
            plan_id=st.sampled_from(["a", "b"]),
            version=st.integers(1, 3),
            effective_from=st.sampled_from(INSTANTS),
            operator_id=st.just("op"),
        ),
        st.builds(
            billing.TenantPlanWithdrawn,
            tenant_id=st.just(TENANT),
            effective_from=st.sampled_from(INSTANTS),
            operator_id=st.just("op"),
        ),
        st.sampled_from(PERIODS).map(
            lambda period: billing.InvoiceDrafted(
                tenant_id=TENANT,
                invoice_id=f"inv-{period}",
                revision=1,
                request_id="r",
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
        ),
    ),
    max_size=14,
)


def _assignment(a: Any) -> tuple[datetime.datetime, str, int]:
    return (a.effective_from, a.plan_id, a.version)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts)
async def test_the_state_a_decider_folds_is_what_the_read_model_answers(
    history: list[TenantPlanFact],
) -> None:
    state = TenantPlans(TENANT)
    for offset, fact in enumerate(history):
        state = evolve(state, fact, offset)
    async with billing_models() as models:
        at = START - datetime.timedelta(days=1)
        await models.apply(*(recorded(f, at) for f in history))
        for before in [*range(len(history) + 1), None]:
            position = None if before is None else (0, before)
            stored = await plans.assignments(models.db, TENANT, before=position)
            folded = state.in_force(before)
            assert [_assignment(a) for a in stored] == [_assignment(a) for a in folded], before
        listed = await plans.assignments(models.db, TENANT, withdrawn=True)
        assert [(*_assignment(a), a.withdrawn_at is not None) for a in listed] == [
            (*_assignment(a), a.withdrawn_at is not None)
            for a in sorted(state.assignments.values(), key=lambda a: a.effective_from)
        ]
        for since in INSTANTS:
            drafted = await invoices.drafted_periods(models.db, TENANT, since)
            assert drafted == state.drafted_since(since)
