"""Pricing a tenant's usage of a period into an invoice draft: a pure function of the
usage events, the tenant's plan assignments and the plan versions they name.

The billing worker prices the ledger with it, ``agentlog billing verify`` prices events
read straight from the topics, and ``agentlog replay billing --plan`` prices the ledger
under a plan that was never published. docs/billing.md states the algorithm and the
canonical form of ``content_hash`` so that anyone can write their own verifier.
"""

from __future__ import annotations

import bisect
import datetime
import decimal
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from schemas.billing import (
    CURRENCIES,
    InvoiceLine,
    LineChange,
    PlanWindow,
    PricePlan,
    period_bounds,
    plain_writable,
)
from schemas.errors import DomainError, ErrorCode
from schemas.usage import UNITS, Unit, UsageKind

LINE_QUANTUM = Decimal("0.000001")  # line amounts: 1e-6, half-even
_CONTEXT = decimal.Context(prec=60, rounding=ROUND_HALF_EVEN)  # no product loses a digit


@dataclass(frozen=True, slots=True)
class UsageItem:
    """What pricing reads of a usage event."""

    event_id: str
    kind: UsageKind
    resource: str
    quantities: Mapping[str, int]
    used_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class Assignment:
    effective_from: datetime.datetime
    plan_id: str
    version: int


@dataclass(frozen=True)
class Draft:
    tenant_id: str
    invoice_id: str
    period: str
    currency: str
    lines: list[InvoiceLine]
    subtotal: Decimal
    total: Decimal
    plans: list[PlanWindow]
    offsets: dict[int, int]
    usage_event_ids: list[str] = field(repr=False)

    @property
    def content_hash(self) -> str:
        return content_hash(self)


@dataclass(frozen=True)
class _Window:
    start: datetime.datetime
    end: datetime.datetime
    plan_id: str | None = None
    version: int | None = None
    plan: PricePlan | None = None


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-CURRENCIES[currency])


def _windows(
    start: datetime.datetime,
    end: datetime.datetime,
    assignments: Iterable[Assignment],
    plans: Mapping[tuple[str, int], PricePlan],
) -> list[_Window]:
    """[start, end) cut where the plan in force changes; a stretch before the first
    assignment has no plan."""
    ordered = sorted(assignments, key=lambda a: a.effective_from)
    windows: list[_Window] = []
    cursor = start
    for i, a in enumerate(ordered):
        until = ordered[i + 1].effective_from if i + 1 < len(ordered) else end
        lo, hi = max(a.effective_from, start), min(until, end)
        if lo >= hi:
            continue
        if cursor < lo:
            windows.append(_Window(cursor, lo))
        windows.append(_Window(lo, hi, a.plan_id, a.version, plans[(a.plan_id, a.version)]))
        cursor = hi
    if cursor < end:
        windows.append(_Window(cursor, end))
    return windows


def price(
    tenant_id: str,
    invoice_id: str,
    period: str,
    usage: Iterable[UsageItem],
    assignments: Iterable[Assignment],
    plans: Mapping[tuple[str, int], PricePlan],
    offsets: Mapping[int, int],
) -> Draft:
    """The draft of ``period`` over ``usage`` (the tenant's events of the ``offsets``;
    events outside the period are left out, a repeated event id counts once).
    DomainError when it cannot be drafted: no plan, two currencies, or an amount beyond
    what can be priced (rates recorded before the API bounded them)."""
    try:
        with decimal.localcontext(_CONTEXT):  # sums too: the default context has 28 digits
            return _price(tenant_id, invoice_id, period, usage, assignments, plans, offsets)
    except decimal.DecimalException:
        raise DomainError(
            ErrorCode.AMOUNT_OUT_OF_RANGE,
            f"an amount of {period} is beyond {_CONTEXT.prec} significant digits",
        ) from None


