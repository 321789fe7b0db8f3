"""Every id and time the API takes is checked as the request is read: an id with a
control character or too long, and a time or period outside what billing counts, get a
422 problem naming the field, on every operation that takes one, with either key;
nothing reaches Postgres or datetime arithmetic, so none is a 500."""

from __future__ import annotations

import asyncio
import urllib.parse
from decimal import Decimal
from typing import Any

import pytest

from schemas import billing, billing_requests
from schemas.billing import PLATFORM, ModelRates, PricePlan
from schemas.envelope import envelope

from .conftest import SOURCE, Api, problem

# Control characters (C0, DEL, C1), alone and within an id, and an id one too long.
BAD_IDS = ["\x00", "a\x00b", "\x01", "x\x1f", "\x7f", "a\x85", "\x9f", "a" * 201]


async def operations(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation the OpenAPI document lists."""
    document = (await api.http.get("/openapi.json")).json()
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def _keys(api: Api) -> list[dict[str, str]]:
    return [{}, api.as_operator]  # the tenant's key (the client's default), an operator's


async def _refused(api: Api, method: str, url: str, loc: list[str], **sent: Any) -> None:
    """``url`` answers no 5xx with either key, and with one of them a 422 naming ``loc``."""
    named: list[list[str]] = []
    for headers in _keys(api):
        response = await api.http.request(method, url, headers=headers, **sent)
        assert response.status_code < 500, (method, url, response.text)
        if response.status_code == 422:
            errors = problem(response, 422, "VALIDATION_FAILED")["errors"]
            named.extend(e["loc"] for e in errors)
    assert loc in named, (method, url, named)


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
async def test_a_bad_id_in_any_path_or_query_is_a_422_problem(api: Api, bad: str) -> None:
    tested: set[Any] = set()
    for method, path, operation in await operations(api):
        if path.endswith("/stream"):
            continue  # answers before it streams, but tested below with a real session
        for param in operation.get("parameters", []):
            if not param["name"].endswith("_id"):
                continue
            names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            values = {name: "1" for name in names} | {param["name"]: bad}
            url = path.format(**{k: urllib.parse.quote(v, safe="") for k, v in values.items()})
            if param["in"] == "query":
                url += "?" + urllib.parse.urlencode({param["name"]: bad})
            await _refused(api, method, url, [param["in"], param["name"]])
            tested.add(path)
    assert tested >= {
        "/v1/agents/{agent_id}",
        "/v1/agents/{agent_id}/invoke",
        "/v1/sessions/{session_id}/messages",
        "/v1/turns/{turn_id}/cancel",
        "/v1/keys/{key_id}",
        "/v1/admin/price-plans/{plan_id}",
        "/v1/admin/tenants/{tenant_id}/plan",
        "/v1/admin/replays/{replay_id}",
        "/v1/invoices",
        "/v1/invoices/{invoice_id}/lines/{number}/usage",
    }


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
async def test_a_bad_id_in_any_body_is_a_422_problem(api: Api, bad: str) -> None:
    document = (await api.http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    tested: set[Any] = set()
    for method, path, operation in await operations(api):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is None:
            continue
        fields = schemas[body["schema"]["$ref"].rpartition("/")[2]]["properties"]
        for name in (n for n in fields if n.endswith("_id")):
            url = path.replace("{", "").replace("}", "")  # any path id: the body is refused
            await _refused(api, method, url, ["body", name], json={name: bad})
            tested.add((path, name))
    assert tested >= {
        ("/v1/sessions", "agent_id"),
        ("/v1/admin/usage", "tenant_id"),
        ("/v1/admin/usage", "usage_id"),
        ("/v1/invoices/drafts", "tenant_id"),
    }


async def test_a_bad_session_id_is_refused_before_the_stream_opens(api: Api) -> None:
    for bad in BAD_IDS:
        url = f"/v1/sessions/{urllib.parse.quote(bad, safe='')}/stream"
        await _refused(api, "GET", url, ["path", "session_id"])


@pytest.mark.parametrize(
    "url",
    [
        "/dashboard/turns/{bad}",
        "/dashboard/api/turns?before=2026-11-02T10:00:00%2B00:00|{bad}",
        "/dashboard/tenants?after={bad}",
    ],
)
async def test_the_dashboards_ids_are_checked_too(api: Api, url: str) -> None:
    for bad in BAD_IDS:
        sent = url.format(bad=urllib.parse.quote(bad, safe=""))
        response = await api.http.get(sent, headers=api.as_operator)
        assert response.status_code in (400, 422), (sent, response.text)


async def _published(api: Api) -> None:
    plan = PricePlan(
        currency="USD", models={"dev": ModelRates(input=Decimal(1), output=Decimal(1))}
    )
    fact = billing.PricePlanPublished(plan_id="std", version=1, plan=plan, operator_id="op")
    await api.fold(envelope(fact, source=SOURCE, tenant_id=PLATFORM))


# A plan assignment's time: each side of the bounds, and the far ends of what an ISO
# 8601 time can say, whose offset takes it past year 1 or 9999 in UTC.
EFFECTIVE = {
    "0001-01-01T00:00:00+01:00": 422,
    "0001-01-01T00:00:00Z": 422,
    "1969-12-31T23:59:59.999999Z": 422,
    "1970-01-01T00:59:59+01:00": 422,
    "9998-12-31T23:59:59Z": 201,
    "9998-12-31T23:59:59-01:00": 422,
    "9999-12-31T23:59:59.999999-23:59": 422,
    "9999-12-31T23:59:59Z": 422,
}


async def test_a_plan_assignment_outside_the_times_billing_counts_is_refused(api: Api) -> None:
    await _published(api)

    async def decider() -> None:  # the one assignment within bounds is decided, applied
        request = await api.recorded(billing_requests.TenantPlanAssignRequested)
        data = request.data
        assigned = billing.TenantPlanAssigned(
            tenant_id=data.tenant_id,
            plan_id=data.plan_id,
            version=data.version,
            effective_from=data.effective_from,
            operator_id=data.operator_id,
        )
        await api.fold(request.follow(assigned, step="outcome", source=SOURCE))

    projecting = asyncio.create_task(decider())
    url = f"/v1/admin/tenants/{api.tenant_id}/plan"
    for at, status in EFFECTIVE.items():
        body = {"plan_id": "std", "version": 1, "effective_from": at}
        response = await api.http.post(url, json=body, headers=api.as_operator)
        assert response.status_code == status, (at, response.text)
        if status == 422:
            errors = problem(response, 422, "VALIDATION_FAILED")["errors"]
            assert [e["loc"] for e in errors] == [["body", "effective_from"]], at
    await projecting
    listed = await api.http.get(url, headers=api.as_operator)
    assert [a["effective_from"] for a in listed.json()] == ["9998-12-31T23:59:59Z"]


DAYS = ["0001-01-01", "1969-12-31", "1970-01-01", "9998-12-31", "9999-12-31"]


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/usage/export"])
async def test_usage_of_any_days_a_date_can_name_is_served(api: Api, path: str) -> None:
    for first in DAYS:
        for last in DAYS:
            for as_operator in (False, True):
                url = path.replace("/v1/", "/v1/admin/") if as_operator else path
                headers = api.as_operator if as_operator else {}
                params = {"from": first, "to": last, "group_by": "day"}
                response = await api.http.get(url, params=params, headers=headers)
                if first < last:
                    assert response.status_code == 200, (url, params, response.text)
                else:
                    problem(response, 422, "VALIDATION_FAILED")


async def test_usage_recorded_at_any_time_gets_no_500(api: Api) -> None:
    body: dict[str, Any] = {
        "tenant_id": api.tenant_id,
        "kind": "tool",
        "resource": "search",
        "quantities": {"calls": 1},
    }
    for n, at in enumerate(EFFECTIVE):
        sent = {**body, "usage_id": f"u-{n}", "used_at": at}
        response = await api.http.post("/v1/admin/usage", json=sent, headers=api.as_operator)
        assert response.status_code in (202, 422), (at, response.text)
