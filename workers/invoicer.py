"""The invoicer: drafts invoices on request (``InvoiceDraftRequested``) from the billing
read models, and records each draft as a revision (``InvoiceDrafted``) or a rejection.

Before it reads, it fences: it waits until the billing projection has applied every
usage record and every billing record written so far. A draft counts exactly the usage
events before those usage offsets, which it records, so that anyone can recount them
from the topics; plan assignments count only if recorded before the request. It is the
single writer of drafts per tenant: requests are keyed by tenant.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from projections import invoices
from projections.database import Database
from projections.ops import BILLING
from projections.pricing import changes
from projections.waiter import Waiter
from schemas import billing
from schemas.billing import InvoiceLine
from schemas.envelope import Envelope
from schemas.errors import DomainError, ErrorCode
from streams.catalog import Catalog
from streams.handler import (
    Ack,
    Closes,
    Item,
    Position,
    RecordsUnprocessable,
    WatchesPublished,
)
from streams.partitions import LogReader

from . import lazy_role_app, plan_decider

SOURCE = "/workers/invoicer"
FENCE_WAIT_S = 60.0


class Invoicer(WatchesPublished, RecordsUnprocessable, Closes):
    """The billing decider: it drafts invoices, and decides plan requests
    (``plan_decider``). Both are keyed by tenant (plans by plan): one writer per key."""

    name = "invoicer"
    types = frozenset({billing.InvoiceDraftRequested.ce_type()}) | plan_decider.TYPES

    def __init__(self, bootstrap_servers: str, catalog: Catalog, db: Database) -> None:
        self.catalog = catalog
        self.topics = (catalog.billing,)
        self.db = db
        self.waiter = Waiter(db, projection=BILLING)
        self.plans = plan_decider.PlanDecider(
            bootstrap_servers, catalog, db, group_id=catalog.group_id(self.name)
        )
        self._log = LogReader(bootstrap_servers)
        self._started = False
        self._assigned: list[TopicPartition] = []
        # Outcomes the plan decider folded that are not known to be in the log yet: if
        # their batch fails (to be decided again, or set aside), its state is loaded again.
        self._unwritten = False

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._log.forget_partitions()
        self._assigned = partitions
        self._unwritten = False
        return await self.plans.on_assigned(partitions)

    def published(self, acks: list[Ack]) -> None:
        """The batch's outcomes are in the log: what the plan decider folded of them
        stands."""
        self._unwritten = False

    async def _fence(self) -> dict[int, int]:
        """Wait until the billing projection has applied the usage and billing topics up
        to their ends as of now; return the usage topic's ends (partition → offset)."""
        if not self._started:
            await self._log.start()
            self._started = True
        usage = await self._log.ends(await self._log.partitions(self.catalog.usage))
        own = await self._log.ends(await self._log.partitions(self.catalog.billing))
        async with self.waiter.listening():
            await self.waiter.until_positions(
                [(tp.topic, tp.partition, end - 1) for tp, end in (usage | own).items() if end > 0],
                timeout=FENCE_WAIT_S,
            )
        return {tp.partition: end for tp, end in sorted(usage.items())}

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        if self._unwritten:  # the last batch failed after it was decided: not in the log
            await self.plans.on_assigned(self._assigned)
            self._unwritten = False
        drafts = any(isinstance(env.data, billing.InvoiceDraftRequested) for env, _ in items)
        usage_ends = await self._fence() if drafts else {}
        outputs: list[Envelope[Any]] = []
        latest: dict[str, tuple[int, list[InvoiceLine]]] = {}  # drafted in this batch
        for env, position in items:
            if not isinstance(env.data, billing.InvoiceDraftRequested):
                outcome = await self.plans.handle((env, position))
                if outcome is not None:
                    self._unwritten = True
                    outputs.append(outcome)
                continue
            if self.plans.decided(env.id):
                continue  # drafted before a crash or rebalance: the draft is in the log
            req: billing.InvoiceDraftRequested = env.data
            fact: billing.InvoiceDrafted | billing.InvoiceDraftRejected
            try:
                fact = await self._draft(env, position, usage_ends, latest)
            except DomainError as exc:
                fact = billing.InvoiceDraftRejected(
                    tenant_id=req.tenant_id,
                    invoice_id=req.invoice_id,
                    request_id=env.id,
                    code=exc.code,
                    detail=exc.detail,
                )
            else:
                latest[req.invoice_id] = (fact.revision, fact.lines)
            drafted = env.follow(fact, step="draft", source=SOURCE)
            self._unwritten = True
            self.plans.fold_own(drafted, position.offset + 1)  # a drafted month, at once
            outputs.append(drafted)
        return outputs

    def unprocessable(self, env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
        """A request the invoicer kept failing on (it went to the dead-letter topic) is
        rejected, so that it is not ``requested`` for ever; a plan request likewise."""
        if not isinstance(env.data, billing.InvoiceDraftRequested):
            return plan_decider.unprocessable(env, reason)
        req: billing.InvoiceDraftRequested = env.data
        fact = billing.InvoiceDraftRejected(
            tenant_id=req.tenant_id,
            invoice_id=req.invoice_id,
            request_id=env.id,
            code=ErrorCode.DRAFT_UNPROCESSABLE,
            detail=reason,
        )
        return [env.follow(fact, step="draft", source=SOURCE)]

    async def _draft(
        self,
        env: Envelope[Any],
        position: Position,
        usage_ends: dict[int, int],
        latest: dict[str, tuple[int, list[InvoiceLine]]],
    ) -> billing.InvoiceDrafted:
        req: billing.InvoiceDraftRequested = env.data
        draft = await invoices.price_draft(
            self.db,
            req.tenant_id,
            req.invoice_id,
            req.period,
            (position.partition, position.offset),
            usage_ends,
        )
        before = latest.get(req.invoice_id)
        if before is None:
            revisions = await invoices.revisions(self.db, req.tenant_id, req.invoice_id)
            before = (revisions[-1].revision, revisions[-1].lines) if revisions else (0, [])
        return billing.InvoiceDrafted(
            tenant_id=req.tenant_id,
            invoice_id=req.invoice_id,
            revision=before[0] + 1,
            request_id=env.id,
            period=req.period,
            currency=draft.currency,
            lines=draft.lines,
            subtotal=draft.subtotal,
            total=draft.total,
            plans=draft.plans,
            offsets=draft.offsets,
            usage_events=len(draft.usage_event_ids),
            content_hash=draft.content_hash,
            changes=changes(before[1], draft.lines),
        )

    async def close(self) -> None:
        await self.plans.close()
        if self._started:
            await self._log.stop()
        await self.db.close()


__getattr__ = lazy_role_app("invoicer")
