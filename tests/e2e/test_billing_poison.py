"""Records billing cannot count, written to the usage topic by a producer that is not
ours, poison nothing: intake refuses them, the billing projector sets them aside (to
the dead-letter topic), a draft of the tenant's period is still drafted, `billing
verify` agrees and says what it did not count, and a replay over HTTP and from the
CLI succeeds and reports them."""

from __future__ import annotations

import datetime
import json
from typing import Any

import httpx

from schemas.envelope import envelope, to_kafka
from schemas.usage import MAX_QUANTITY, UsageRecorded
from tests.e2e.conftest import Platform
from tests.e2e.test_bad_input import problem
from tests.e2e.test_billing import cli, operator_client, replay, this_month
from tests.e2e.test_turns import read_topic
from tests.e2e.test_unprocessable import tenant_of
from tests.eventually import eventually

DRAFTED_WITHIN_S = 30


def usage(tenant_id: str, used_at: datetime.datetime, **changes: Any) -> UsageRecorded:
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "kind": "tool",
        "resource": "search",
        "quantities": {"calls": 1},
        "used_at": used_at,
    }
    return UsageRecorded.model_validate({**values, **changes})


def foreign_records(tenant_id: str, used_at: datetime.datetime) -> list[tuple[bytes, Any]]:
    """(key, (value, headers)) of four records no consumer can count for the tenant."""
    records = []
    for poison in (
        usage(tenant_id, used_at, quantities={"calls": MAX_QUANTITY * 10}),
        usage(tenant_id, used_at, resource="\u00e9" * 2000),  # past a btree index row, too
        usage(tenant_id, used_at, step=2**40),
    ):
        key, value, headers = to_kafka(envelope(poison, source="/foreign", tenant_id=tenant_id))
        records.append((key, (value, headers)))
    # Another tenant's usage in this tenant's envelope.
    other = usage("someone-else", used_at)
    key, value, headers = to_kafka(envelope(other, source="/foreign", tenant_id="someone-else"))
    forged = [(n, tenant_id.encode() if n == "ce_tenantid" else v) for n, v in headers]
    records.append((tenant_id.encode(), (value, forged)))
    return records


def test_usage_billing_cannot_count_poisons_no_draft_verification_or_replay(
    platform: Platform,
) -> None:
    period, start = this_month()
    tenant_id = tenant_of(platform)
    used_at = start + datetime.timedelta(seconds=5)
    with operator_client(platform) as admin:
        plan = {"plan_id": "calls", "currency": "EUR", "tools": {"search": {"per_call": "0.5"}}}
        assert admin.post("/v1/admin/price-plans", json=plan).status_code == 201
        assigned = admin.post(
            f"/v1/admin/tenants/{tenant_id}/plan",
            json={"plan_id": "calls", "version": 1, "effective_from": start.isoformat()},
        )
        assert assigned.status_code == 201, assigned.text

        # Intake refuses what billing cannot count, whatever the field.
        good = {
            "tenant_id": tenant_id,
            "usage_id": "u-1",
            "kind": "tool",
            "resource": "search",
            "quantities": {"calls": 3},
            "used_at": used_at.isoformat(),
        }
        for bad, code in (
            ({"quantities": {"calls": MAX_QUANTITY + 1}}, "VALIDATION_FAILED"),
            ({"quantities": {"bytes": 10**30}}, "VALIDATION_FAILED"),
            ({"quantities": {"calls": 1.5}}, "VALIDATION_FAILED"),
            ({"resource": "\u00e9" * 150}, "USAGE_UNBILLABLE"),  # 150 characters, 300 bytes
            ({"used_at": "0001-01-01T00:00:00+05:00"}, "USAGE_UNBILLABLE"),
            ({"used_at": "9999-12-31T23:59:59-05:00"}, "USAGE_UNBILLABLE"),
            ({"used_at": "1969-12-31T23:59:59Z"}, "USAGE_UNBILLABLE"),
        ):
            problem(admin.post("/v1/admin/usage", json={**good, **bad}), 422, code)
        for usage_id in ("u-1", "u-2"):
            recorded = admin.post("/v1/admin/usage", json={**good, "usage_id": usage_id})
            assert recorded.status_code == 202, recorded.text
        # The same usage id again: the same values are a retry, other ones refused.
        assert admin.post("/v1/admin/usage", json=good).status_code == 202
        for other in ({"quantities": {"calls": 4}}, {"resource": "other"}):
            problem(admin.post("/v1/admin/usage", json={**good, **other}), 409, "USAGE_ID_REUSED")

        # A foreign producer's records, the last of them last on the tenant's partition.
        for key, (value, headers) in foreign_records(tenant_id, used_at):
            platform.produce("agentlog.usage", value, key, headers)

        # The invoicer's fence passes the records set aside: the draft is drafted.
        requested = admin.post(
            "/v1/invoices/drafts", json={"tenant_id": tenant_id, "period": period}
        )
        assert requested.status_code in (201, 202), requested.text
        invoice_id = requested.json()["invoice_id"]

        def drafted() -> httpx.Response:
            found = admin.get(f"/v1/invoices/{invoice_id}")
            assert found.status_code == 200, found.text
            return found

        found = eventually(drafted, f"the draft of {invoice_id}", timeout=DRAFTED_WITHIN_S)
        (revision,) = found.json()["revisions"]
        assert revision["usage_events"] == 2
        assert found.json()["total"] == "3.00"  # 2 events of 3 calls at 0.5

        verified = cli(platform, "billing", "verify", invoice_id, check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        not_counted = [line for line in verified.stdout.splitlines() if "not counted" in line]
        assert len(not_counted) == 4, verified.stdout
        assert sum("USAGE_UNBILLABLE" in line for line in not_counted) == 3
        assert sum("tenant_id is not the record's tenantid" in line for line in not_counted) == 1

        over_http = replay(admin)
        assert over_http["status"] == "succeeded", json.dumps(over_http)
        assert len(over_http["set_aside"]) == 4, over_http
        from_cli = cli(platform, "replay", "billing", check=False)
        assert from_cli.returncode == 0, from_cli.stdout + from_cli.stderr
        assert "4 records set aside" in from_cli.stdout

    dead = [dict(r.headers) for r in read_topic(platform, "agentlog.deadletter")]
    usage_dead = [h for h in dead if h.get("dlq.topic", b"").endswith(b"agentlog.usage")]
    by_consumer = {
        consumer: sum(h["dlq.consumer"] == consumer.encode() for h in usage_dead)
        for consumer in ("billing", "rebuild-billing")
    }
    # The projector set each aside once; each of the two replays once more.
    assert by_consumer == {"billing": 4, "rebuild-billing": 8}, by_consumer
    for h in usage_dead:
        reason = h["dlq.reason"].decode()
        assert reason.startswith(("USAGE_UNBILLABLE: ", "invalid agentlog.usage")), reason
    # No turn ran: nothing may say a turn's step was unprocessable.
    steps = [dict(r.headers).get("ce_type") for r in read_topic(platform, "agentlog.events")]
    assert b"agentlog.turn.step_unprocessable.v1" not in steps
