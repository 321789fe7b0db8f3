"""A tenant whose plan assignments conflict (two currencies in one month, as two
gateways racing could record them) is repaired by an operator: the wrong assignment is
withdrawn, the month is drafted, and the draft verifies and replays. A change of plan
that would price a drafted month again is refused, or recorded with the months it
reprices when the operator asks for it."""

from __future__ import annotations

import datetime
from typing import Any

import httpx

from schemas import billing
from schemas.envelope import envelope, to_kafka
from tests.e2e.conftest import Platform
from tests.e2e.test_bad_input import problem
from tests.e2e.test_billing import cli, operator_client, replay, this_month
from tests.e2e.test_turns import read_topic
from tests.e2e.test_unprocessable import tenant_of
from tests.eventually import eventually

DECIDED_WITHIN_S = 30


def draft(admin: httpx.Client, tenant_id: str, period: str) -> dict[str, Any]:
    """Ask for a draft; what became of the request (drafted, or rejected with a code)."""
    requested = admin.post("/v1/invoices/drafts", json={"tenant_id": tenant_id, "period": period})
    if requested.status_code == 201:
        return {"status": "drafted", **requested.json()}
    assert requested.status_code in (202, 409), requested.text
    if requested.status_code == 409:
        return {"status": "rejected", "code": requested.json()["code"]}
    location = requested.headers["Location"]

    def drafted() -> httpx.Response:
        found = admin.get(location)
        assert found.status_code == 200, found.text
        return found

    found = eventually(drafted, f"the draft at {location}", timeout=DECIDED_WITHIN_S)
    return {"status": "drafted", **found.json()}


def test_conflicting_assignments_are_repaired_by_withdrawing_one(platform: Platform) -> None:
    period, start = this_month()
    tenant_id = tenant_of(platform)
    assign = f"/v1/admin/tenants/{tenant_id}/plan"
    with operator_client(platform) as admin:
        for plan_id, currency in (("usd", "USD"), ("eur", "EUR")):
            plan = {"plan_id": plan_id, "currency": currency, "tools": {"t": {"per_call": "2"}}}
            assert admin.post("/v1/admin/price-plans", json=plan).status_code == 201
        first = admin.post(
            assign, json={"plan_id": "usd", "version": 1, "effective_from": start.isoformat()}
        )
        assert first.status_code == 201, first.text
        # What a second gateway, racing the first, could record: EUR in the same month.
        wrong_from = start + datetime.timedelta(hours=1)
        racing = billing.TenantPlanAssigned(
            tenant_id=tenant_id,
            plan_id="eur",
            version=1,
            effective_from=wrong_from,
            operator_id="other-gateway",
        )
        key, value, headers = to_kafka(envelope(racing, source="/gateway", tenant_id=tenant_id))
        platform.produce("agentlog.billing", value, key, headers)
        used = {
            "tenant_id": tenant_id,
            "usage_id": "u-1",
            "kind": "tool",
            "resource": "t",
            "quantities": {"calls": 3},
            "used_at": (start + datetime.timedelta(hours=2)).isoformat(),
        }
        assert admin.post("/v1/admin/usage", json=used).status_code == 202

        def both_recorded() -> bool:
            assignments = admin.get(assign).json()
            assert len(assignments) >= 2, assignments
            return True

        eventually(both_recorded, "both assignments recorded", timeout=DECIDED_WITHIN_S)

        # The month cannot be drafted, and a fixing assignment in USD is refused.
        assert draft(admin, tenant_id, period) == {
            "status": "rejected",
            "code": "CURRENCY_MISMATCH",
        }
        later = (start + datetime.timedelta(hours=3)).isoformat()
        fixing = admin.post(assign, json={"plan_id": "usd", "version": 1, "effective_from": later})
        problem(fixing, 409, "CURRENCY_MISMATCH")

        # Withdrawing what is not in force is refused; the wrong one is withdrawn.
        withdraw = f"{assign}/withdrawals"
        for missing in (start + datetime.timedelta(minutes=1), start - datetime.timedelta(days=40)):
            response = admin.post(withdraw, json={"effective_from": missing.isoformat()})
            problem(response, 404, "PLAN_ASSIGNMENT_NOT_FOUND")
        withdrawn = admin.post(withdraw, json={"effective_from": wrong_from.isoformat()})
        assert withdrawn.status_code == 201, withdrawn.text
        assert withdrawn.json()["withdrawn_at"] is not None
        listed = admin.get(assign).json()
        assert [(a["plan_id"], a["withdrawn_at"] is None) for a in listed] == [
            ("usd", True),
            ("eur", False),
        ]
        # Its instant names it for good: no assignment may take it again.
        again = admin.post(
            assign,
            json={"plan_id": "usd", "version": 1, "effective_from": wrong_from.isoformat()},
        )
        problem(again, 409, "PLAN_ASSIGNMENT_OVERLAPS")

        drafted = draft(admin, tenant_id, period)
        assert drafted["status"] == "drafted", drafted
        assert (drafted["currency"], drafted["total"]) == ("USD", "6.00")
        invoice_id = drafted["invoice_id"]
        verified = cli(platform, "billing", "verify", invoice_id, check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # A change of plan from inside the drafted month is refused, then made knowingly.
        change = {"plan_id": "usd", "version": 1, "effective_from": later}
        refused = problem(admin.post(assign, json=change), 409, "PERIOD_DRAFTED")
        assert period in refused["detail"], refused
        made = admin.post(assign, json={**change, "reprice_drafted": True})
        assert made.status_code == 201, made.text
        problem(admin.post(withdraw, json={"effective_from": later}), 409, "PERIOD_DRAFTED")

        assert replay(admin)["status"] == "succeeded"
        # The first draft still verifies: it counted what was recorded before it.
        verified = cli(platform, "billing", "verify", invoice_id, "--revision", "1", check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr

    facts = [dict(r.headers) for r in read_topic(platform, "agentlog.billing")]
    types = [h["ce_type"].decode() for h in facts]
    assert types.count("agentlog.tenant_plan.withdrawn.v1") == 1
    repricing = [
        r
        for r in read_topic(platform, "agentlog.billing")
        if dict(r.headers)["ce_type"] == b"agentlog.tenant_plan.assigned.v1"
        and b"repriced_periods" in r.value
        and f'"{period}"'.encode() in r.value
    ]
    assert len(repricing) == 1
