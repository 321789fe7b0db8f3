"""Pricing, as plain values: lines per plan window, rates, allowances, minimums,
rounding, unpriced usage, and the content hash."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import random
from decimal import Decimal

import pytest

from projections.pricing import (
    Assignment,
    UsageItem,
    canonical_form,
    changes,
    list_cost,
    price,
)
from schemas.billing import ModelRates, PricePlan, ToolRates
from schemas.errors import DomainError, ErrorCode

UTC = datetime.UTC
PLAN = PricePlan(
    currency="USD",
    models={"dev": ModelRates(input=Decimal("0.000002"), output=Decimal("0.00001"))},
    tools={"search": ToolRates(per_call=Decimal("0.01"))},
)
NOV = datetime.datetime(2026, 11, 1, tzinfo=UTC)


def at(day: int, hour: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 11, day, hour, tzinfo=UTC)


def model(event_id: str, when: datetime.datetime, **quantities: int) -> UsageItem:
    return UsageItem(event_id, "model", "dev", quantities, when)


def tool(event_id: str, when: datetime.datetime, name: str = "search") -> UsageItem:
    return UsageItem(event_id, "tool", name, {"calls": 1}, when)


def draft(usage: list[UsageItem], plans: dict[tuple[str, int], PricePlan] | None = None, **kw):  # type: ignore[no-untyped-def]
    assignments = kw.pop("assignments", [Assignment(NOV, "std", 1)])
    return price("t-1", "inv-1", "2026-11", usage, assignments, plans or {("std", 1): PLAN}, {0: 9})


def test_lines_are_quantity_times_rate_and_the_total_rounds_half_even() -> None:
    d = draft(
        [
            model("e1", at(2), input_tokens=1000, output_tokens=250),
            model("e2", at(3), input_tokens=1500, output_tokens=1),
            tool("e3", at(4)),
        ]
    )

    priced = [(line.resource, line.unit, line.quantity, line.amount) for line in d.lines]
    assert priced == [
        ("dev", "input_tokens", 2500, Decimal("0.005000")),
        ("dev", "output_tokens", 251, Decimal("0.002510")),
        ("search", "calls", 1, Decimal("0.010000")),
    ]
    assert d.subtotal == Decimal("0.017510")
    assert (d.total, d.currency) == (Decimal("0.02"), "USD")
    assert [line.number for line in d.lines] == [1, 2, 3]
    assert d.usage_event_ids == ["e1", "e2", "e3"]


def test_a_quantity_in_a_unit_billing_does_not_know_is_left_out() -> None:
    d = draft([model("e1", at(2), input_tokens=10, pages=3, output_tokens=0)])

    assert [(line.unit, line.quantity) for line in d.lines] == [("input_tokens", 10)]


def test_a_line_amount_rounds_to_a_millionth_half_even() -> None:
    plan = PricePlan(
        currency="USD", models={"dev": ModelRates(input=Decimal("0.0000005"), output=Decimal(0))}
    )
    # 1 * 0.0000005 = 0.0000005 rounds half-even to 0.000000; 3 * it = 0.0000015 to 0.000002.
    d1 = draft([model("e1", at(2), input_tokens=1)], {("std", 1): plan})
    d3 = draft([model("e1", at(2), input_tokens=3)], {("std", 1): plan})

    assert (d1.lines[0].amount, d3.lines[0].amount) == (Decimal("0.000000"), Decimal("0.000002"))


def test_usage_is_priced_by_the_plan_version_in_force_when_it_was_used() -> None:
    dearer = PLAN.model_copy(
        update={"models": {"dev": ModelRates(input=Decimal("0.000004"), output=Decimal(0))}}
    )
    assignments = [Assignment(NOV, "std", 1), Assignment(at(15), "std", 2)]
    d = draft(
        [model("before", at(14, 23), input_tokens=100), model("after", at(15), input_tokens=100)],
        {("std", 1): PLAN, ("std", 2): dearer},
        assignments=assignments,
    )

    assert [(line.plan_version, line.amount) for line in d.lines] == [
        (1, Decimal("0.000200")),
        (2, Decimal("0.000400")),
    ]
    assert [(w.version, w.start, w.end) for w in d.plans] == [
        (1, NOV, at(15)),
        (2, at(15), datetime.datetime(2026, 12, 1, tzinfo=UTC)),
    ]


def test_usage_without_a_rate_or_a_plan_is_listed_unpriced_at_zero() -> None:
    d = draft(
        [tool("e1", at(1), name="unknown-tool"), model("e2", at(20), input_tokens=10)],
        assignments=[Assignment(at(10), "std", 1)],
    )

    unpriced = [(line.resource, line.plan_id, line.amount) for line in d.lines if line.unpriced]
    assert unpriced == [("unknown-tool", None, Decimal(0))]
    assert [line.resource for line in d.lines if not line.unpriced] == ["dev"]


def test_free_allowances_come_off_the_quantity() -> None:
    plan = PricePlan(
        currency="EUR",
        models={"dev": ModelRates(input=Decimal("0.001"), output=Decimal(0), free_input_tokens=40)},
    )
    d = draft([model("e1", at(2), input_tokens=100)], {("std", 1): plan})

    (line,) = d.lines
    assert (line.quantity, line.free, line.billable, line.amount) == (100, 40, 60, Decimal("0.06"))


def test_a_monthly_minimum_adds_the_shortfall_as_a_line() -> None:
    plan = PLAN.model_copy(update={"monthly_minimum": Decimal("5")})
    d = draft([tool("e1", at(2))], {("std", 1): plan})

    assert [(line.kind, line.amount) for line in d.lines] == [
        ("tool", Decimal("0.010000")),
        ("minimum", Decimal("4.990000")),
    ]
    assert d.total == Decimal("5.00")


def test_a_repeated_event_counts_once_and_usage_outside_the_period_not_at_all() -> None:
    d = draft(
        [
            tool("e1", at(2)),
            tool("e1", at(2)),
            tool("october", datetime.datetime(2026, 10, 31, 23, 59, tzinfo=UTC)),
            tool("december", datetime.datetime(2026, 12, 1, tzinfo=UTC)),
        ]
    )

    assert [line.quantity for line in d.lines] == [1]
    assert d.usage_event_ids == ["e1"]


def test_a_period_without_a_plan_is_refused() -> None:
    december = datetime.datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(DomainError) as refused:
        draft([tool("e1", at(2))], assignments=[Assignment(december, "std", 1)])

    assert refused.value.code is ErrorCode.PLAN_MISSING


def test_the_hash_is_of_the_canonical_form_and_ignores_the_order_of_usage() -> None:
    usage = [model(f"e{i}", at(1 + i % 28), input_tokens=i, output_tokens=1) for i in range(50)]
    first = draft(usage)
    random.Random(7).shuffle(usage)
    again = draft(usage)

    assert first.content_hash == again.content_hash
    assert first.content_hash == hashlib.sha256(canonical_form(first)).hexdigest()
    document = json.loads(canonical_form(first))
    assert document["usage_event_ids"] == sorted(f"e{i}" for i in range(50))
    # 1225 input tokens at 0.000002 and 50 output tokens at 0.00001: 0.00295, which
    # rounds to 0.00 (amounts keep their places: 6 on lines, the currency's on totals).
    assert document["subtotal"] == "0.002950"
    assert (document["total"], document["lines"][0]["unit_price"]) == ("0.00", "0.000002")
    assert (
        canonical_form(first)
        == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


def test_doubling_a_rate_doubles_exactly_the_lines_it_prices() -> None:
    usage = [model("e1", at(2), input_tokens=777, output_tokens=5), tool("e2", at(3))]
    doubled = PLAN.model_copy(
        update={"models": {"dev": ModelRates(input=Decimal("0.000004"), output=Decimal("0.00001"))}}
    )
    before, after = draft(usage), draft(usage, {("std", 1): doubled})

    pairs = [(a.unit, a.amount, b.amount) for a, b in zip(before.lines, after.lines, strict=True)]
    assert pairs == [
        ("input_tokens", Decimal("0.001554"), Decimal("0.003108")),
        ("output_tokens", Decimal("0.000050"), Decimal("0.000050")),
        ("calls", Decimal("0.010000"), Decimal("0.010000")),
    ]


def test_changes_list_the_lines_that_moved() -> None:
    before = draft([tool("e1", at(2))])
    after = draft([tool("e1", at(2)), tool("late", at(3)), model("m", at(4), input_tokens=5)])

    moved = [
        (c.unit, c.quantity_before, c.quantity_after) for c in changes(before.lines, after.lines)
    ]
    assert moved == [("input_tokens", 0, 5), ("calls", 1, 2)]
    assert changes(after.lines, after.lines) == []


def test_sums_at_the_bounds_of_intake_stay_exact() -> None:
    """The largest quantities times the largest rates the API takes: every line and the
    sum of them is exact to the millionth (the default decimal context keeps 28 digits,
    and would round a subtotal like this one without a word)."""
    rate = Decimal("999999999999.999999999999")
    plan = PricePlan(currency="USD", models={"dev": ModelRates(input=rate, output=rate)})
    usage = [model(f"e{n}", at(2), input_tokens=10**15, output_tokens=10**15 - n) for n in range(3)]
    d = draft(usage, {("std", 1): plan})

    with decimal.localcontext(prec=80):
        exact = sum((q * rate for q in (3 * 10**15, 3 * 10**15 - 3)), Decimal(0))
        assert d.subtotal == exact.quantize(Decimal("0.000001"))
        assert d.total == exact.quantize(Decimal("0.01"))
    assert len(str(d.subtotal).replace(".", "")) > 28
    assert json.loads(canonical_form(d))["subtotal"] == format(d.subtotal, "f")


@pytest.mark.parametrize(
    "rate",
    [Decimal("1e999999999"), Decimal("1e61"), Decimal("9" * 70), Decimal("1e-999999999")],
    ids=["huge", "e61", "70-nines", "tiny"],
)
def test_an_amount_or_rate_beyond_what_can_be_priced_is_refused_with_its_code(
    rate: Decimal,
) -> None:
    """Rates recorded before the API bounded them: the draft is refused, never
    dead-lettered, and never written out in a billion digits."""
    plan = PricePlan(currency="USD", tools={"search": ToolRates(per_call=rate)})
    with pytest.raises(DomainError) as refused:
        draft([tool("e1", at(2))], {("std", 1): plan})
    assert refused.value.code == ErrorCode.AMOUNT_OUT_OF_RANGE
    assert len(plan.model_dump_json()) < 1000
    if rate > 1:
        with pytest.raises(DomainError) as refused:
            list_cost(plan, [("tool", "search", "calls", 1)])
        assert refused.value.code == ErrorCode.AMOUNT_OUT_OF_RANGE