def _price(
    tenant_id: str,
    invoice_id: str,
    period: str,
    usage: Iterable[UsageItem],
    assignments: Iterable[Assignment],
    plans: Mapping[tuple[str, int], PricePlan],
    offsets: Mapping[int, int],
) -> Draft:
    start, end = period_bounds(period)
    windows = _windows(start, end, assignments, plans)
    planned = [w for w in windows if w.plan is not None]
    currency = _currency(planned, period)
    counts, counted = _count(usage, windows, start, end)
    lines = [_priced(n, windows, key, counts[key]) for n, key in enumerate(sorted(counts), 1)]
    subtotal = sum((line.amount for line in lines), Decimal("0.000000"))
    minimum = _minimum(planned[-1], subtotal, start, end, len(lines) + 1)
    if minimum is not None:
        lines.append(minimum)
        subtotal += minimum.amount
    return Draft(
        tenant_id=tenant_id,
        invoice_id=invoice_id,
        period=period,
        currency=currency,
        lines=lines,
        subtotal=subtotal,
        total=subtotal.quantize(minor_unit(currency), ROUND_HALF_EVEN),
        plans=[
            PlanWindow(plan_id=w.plan_id, version=w.version, start=w.start, end=w.end)
            for w in planned
            if w.plan_id is not None and w.version is not None
        ],
        offsets=dict(sorted(offsets.items())),
        usage_event_ids=sorted(counted),
    )


def _currency(planned: list[_Window], period: str) -> str:
    """The one currency the period's plans charge in; DomainError if there is no plan
    or there are two currencies."""
    if not planned:
        raise DomainError(ErrorCode.PLAN_MISSING, f"the tenant has no price plan in {period}")
    currencies = {w.plan.currency for w in planned if w.plan is not None}
    if len(currencies) != 1:
        raise DomainError(
            ErrorCode.CURRENCY_MISMATCH, f"plans in {period} charge in {sorted(currencies)}"
        )
    (currency,) = currencies
    return currency


# A line before pricing: its window (an index into the windows), kind, resource and unit.
_LineKey = tuple[int, UsageKind, str, Unit]
_UNITS = frozenset(UNITS)


@dataclass(slots=True)
class _Count:
    quantity: int = 0
    events: int = 0  # how many usage events the quantity came from


def _count(
    usage: Iterable[UsageItem],
    windows: list[_Window],
    start: datetime.datetime,
    end: datetime.datetime,
) -> tuple[dict[_LineKey, _Count], set[str]]:
    """The usage of [start, end) summed into a line per window, kind, resource and unit,
    and the ids of the events counted: an event used outside the period is left out, a
    repeated event id counts once."""
    counts: dict[_LineKey, _Count] = {}
    counted: set[str] = set()
    ends = [w.end for w in windows]  # the windows tile [start, end) in order
    for item in usage:
        used_at = item.used_at
        if item.event_id in counted or not start <= used_at < end:
            continue
        counted.add(item.event_id)
        w = bisect.bisect_right(ends, used_at)  # the window the event was used in
        for unit, quantity in item.quantities.items():
            if quantity and unit in _UNITS:
                count = counts.get((w, item.kind, item.resource, unit))
                if count is None:
                    count = counts[(w, item.kind, item.resource, unit)] = _Count()
                count.quantity += quantity
                count.events += 1
    return counts, counted


def _priced(number: int, windows: list[_Window], key: _LineKey, count: _Count) -> InvoiceLine:
    """Line ``number``: the count priced at its window's plan's rate after the rate's
    free units (a unit the plan has no rate for, or a window without a plan, is listed
    at 0, ``unpriced``)."""
    w, kind, resource, unit = key
    window = windows[w]
    rate = window.plan.rate(kind, resource, unit) if window.plan else None
    unit_price, free = rate if rate is not None else (Decimal(0), 0)
    if not plain_writable(unit_price):  # the canonical form writes it out in full
        raise decimal.Overflow(f"the rate of {resource} {unit}")
    billable = max(count.quantity - free, 0)
    amount = _CONTEXT.multiply(Decimal(billable), unit_price).quantize(
        LINE_QUANTUM, ROUND_HALF_EVEN, _CONTEXT
    )
    return InvoiceLine(
        number=number,
        kind=kind,
        resource=resource,
        unit=unit,
        plan_id=window.plan_id,
        plan_version=window.version,
        window_start=window.start,
        window_end=window.end,
        quantity=count.quantity,
        free=min(free, count.quantity),
        billable=billable,
        unit_price=unit_price,
        amount=amount,
        unpriced=rate is None,
        events=count.events,
    )


def _minimum(
    last: _Window,
    subtotal: Decimal,
    start: datetime.datetime,
    end: datetime.datetime,
    number: int,
) -> InvoiceLine | None:
    """Line ``number``, the shortfall of ``subtotal`` below the monthly minimum of the
    plan in force at the end of the period (``last``), if it falls short."""
    assert last.plan is not None
    if subtotal >= last.plan.monthly_minimum:
        return None
    shortfall = (last.plan.monthly_minimum - subtotal).quantize(LINE_QUANTUM, ROUND_HALF_EVEN)
    return InvoiceLine(
        number=number,
        kind="minimum",
        resource="",
        unit="commitment",
        plan_id=last.plan_id,
        plan_version=last.version,
        window_start=start,
        window_end=end,
        quantity=1,
        free=0,
        billable=1,
        unit_price=shortfall,
        amount=shortfall,
        unpriced=False,
        events=0,
    )


