"""Verifying invoice drafts: each draft computed again and compared with what was
recorded.

``verify_invoice`` reads nothing but the topics to compute (the usage events within the
draft's offsets, the plan versions, the tenant's assignments recorded before the
request) and compares with the live draft in the read models, so a tampered ledger row,
a lost event or a changed rule shows as a difference. ``verify_drafts`` computes every
draft of a schema again from that schema's own read models: a replay runs it on the
tables it rebuilt before offering to swap them in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import billing
from schemas.billing import PricePlan, period_bounds
from schemas.envelope import EnvelopeError, from_kafka
from schemas.errors import DomainError, ErrorCode
from schemas.usage import UsageRecorded, UsageRecordedV1, unbillable
from streams.catalog import Catalog
from streams.partitions import LogReader
from streams.settings import Settings

from . import invoices
from .database import Database
from .invoices import RevisionRow
from .pricing import Assignment, Draft, UsageItem, price
from .rebuild import BILLING_MODELS, OnProgress, RebuildMismatchError, RebuildReport, rebuild
from .rows import ALL_TENANTS, Reader
from .tenant_plans import TenantPlans, evolve
from .usage import LedgerRow

_USAGE_TYPES = (UsageRecorded.ce_type().encode(), UsageRecordedV1.ce_type().encode())


@dataclass
class Verification:
    invoice_id: str
    revision: int
    recorded_hash: str
    computed_hash: str
    recorded_total: str
    computed_total: str
    usage_events: int
    differences: list[str] = field(default_factory=list)
    # The tenant's usage records within the offsets that no draft counts, and why.
    not_counted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def compare(recorded: RevisionRow, computed: Draft) -> list[str]:
    """How a recorded revision differs from the draft computed again."""
    found = []
    if recorded.total != computed.total or recorded.subtotal != computed.subtotal:
        found.append(
            f"total: recorded {recorded.total} ({recorded.subtotal}),"
            f" computed {computed.total} ({computed.subtotal})"
        )
    before = {line.number: line for line in recorded.lines}
    for line in computed.lines:
        was = before.pop(line.number, None)
        if was != line:
            found.append(f"line {line.number}: recorded {_brief(was)}, computed {_brief(line)}")
    found += [f"line {n}: recorded {_brief(line)}, computed none" for n, line in before.items()]
    if recorded.usage_events != len(computed.usage_event_ids):
        found.append(
            f"usage events: recorded {recorded.usage_events},"
            f" computed {len(computed.usage_event_ids)}"
        )
    if recorded.content_hash != computed.content_hash:
        found.append(f"hash: recorded {recorded.content_hash}, computed {computed.content_hash}")
    return found


def _brief(line: billing.InvoiceLine | None) -> str:
    if line is None:
        return "none"
    return f"{line.kind} {line.resource} {line.unit}: {line.quantity} for {line.amount}"


class _BillingLog:
    """What the billing topic says: plan versions, each tenant's plans (per partition:
    offsets order one partition only) and draft requests."""

    def __init__(self) -> None:
        self.plans: dict[tuple[str, int], PricePlan] = {}
        self.tenants: dict[tuple[str, int], TenantPlans] = {}
        self.requests: dict[str, tuple[int, int]] = {}
        self.seen: set[str] = set()

    def add(self, record: Any) -> None:
        try:
            env = from_kafka(record.key, record.value, list(record.headers))
        except EnvelopeError:
            return
        if env.id in self.seen:  # a record written again: its first occurrence counts
            return
        self.seen.add(env.id)
        data = env.data
        if isinstance(data, billing.PricePlanPublished):
            self.plans.setdefault((data.plan_id, data.version), data.plan)
        elif isinstance(data, billing.TenantPlanAssigned | billing.TenantPlanWithdrawn):
            key = (data.tenant_id, record.partition)
            state = self.tenants.get(key) or TenantPlans(data.tenant_id)
            self.tenants[key] = evolve(state, data, record.offset)
        elif isinstance(data, billing.InvoiceDraftRequested):
            self.requests[env.id] = (record.partition, record.offset)

    def assignments_before(self, tenant_id: str, position: tuple[int, int]) -> list[Assignment]:
        """The tenant's assignments as they stood at ``position``: recorded before it,
        and not withdrawn (after they were recorded) before it either."""
        partition, before = position
        state = self.tenants.get((tenant_id, partition)) or TenantPlans(tenant_id)
        return [Assignment(a.effective_from, a.plan_id, a.version) for a in state.in_force(before)]


async def _read_topic(reader: LogReader, topic: str, ends: dict[int, int] | None = None) -> Any:
    tps = await reader.partitions(topic)
    found = await reader.ends(tps)
    limits = {tp: found[tp] if ends is None else ends.get(tp.partition, 0) for tp in tps}
    async for batch in reader.batches(dict.fromkeys(tps, 0), limits, max_records=5000):
        for record in batch:
            yield record


def _usage_item(record: Any, tenant_id: bytes) -> tuple[str, UsageItem] | str | None:
    """The tenant's usage event in ``record`` as pricing reads it; or why the record,
    the tenant's by its header, is not counted; or None for another tenant's record or
    type. A record not counted is one every consumer sets aside: unreadable (a payload
    naming another tenant included), or one billing cannot count (``unbillable``)."""
    headers = dict(record.headers)
    if headers.get("ce_tenantid") != tenant_id or headers.get("ce_type") not in _USAGE_TYPES:
        return None
    place = f"{record.topic}[{record.partition}]@{record.offset}"
    try:
        env = from_kafka(record.key, record.value, list(record.headers))
    except EnvelopeError as exc:
        return f"{place}: {exc}"
    data = env.data.upcast(env.time) if isinstance(env.data, UsageRecordedV1) else env.data
    reason = unbillable(data)
    if reason is not None:
        return f"{place} (event {env.id}): {ErrorCode.USAGE_UNBILLABLE}: {reason}"
    quantities = {str(unit): q for unit, q in data.quantities.items()}
    return env.id, UsageItem(env.id, data.kind, data.resource, quantities, data.used_at)


async def verify_invoice(
    settings: Settings, invoice_id: str, revision: int | None = None
) -> Verification:
    """Compute the live draft of ``invoice_id`` (its latest revision, or ``revision``)
    again from the topics alone, and compare; compare the ledger rows it counts with
    the log's events too."""
    catalog = Catalog.from_settings(settings)
    db = Database(settings.database_url, settings.billing_schema, pool_size=1)
    try:
        revisions = await invoices.revisions(db, ALL_TENANTS, invoice_id)
        chosen = revisions[-1] if revisions and revision is None else None
        chosen = chosen or next((r for r in revisions if r.revision == revision), None)
        if chosen is None:
            which = f" revision {revision}" if revision else ""
            raise LookupError(f"no invoice {invoice_id}{which}")
        start, end = period_bounds(chosen.period)
        ledger = await invoices.drafted_usage(db, chosen.tenant_id, start, end, chosen.offsets)
    finally:
        await db.close()
    log = _BillingLog()
    usage: dict[str, UsageItem] = {}
    not_counted: list[str] = []
    tenant = chosen.tenant_id.encode()
    async with LogReader(settings.kafka_bootstrap_servers) as reader:
        async for record in _read_topic(reader, catalog.billing):
            log.add(record)
        async for record in _read_topic(reader, catalog.usage, chosen.offsets):
            item = _usage_item(record, tenant)
            if isinstance(item, str):
                not_counted.append(item)
            elif item is not None:
                usage.setdefault(*item)
    request = log.requests.get(chosen.request_id)
    if request is None:
        raise LookupError(f"the request {chosen.request_id} is not on {catalog.billing}")
    in_period = {i.event_id: i for i in usage.values() if start <= i.used_at < end}
    try:
        computed = price(
            chosen.tenant_id,
            chosen.invoice_id,
            chosen.period,
            usage.values(),
            log.assignments_before(chosen.tenant_id, request),
            log.plans,
            chosen.offsets,
        )
    except DomainError as exc:
        return Verification(
            invoice_id=invoice_id,
            revision=chosen.revision,
            recorded_hash=chosen.content_hash,
            computed_hash="none",
            recorded_total=str(chosen.total),
            computed_total="none",
            usage_events=len(in_period),
            differences=[f"the topics give no draft: {exc.code}: {exc.detail}"],
            not_counted=not_counted,
        )
    return Verification(
        invoice_id=invoice_id,
        revision=chosen.revision,
        recorded_hash=chosen.content_hash,
        computed_hash=computed.content_hash,
        recorded_total=str(chosen.total),
        computed_total=str(computed.total),
        usage_events=len(computed.usage_event_ids),
        differences=[*compare(chosen, computed), *_ledger_differences(ledger, in_period)],
        not_counted=not_counted,
    )


