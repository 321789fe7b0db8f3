"""The billing API's refusals: each bad input gets its problem code, and nothing of it
is recorded on a topic."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from schemas import billing
from schemas.billing import PLATFORM, ModelRates, PricePlan, ToolRates
from schemas.envelope import Envelope, envelope
from schemas.usage import UsageRecorded

from .conftest import SOURCE, Api, problem
from .test_dashboard import _turn

PLAN: dict[str, Any] = {
    "plan_id": "std",
    "currency": "USD",
    "models": {"dev": {"input": "0.000002", "output": "0.00001"}},
    "tools": {"search": {"per_call": "0.01"}},
}
NOV = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


async def recorded(api: Api) -> list[Envelope[Any]]:
    """What the gateway recorded on the billing and usage topics."""
    return [*await api.records(api.catalog.billing), *await api.records(api.catalog.usage)]


async def publish_plan(api: Api, plan_id: str = "std", currency: str = "USD") -> None:
    plan = PricePlan(
        currency=currency, models={"dev": ModelRates(input=Decimal(1), output=Decimal(1))}
    )
    fact = billing.PricePlanPublished(plan_id=plan_id, version=1, plan=plan, operator_id="op")
    await api.fold(envelope(fact, source=SOURCE, tenant_id=PLATFORM))


async def assign(api: Api, effective_from: datetime.datetime, plan_id: str = "std") -> None:
    fact = billing.TenantPlanAssigned(
        tenant_id=api.tenant_id,
        plan_id=plan_id,
        version=1,
        effective_from=effective_from,
        operator_id="op",
    )
    await api.fold(api.fact(fact))


async def test_a_tenant_key_is_refused_on_admin_routes(api: Api) -> None:
    for method, path, body in (
        ("POST", "/v1/admin/price-plans", PLAN),
        ("GET", "/v1/admin/price-plans", None),
        ("GET", "/v1/admin/usage", None),
        ("POST", "/v1/invoices/drafts", {"tenant_id": api.tenant_id, "period": "2026-11"}),
    ):
        response = await api.http.request(method, path, json=body)
        assert problem(response, 403, "OPERATOR_REQUIRED")["detail"] == "send an operator's key"
    assert await recorded(api) == []


async def test_an_operator_key_is_refused_on_tenant_routes(api: Api) -> None:
    for path in ("/v1/agents", "/v1/usage"):
        response = await api.http.get(path, headers=api.as_operator)
        assert problem(response, 403, "TENANT_KEY_REQUIRED")["detail"] == "send a tenant's API key"


async def test_negative_or_non_numeric_rates_are_refused(api: Api) -> None:
    for rates in ({"input": "-0.1", "output": "0"}, {"input": "cheap", "output": "0"}):
        bad = {**PLAN, "models": {"dev": rates}}
        response = await api.http.post("/v1/admin/price-plans", json=bad, headers=api.as_operator)
        errors = problem(response, 422, "VALIDATION_FAILED")["errors"]
        assert [e["loc"][-2:] for e in errors] == [["dev", "input"]]
    bad_minimum = {**PLAN, "monthly_minimum": "NaN"}
    response = await api.http.post(
        "/v1/admin/price-plans", json=bad_minimum, headers=api.as_operator
    )
    errors = problem(response, 422, "VALIDATION_FAILED")["errors"]
    assert [e["loc"][-1] for e in errors] == ["monthly_minimum"]
    assert await recorded(api) == []


async def test_money_out_of_bounds_or_as_a_json_number_is_refused(api: Api) -> None:
    """Money is a string of at most 12 digits, a point and 12 more (docs/billing.md),
    wherever a plan carries it."""
    for bad in (
        "1e999999999",
        "1E-7",
        "1000000000000",  # 13 digits
        "0.0000000000001",  # 13 decimals
        " 1",
        "+1",
        "1.",
        ".5",
        "Infinity",
        "\uff11",  # a digit, but not an ASCII one
        0.5,
        1,
        1e308,
        True,
        None,
    ):
        for plan in (
            {**PLAN, "models": {"dev": {"input": bad, "output": "0"}}},
            {**PLAN, "models": {"dev": {"input": "0", "output": "0", "cached_input": bad}}},
            {**PLAN, "tools": {"search": {"per_call": bad}}},
            {**PLAN, "monthly_minimum": bad},
        ):
            response = await api.http.post(
                "/v1/admin/price-plans", json=plan, headers=api.as_operator
            )
            problem(response, 422, "VALIDATION_FAILED")
    for free in (-1, 10**15 + 1, 1.0, "5"):
        plan = {**PLAN, "tools": {"search": {"per_call": "1", "free_calls": free}}}
        response = await api.http.post("/v1/admin/price-plans", json=plan, headers=api.as_operator)
        problem(response, 422, "VALIDATION_FAILED")
    assert await recorded(api) == []


async def test_rates_are_served_in_plain_notation_as_they_are_hashed(api: Api) -> None:
    rates = ModelRates(input=Decimal("999999999999.999999999999"), output=Decimal("1E-12"))
    plan = PricePlan(currency="USD", models={"dev": rates}, monthly_minimum=Decimal("1E+3"))
    fact = billing.PricePlanPublished(plan_id="fine", version=1, plan=plan, operator_id="op")
    await api.fold(envelope(fact, source=SOURCE, tenant_id=PLATFORM))
    response = await api.http.get("/v1/admin/price-plans/fine", headers=api.as_operator)
    (served,) = response.json()
    assert served["models"]["dev"] == {
        "input": "999999999999.999999999999",
        "output": "0.000000000001",
        "cached_input": "0",
        "free_input_tokens": 0,
        "free_output_tokens": 0,
        "free_cached_input_tokens": 0,
    }
    assert served["monthly_minimum"] == "1000"


async def test_a_plan_recorded_before_rates_were_bounded_does_not_break_the_overview(
    api: Api,
) -> None:
    huge = PricePlan(currency="USD", tools={"search": ToolRates(per_call=Decimal("1e999999999"))})
    fact = billing.PricePlanPublished(plan_id="old", version=1, plan=huge, operator_id="op")
    await api.fold(envelope(fact, source=SOURCE, tenant_id=PLATFORM))
    await assign(api, datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1), "old")
    used = UsageRecorded(
        tenant_id=api.tenant_id,
        kind="tool",
        resource="search",
        quantities={"calls": 2},
        used_at=datetime.datetime.now(datetime.UTC),
    )
    await api.fold(api.fact(used), *_turn(api, 1, failed=False, took=datetime.timedelta(1)))
    response = await api.http.get("/dashboard/api/overview", headers=api.as_operator)
    assert response.status_code == 200, response.text
    (tenant,) = response.json()["tenants"]
    assert tenant["spent_today"] == "AMOUNT_OUT_OF_RANGE"


async def test_an_unknown_currency_is_refused(api: Api) -> None:
    response = await api.http.post(
        "/v1/admin/price-plans", json={**PLAN, "currency": "XYZ"}, headers=api.as_operator
    )
    assert "XYZ" in problem(response, 422, "CURRENCY_UNKNOWN")["detail"]
    assert await recorded(api) == []


async def test_negative_or_non_numeric_quantities_are_refused(api: Api) -> None:
    usage = {
        "tenant_id": api.tenant_id,
        "usage_id": "import-1",
        "kind": "tool",
        "resource": "search",
        "used_at": "2026-11-02T10:00:00Z",
    }
    for quantities in ({"calls": -1}, {"calls": "many"}, {"calls": 1.5}, {"furlongs": 1}):
        response = await api.http.post(
            "/v1/admin/usage", json={**usage, "quantities": quantities}, headers=api.as_operator
        )
        errors = problem(response, 422, "VALIDATION_FAILED")["errors"]
        assert [e["loc"][1] for e in errors] == ["quantities"]
    assert await recorded(api) == []


async def test_an_assignment_for_an_unknown_tenant_is_refused_before_it_is_recorded(
    api: Api,
) -> None:
    """Whether a plan can be assigned is the billing decider's to decide
    (tests/workers/test_plan_decisions.py); a tenant that does not exist is refused at
    the edge, and nothing is recorded."""
    for path in (
        "/v1/admin/tenants/no-such-tenant/plan",
        "/v1/admin/tenants/nope/plan/withdrawals",
    ):
        body = {"plan_id": "std", "version": 1, "effective_from": "2026-11-01T00:00:00Z"}
        if path.endswith("withdrawals"):
            body = {"effective_from": body["effective_from"]}
        response = await api.http.post(path, json=body, headers=api.as_operator)
        assert problem(response, 404, "TENANT_NOT_FOUND")["detail"].startswith("no tenant ")
    assert await recorded(api) == []


async def test_a_draft_for_an_unknown_tenant_is_refused(api: Api) -> None:
    response = await api.http.post(
        "/v1/invoices/drafts",
        json={"tenant_id": "no-such-tenant", "period": "2026-11"},
        headers=api.as_operator,
    )
    assert problem(response, 404, "TENANT_NOT_FOUND")["detail"] == "no tenant no-such-tenant"
    assert await recorded(api) == []


async def test_a_draft_of_a_period_in_the_future_is_refused(api: Api) -> None:
    await publish_plan(api)
    await assign(api, NOV)
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=40)
    response = await api.http.post(
        "/v1/invoices/drafts",
        json={"tenant_id": api.tenant_id, "period": future.strftime("%Y-%m")},
        headers=api.as_operator,
    )
    problem(response, 422, "PERIOD_IN_FUTURE")
    for period in ("2026-13", "26-11", "2026-1"):
        response = await api.http.post(
            "/v1/invoices/drafts",
            json={"tenant_id": api.tenant_id, "period": period},
            headers=api.as_operator,
        )
        problem(response, 422, "VALIDATION_FAILED")
    drafts = [
        e
        for e in await api.records(api.catalog.billing)
        if isinstance(e.data, billing.InvoiceDraftRequested)
    ]
    assert drafts == []


async def test_a_draft_of_a_period_without_a_plan_is_refused(api: Api) -> None:
    await publish_plan(api)
    await assign(api, NOV)
    response = await api.http.post(
        "/v1/invoices/drafts",
        json={"tenant_id": api.tenant_id, "period": "2026-10"},
        headers=api.as_operator,
    )
    assert problem(response, 409, "PLAN_MISSING")["detail"] == "the tenant has no plan in 2026-10"


async def test_a_tenant_cannot_read_another_tenants_invoice(api: Api) -> None:
    other = "tenant-other"
    drafted = billing.InvoiceDrafted(
        tenant_id=other,
        invoice_id="inv-other",
        revision=1,
        request_id="req-1",
        period="2026-11",
        currency="USD",
        lines=[],
        subtotal=Decimal(0),
        total=Decimal(0),
        plans=[],
        offsets={0: 0},
        usage_events=0,
        content_hash="0" * 64,
    )
    await api.fold(envelope(drafted, source=SOURCE, tenant_id=other))

    problem(await api.http.get("/v1/invoices/inv-other"), 404, "INVOICE_NOT_FOUND")
    problem(await api.http.get("/v1/invoices/inv-other/lines/1/usage"), 404, "INVOICE_NOT_FOUND")
    assert (await api.http.get("/v1/invoices")).json()["items"] == []
    as_operator = await api.http.get("/v1/invoices/inv-other", headers=api.as_operator)
    assert as_operator.status_code == 200, as_operator.text
    assert as_operator.json()["tenant_id"] == other