def list_cost(plan: PricePlan, usage: Iterable[tuple[UsageKind, str, Unit, int]]) -> Decimal:
    """What ``usage`` ((kind, resource, unit, quantity)) costs at the plan's rates, before
    the free allowances and the minimum of its period: what was spent, not what will be
    billed (an invoice draft is that)."""
    cost = Decimal("0.000000")
    try:
        with decimal.localcontext(_CONTEXT):
            for kind, resource, unit, quantity in usage:
                rate = plan.rate(kind, resource, unit)
                if rate is not None:
                    cost += Decimal(quantity) * rate[0]
            return cost.quantize(LINE_QUANTUM)
    except decimal.DecimalException:
        raise DomainError(
            ErrorCode.AMOUNT_OUT_OF_RANGE, f"beyond {_CONTEXT.prec} significant digits"
        ) from None


# -- the canonical form ---------------------------------------------------------------


def _time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rate(value: Decimal) -> str:
    """A rate in plain notation, without trailing zeros (``0.000002``, ``10``)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _amount(value: Decimal, places: int) -> str:
    """An amount in plain notation with exactly ``places`` decimals (``4.990000``)."""
    return format(value.quantize(Decimal(1).scaleb(-places), context=_CONTEXT), "f")


def _line(line: InvoiceLine) -> dict[str, Any]:
    return {
        "number": line.number,
        "kind": line.kind,
        "resource": line.resource,
        "unit": line.unit,
        "plan_id": line.plan_id,
        "plan_version": line.plan_version,
        "window_start": _time(line.window_start),
        "window_end": _time(line.window_end),
        "quantity": line.quantity,
        "free": line.free,
        "billable": line.billable,
        "unit_price": _rate(line.unit_price),
        "amount": _amount(line.amount, 6),
        "unpriced": line.unpriced,
        "events": line.events,
    }


def canonical_form(draft: Draft) -> bytes:
    """The bytes ``content_hash`` is the sha256 of: JSON with sorted keys and no
    whitespace, decimals as plain-notation strings, times in UTC with microseconds."""
    document = {
        "tenant_id": draft.tenant_id,
        "invoice_id": draft.invoice_id,
        "period": draft.period,
        "currency": draft.currency,
        "lines": [_line(line) for line in draft.lines],
        "subtotal": _amount(draft.subtotal, 6),
        "total": _amount(draft.total, CURRENCIES[draft.currency]),
        "plans": [
            {
                "plan_id": p.plan_id,
                "version": p.version,
                "start": _time(p.start),
                "end": _time(p.end),
            }
            for p in draft.plans
        ],
        "offsets": {str(p): end for p, end in sorted(draft.offsets.items())},
        "usage_event_ids": draft.usage_event_ids,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(draft: Draft) -> str:
    return hashlib.sha256(canonical_form(draft)).hexdigest()


def changes(before: Iterable[InvoiceLine], after: Iterable[InvoiceLine]) -> list[LineChange]:
    """The lines whose quantity or amount differ between two revisions (a line only one
    has counts as zero in the other)."""

    def key(line: InvoiceLine) -> tuple[str, str, str, int | None, datetime.datetime]:
        return (line.kind, line.resource, line.unit, line.plan_version, line.window_start)

    old = {key(line): line for line in before}
    new = {key(line): line for line in after}
    found = []
    for k in sorted(old.keys() | new.keys(), key=lambda k: (k[4], k[0], k[1], k[2], k[3] or 0)):
        a, b = old.get(k), new.get(k)
        quantities = (a.quantity if a else 0, b.quantity if b else 0)
        amounts = (a.amount if a else Decimal(0), b.amount if b else Decimal(0))
        if quantities[0] != quantities[1] or amounts[0] != amounts[1]:
            found.append(
                LineChange(
                    kind=k[0],
                    resource=k[1],
                    unit=k[2],
                    plan_version=k[3],
                    window_start=k[4],
                    quantity_before=quantities[0],
                    quantity_after=quantities[1],
                    amount_before=amounts[0],
                    amount_after=amounts[1],
                )
            )
    return found