def _ledger_differences(ledger: list[LedgerRow], log: dict[str, UsageItem]) -> list[str]:
    """How the ledger in Postgres differs from the usage events in the log."""
    found = []
    kept = {row.event_id: row for row in ledger}
    for event_id in sorted(kept.keys() | log.keys()):
        row, item = kept.get(event_id), log.get(event_id)
        if row is None:
            found.append(f"ledger: event {event_id} is in the log, not in the ledger")
        elif item is None:
            found.append(f"ledger: event {event_id} is in the ledger, not in the log")
        elif (row.kind, row.resource, row.quantities, row.used_at) != (
            item.kind,
            item.resource,
            {u: q for u, q in item.quantities.items()},
            item.used_at,
        ):
            found.append(
                f"ledger: event {event_id} reads {row.resource} {row.quantities} at"
                f" {row.used_at}; the log says {item.resource} {dict(item.quantities)}"
                f" at {item.used_at}"
            )
    return found


async def verify_drafts(db: Reader) -> list[str]:
    """Every revision of every invoice in ``db``'s schema, computed again from the same
    schema's ledger, plans and assignments; the differences found."""
    found: list[str] = []
    after: tuple[str, str] | None = None
    while True:
        page = await invoices.invoices(db, ALL_TENANTS, 500, after)
        for row in page:
            for revision in await invoices.revisions(db, ALL_TENANTS, row.invoice_id):
                request = await invoices.draft_request(db, ALL_TENANTS, revision.request_id)
                if request is None:
                    found.append(f"{row.invoice_id} r{revision.revision}: no request")
                    continue
                computed = await invoices.price_draft(
                    db,
                    revision.tenant_id,
                    revision.invoice_id,
                    revision.period,
                    (request.billing_partition, request.billing_offset),
                    revision.offsets,
                )
                found += [
                    f"{row.invoice_id} r{revision.revision}: {d}"
                    for d in compare(revision, computed)
                ]
        if len(page) < 500:
            return found
        after = (page[-1].period, page[-1].invoice_id)


async def replay_billing(
    settings: Settings,
    *,
    swap: bool,
    out: Callable[[str], None],
    on_progress: OnProgress | None = None,
) -> RebuildReport:
    """Rebuild the billing read models from offset 0 beside the live ones, compare them
    with the live tables, compute every draft again from the rebuilt ones, and swap
    them in with ``swap``; RebuildMismatchError with every difference otherwise."""

    async def check(schema: str) -> None:
        db = Database(settings.database_url, schema, pool_size=1)
        try:
            differences = await verify_drafts(db)
        finally:
            await db.close()
        if differences:
            raise RebuildMismatchError("drafts differ:\n" + "\n".join(differences))
        out("replay: every draft's totals and hash computed again: identical")

    return await rebuild(
        settings,
        swap=swap,
        out=out,
        models=BILLING_MODELS,
        check=check,
        on_progress=on_progress,
    )
