"""A tenant's plans as its billing facts make them: its assignments, which were
withdrawn, and the periods drafted. The one typed state and ``evolve`` that the plans
decider keeps in memory, the verifier folds from the topic, and the read model's
queries (``plans.assignments``, ``invoices.drafted_periods``) answer: the same rule in
each, pinned by a property test.

Positions matter: a tenant's billing facts are keyed by the tenant, so they are in one
partition, ordered by offset. An assignment counts from its record; a withdrawal
withdraws the assignment of its instant recorded before it (the first such withdrawal
counts); a draft request sees what was recorded before it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace

from schemas import billing
from schemas.billing import period_bounds

TenantPlanFact = billing.TenantPlanAssigned | billing.TenantPlanWithdrawn | billing.InvoiceDrafted


@dataclass(frozen=True, slots=True)
class Assigned:
    """One assignment: the plan version in force from ``effective_from``, recorded at
    ``offset``, withdrawn by the record at ``withdrawn_at`` (if any)."""

    effective_from: datetime.datetime
    plan_id: str
    version: int
    offset: int
    withdrawn_at: int | None = None

    def counts_before(self, offset: int | None) -> bool:
        """Whether it was in force just before ``offset`` (None: now)."""
        if offset is not None and self.offset >= offset:
            return False
        return self.withdrawn_at is None or (offset is not None and self.withdrawn_at >= offset)


@dataclass(frozen=True)
class TenantPlans:
    tenant_id: str
    # By effective instant; an instant names one assignment for good (the first).
    assignments: dict[datetime.datetime, Assigned] = field(default_factory=dict)
    drafted: frozenset[str] = frozenset()

    def in_force(self, before: int | None = None) -> list[Assigned]:
        """The assignments in force (before the record at offset ``before``), in order
        of effective time."""
        return sorted(
            (a for a in self.assignments.values() if a.counts_before(before)),
            key=lambda a: a.effective_from,
        )

    def drafted_since(self, since: datetime.datetime) -> list[str]:
        """The drafted periods that end after ``since``: those a change of plan
        effective from ``since`` prices again."""
        return sorted(p for p in self.drafted if _ends_after(p, since))


def evolve(state: TenantPlans, fact: TenantPlanFact, offset: int) -> TenantPlans:
    """The tenant's plans after ``fact``, recorded at ``offset`` of its partition. Each
    fact is folded once (by event id, as every fold is)."""
    if isinstance(fact, billing.TenantPlanAssigned):
        if fact.effective_from in state.assignments:
            return state  # the instant's first assignment stays
        added = Assigned(fact.effective_from, fact.plan_id, fact.version, offset)
        return replace(state, assignments={**state.assignments, fact.effective_from: added})
    if isinstance(fact, billing.TenantPlanWithdrawn):
        found = state.assignments.get(fact.effective_from)
        if found is None or found.withdrawn_at is not None:
            return state  # nothing recorded before it to withdraw, or withdrawn already
        withdrawn = replace(found, withdrawn_at=offset)
        return replace(state, assignments={**state.assignments, fact.effective_from: withdrawn})
    return replace(state, drafted=state.drafted | {fact.period})


def _ends_after(period: str, since: datetime.datetime) -> bool:
    """Whether ``period`` ends after ``since``; a period no month names (written to the
    log by another producer) is no month a plan change could price again."""
    try:
        return period_bounds(period)[1] > since
    except ValueError:
        return False
