"""The one cursor scheme: every paginated list reads back each cursor it gave, and
refuses with a 400 INVALID_CURSOR problem anything else (not base64, not JSON, or a key
of another shape: a NUL in an id, a day that is none, a time without its zone or out of
range, a number past what Postgres holds) before it queries anything."""

from __future__ import annotations

import base64
import datetime
import json
from decimal import Decimal
from typing import Any

from schemas import billing, events
from schemas.billing import PLATFORM, InvoiceLine, ModelRates, PricePlan
from schemas.envelope import envelope
from schemas.usage import UsageKind, UsageRecorded

from .conftest import SOURCE, Api, problem

CONFIG = events.AgentConfig(name="helper", model="dev")
DAY = datetime.datetime(2026, 11, 2, 10, tzinfo=datetime.UTC)
TIME = "2026-11-02T10:00:00+00:00"


def cursor(key: Any) -> str:
    """A cursor of ``key`` as the lists encode theirs."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


# Keys near the shape of each list's but not of it; each list also gets UNREADABLE.
TIME_AND_ID = [
    [TIME, "a\u0000b"],
    [TIME, "\u0001"],
    [TIME, "x" * 201],
    [TIME, ""],
    ["2026-11-02T10:00:00", "naive"],
    ["0001-01-01T00:00:00+01:00", "year-0-in-utc"],
    ["9999-12-31T23:59:59-01:00", "year-10000-in-utc"],
    ["not a time", "x"],
    [1700000000, "x"],
    [TIME, "x", "more"],
    [TIME],
]
SHAPES: dict[str, list[Any]] = {
    "/v1/agents": TIME_AND_ID,
    "/v1/sessions": TIME_AND_ID,
    "/v1/invoices/inv-1/lines/1/usage": TIME_AND_ID,
    "/v1/sessions/s-1/messages": [-1, 2**63, 1.5, "5", True, [5]],
    "/v1/usage?group_by=day": [["not a day"], ["2026-13-01"], ["0000-01-01"], [20261102], []],
    "/v1/admin/usage?group_by=tenant,day,agent,kind,resource,unit": [
        ["t\u0000", "2026-11-02", "", "tool", "search", "calls"],
        ["t", "2026-11-02", "a\u0000", "tool", "search", "calls"],
        ["t", "2026-11-02", "", "gold", "search", "calls"],
        ["t", "2026-11-02", "", "tool", "search", "litres"],
        ["t", "2026-11-02", "", "tool", "search"],
    ],
    "/v1/admin/price-plans": [
        ["std", "\u00b2"],
        ["std", 2**40],
        ["std", 0],
        ["std", "1"],
        ["a\x00", 1],
    ],
    "/v1/invoices": [["2026-11", "a\u0000"], ["2026-11\u0000", "x"], ["2026-11"], "2026-11"],
}
UNREADABLE = [
    "%%%",
    "é",
    "not base64!",
    "A" * 20_000,
    base64.urlsafe_b64encode(b"{not json").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    cursor(None),
    cursor({"a": 1}),
    cursor([[[[[]]]]] * 3),
    base64.urlsafe_b64encode(b"[" * 10_000).decode(),
]


async def _seed(api: Api) -> None:
    """Something in every list, so each reads its cursor: a session, an invoice with a
    line, and usage."""
    plan = PricePlan(
        currency="USD", models={"dev": ModelRates(input=Decimal(1), output=Decimal(1))}
    )
    published = billing.PricePlanPublished(plan_id="std", version=1, plan=plan, operator_id="op")
    line = InvoiceLine(
        number=1,
        kind="tool",
        resource="search",
        unit="calls",
        plan_id="std",
        plan_version=1,
        window_start=DAY,
        window_end=DAY,
        quantity=0,
        free=0,
        billable=0,
        unit_price=Decimal(0),
        amount=Decimal(0),
        unpriced=False,
        events=0,
    )
    await api.fold(
        envelope(published, source=SOURCE, tenant_id=PLATFORM),
        api.fact(events.AgentCreated(agent_id="a-1", config=CONFIG)),
        api.fact(events.SessionCreated(session_id="s-1", agent_id="a-1")),
        api.fact(_drafted(api, "inv-1", "2026-11", [line])),
    )


def _drafted(
    api: Api, invoice_id: str, period: str, lines: list[InvoiceLine]
) -> billing.InvoiceDrafted:
    return billing.InvoiceDrafted(
        tenant_id=api.tenant_id,
        invoice_id=invoice_id,
        revision=1,
        request_id=f"req-{invoice_id}",
        period=period,
        currency="USD",
        lines=lines,
        subtotal=Decimal(0),
        total=Decimal(0),
        plans=[],
        offsets={0: 0},
        usage_events=0,
        content_hash="0" * 64,
    )


async def paginated(api: Api) -> set[str]:
    """The path of every list the OpenAPI document says takes a cursor."""
    document = (await api.http.get("/openapi.json")).json()
    return {
        path
        for path, methods in document["paths"].items()
        if any(p["name"] == "cursor" for p in methods.get("get", {}).get("parameters", []))
    }


async def test_every_list_refuses_a_cursor_it_did_not_give(api: Api) -> None:
    await _seed(api)
    listed = {url.partition("?")[0].replace("inv-1", "{invoice_id}") for url in SHAPES}
    listed = {u.replace("/s-1/", "/{session_id}/").replace("/1/", "/{number}/") for u in listed}
    assert listed == await paginated(api)  # a new list needs its near misses here
    for url, keys in SHAPES.items():
        headers = api.as_operator if "/admin/" in url else {}
        for bad in [*(cursor(k) for k in keys), *UNREADABLE]:
            joiner = "&" if "?" in url else "?"
            response = await api.http.get(f"{url}{joiner}cursor={bad}", headers=headers)
            problem(response, 400, "INVALID_CURSOR")


async def test_a_last_event_id_that_names_no_position_is_refused(api: Api) -> None:
    await _seed(api)
    for bad in (
        "0:\u00b2",
        "\u00b2:0",
        "0:-1",
        "-1:0",
        "0",
        ":",
        "0:1:2",
        "0:99999999999999999999",
    ):
        response = await api.http.get(
            "/v1/sessions/s-1/stream", headers=[(b"Last-Event-ID", bad.encode("latin-1"))]
        )
        problem(response, 400, "INVALID_CURSOR")


async def test_every_list_reads_back_each_cursor_it_gave(api: Api) -> None:
    """A page at a time through lists whose keys hold every kind of part: times and
    ids, plan versions, periods, and every usage group (stored text of any kind)."""
    await _seed(api)
    plan = PricePlan(
        currency="USD", models={"dev": ModelRates(input=Decimal(1), output=Decimal(1))}
    )
    other = billing.PricePlanPublished(plan_id="std", version=2, plan=plan, operator_id="op")
    used: list[tuple[UsageKind, str, str]] = [
        ("tool", "search", ""),
        ("tool", "sé\u0001arch", "a-1"),
        ("model", "dev", "a-1"),
    ]
    usage = [
        UsageRecorded(
            tenant_id=api.tenant_id,
            kind=kind,
            resource=resource,
            quantities={"calls": 1},
            used_at=DAY + datetime.timedelta(days=n),
            agent_id=agent,
        )
        for n, (kind, resource, agent) in enumerate(used)
    ]
    await api.fold(
        envelope(other, source=SOURCE, tenant_id=PLATFORM),
        api.fact(events.AgentCreated(agent_id="a-2", config=CONFIG)),
        api.fact(events.SessionCreated(session_id="s-2", agent_id="a-2")),
        api.fact(_drafted(api, "inv-0", "2026-10", [])),
        *(api.fact(u) for u in usage),
    )
    every_group = "tenant,day,agent,kind,resource,unit"
    for url, headers, count in (
        ("/v1/agents?limit=1", {}, 2),
        ("/v1/sessions?limit=1", {}, 2),
        ("/v1/admin/price-plans?limit=1", api.as_operator, 2),
        ("/v1/invoices?limit=1", {}, 2),
        ("/v1/usage?limit=1&from=2026-11-01&to=2026-12-01&group_by=day", {}, 3),
        (
            f"/v1/admin/usage?limit=1&from=2026-11-01&to=2026-12-01&group_by={every_group}",
            api.as_operator,
            3,
        ),
    ):
        items: list[Any] = []
        page = (await api.http.get(url, headers=headers)).json()
        items.extend(page["items"])
        while page["next_cursor"] is not None:
            response = await api.http.get(f"{url}&cursor={page['next_cursor']}", headers=headers)
            assert response.status_code == 200, (url, response.text)
            page = response.json()
            items.extend(page["items"])
        assert len(items) == count, (url, items)
