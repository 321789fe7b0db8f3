"""Billing end to end: usage from real turns priced into an invoice draft, the draft
read back and drilled into, verified from the topics, revised by late usage, and a
tampered ledger row caught."""

from __future__ import annotations

import csv
import datetime
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from schemas.values import UsageValue
from tests.e2e.conftest import DATABASE_URL, Platform
from tests.e2e.test_bad_input import problem
from tests.e2e.test_turns import open_session
from tests.e2e.test_unprocessable import tenant_of
from tests.eventually import eventually
from tests.kafka import REPO
from workers.providers.protocol_server import ModelServer, Reply

MODEL = "openai:gpt-test"
RATES = {"input": "0.000002", "output": "0.00001", "cached_input": "0.000001"}


def cli(platform: Platform, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentlog_cli", *args],
        cwd=REPO,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def operator_client(platform: Platform) -> httpx.Client:
    key = cli(platform, "operators", "create", "finance").stdout.strip().splitlines()[-1]
    assert key.startswith("alop_")
    return httpx.Client(
        base_url=platform.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )


def this_month() -> tuple[str, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.strftime("%Y-%m"), start


def usage_total(api: httpx.Client, events: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The tenant's usage by unit, once ``events`` usage events are in the ledger."""

    def groups() -> list[dict[str, Any]]:
        usage = api.get("/v1/usage", params={"group_by": "unit"})
        found: list[dict[str, Any]] = usage.json()["items"]
        assert sum(g["events"] for g in found if g["unit"] == "output_tokens") >= events, found
        return found

    return eventually(groups, f"{events} output-token usage events in the ledger", timeout=timeout)


def replay(admin: httpx.Client) -> dict[str, Any]:
    """A billing replay over HTTP, followed until it is done."""
    started = admin.post("/v1/admin/replays", json={"name": "billing"})
    assert started.status_code == 202, started.text

    def done() -> dict[str, Any]:
        report: dict[str, Any] = admin.get(started.headers["Location"]).json()
        assert report["status"] != "running", report
        return report

    return eventually(done, "the billing replay to end", timeout=60)


def test_usage_of_real_turns_is_drafted_verified_and_revised(
    platform: Platform, model_server: ModelServer, tmp_path: Path
) -> None:
    period, start = this_month()
    tenant_id = tenant_of(platform)
    with platform.client() as api, operator_client(platform) as admin:
        # The billing decider created the operator; a name names one.
        taken = cli(platform, "operators", "create", "finance", check=False)
        assert taken.returncode == 1, taken
        assert taken.stderr.startswith("OPERATOR_NAME_TAKEN: "), taken.stderr
        plan = admin.post(
            "/v1/admin/price-plans",
            json={"plan_id": "std", "currency": "usd", "models": {MODEL: RATES}},
        )
        assert plan.status_code == 201, plan.text
        assert (plan.json()["version"], plan.json()["currency"]) == (1, "USD")
        assigned = admin.post(
            f"/v1/admin/tenants/{tenant_id}/plan",
            json={"plan_id": "std", "version": 1, "effective_from": start.isoformat()},
        )
        assert assigned.status_code == 201, assigned.text

        agent = api.post("/v1/agents", json={"name": "billed", "model": MODEL})
        assert agent.status_code == 201, agent.text
        session_id = open_session(api, agent.json()["agent_id"])
        used = UsageValue(input_tokens=100, output_tokens=20, cached_input_tokens=30)
        model_server.script(*(Reply(chunks=(f"answer {n}",), usage=used) for n in range(3)))
        turn_ids = []
        for n in range(3):
            turn = api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": f"q{n}"})
            assert turn.json()["status"] == "completed", turn.text
            turn_ids.append(turn.json()["turn_id"])
        by_unit = {g["unit"]: g["quantity"] for g in usage_total(api, 3)}
        served = list(model_server.served.values())
        assert len(served) == 3
        assert by_unit == {
            "input_tokens": sum(u.input_tokens - u.cached_input_tokens for u in served),
            "cached_input_tokens": sum(u.cached_input_tokens for u in served),
            "output_tokens": sum(u.output_tokens for u in served),
        }

        drafted = admin.post("/v1/invoices/drafts", json={"tenant_id": tenant_id, "period": period})
        assert drafted.status_code == 201, drafted.text
        invoice = drafted.json()
        (first,) = invoice["revisions"]
        lines = {line["unit"]: line for line in first["lines"]}
        assert {u: lines[u]["quantity"] for u in lines} == by_unit
        assert lines["input_tokens"]["amount"] == "0.000420"  # 210 at 0.000002
        assert lines["cached_input_tokens"]["amount"] == "0.000090"
        assert lines["output_tokens"]["amount"] == "0.000600"
        assert (first["subtotal"], invoice["total"], invoice["currency"]) == (
            "0.001110",
            "0.00",
            "USD",
        )
        assert first["usage_events"] == 3

        # The tenant reads it; another tenant cannot.
        mine = api.get(f"/v1/invoices/{invoice['invoice_id']}")
        assert mine.status_code == 200
        assert mine.json()["content_hash"] == first["content_hash"]
        other_key = cli(platform, "tenants", "create", "other").stdout.strip().splitlines()[-1]
        theirs = httpx.get(
            f"{platform.url}/v1/invoices/{invoice['invoice_id']}",
            headers={"Authorization": f"Bearer {other_key}"},
        )
        problem(theirs, 404, "INVOICE_NOT_FOUND")

        # Each line drills down to the usage events, turns and traces behind it.
        number = lines["output_tokens"]["number"]
        behind = api.get(f"/v1/invoices/{invoice['invoice_id']}/lines/{number}/usage").json()
        assert sorted(e["turn_id"] for e in behind["items"]) == sorted(turn_ids)
        assert all(len(e["trace_id"]) == 32 for e in behind["items"])
        assert {e["quantities"]["output_tokens"] for e in behind["items"]} == {20}

        # Usage reads back summed, across tenants for an operator, and event by event.
        by_day = api.get("/v1/usage", params={"group_by": "day,resource", "limit": 1}).json()
        assert by_day["items"][0]["resource"] == MODEL
        assert by_day["next_cursor"] is None  # one day, one model: one group
        pages: list[str] = []
        cursor: str | None = None
        while True:  # a group a page, in key order
            params: dict[str, str | int] = {"group_by": "unit", "limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/v1/usage", params=params).json()
            pages += [g["unit"] for g in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == sorted(by_unit)
        everyone = admin.get("/v1/admin/usage", params={"group_by": "tenant,unit"}).json()
        assert {(g["tenant_id"], g["unit"]) for g in everyone["items"]} == {
            (tenant_id, unit) for unit in by_unit
        }
        problem(api.get("/v1/usage", params={"group_by": "tenant"}), 422, "VALIDATION_FAILED")
        jsonl = api.get("/v1/usage/export", params={"format": "jsonl"})
        exported = [json.loads(line) for line in jsonl.text.splitlines()]
        assert sorted(e["turn_id"] for e in exported) == sorted(turn_ids)
        csv_rows = list(csv.DictReader(io.StringIO(api.get("/v1/usage/export").text)))
        assert [r["event_id"] for r in csv_rows] == [e["event_id"] for e in exported]

        # What if the output rate were doubled: exactly the output line doubles.
        dearer = {**RATES, "output": "0.00002"}
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(
            json.dumps({"plan_id": "std", "currency": "USD", "models": {MODEL: dearer}})
        )
        what_if = cli(platform, "replay", "billing", "--plan", str(plan_file), "--json")
        (mine_now,) = [r for r in json.loads(what_if.stdout) if r["tenant_id"] == tenant_id]
        assert [
            (c["unit"], c["amount_before"], c["amount_after"]) for c in mine_now["changed_lines"]
        ] == [("output_tokens", "0.000600", "0.001200")]
        table = cli(platform, "replay", "billing", "--plan", str(plan_file)).stdout
        assert tenant_id[:8] in table

        verified = cli(platform, "billing", "verify", invoice["invoice_id"], check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert first["content_hash"] in verified.stdout

        # Late usage, used inside the drafted period, makes the next draft a revision;
        # recording it twice counts it once.
        late = {
            "tenant_id": tenant_id,
            "usage_id": "import-42",
            "kind": "tool",
            "resource": "search",
            "quantities": {"calls": 2},
            "used_at": (start + datetime.timedelta(seconds=1)).isoformat(),
        }
        for _ in range(2):
            assert admin.post("/v1/admin/usage", json=late).status_code == 202

        def counted() -> bool:
            groups = usage_total(api, 3)
            assert sum(g["events"] for g in groups if g["unit"] == "calls") >= 1, groups
            return True

        eventually(counted, "the late tool usage in the ledger", timeout=30)
        again = admin.post("/v1/invoices/drafts", json={"tenant_id": tenant_id, "period": period})
        assert again.status_code == 201, again.text
        second = again.json()["revisions"][-1]
        assert [r["revision"] for r in again.json()["revisions"]] == [1, 2]
        assert second["usage_events"] == 4
        assert [
            (c["resource"], c["quantity_before"], c["quantity_after"]) for c in second["changes"]
        ] == [("search", 0, 2)]
        unpriced = [line for line in second["lines"] if line["unpriced"]]
        assert [(line["resource"], line["amount"]) for line in unpriced] == [("search", "0.000000")]
        assert second["content_hash"] != first["content_hash"]

        replayed = replay(admin)
        assert replayed["status"] == "succeeded", replayed
        # The figures the CLI's bar shows: records read of how many, their rate, time left.
        assert replayed["records_read"] == replayed["records_total"] > 0, replayed
        assert (replayed["records_per_second"] > 0, replayed["seconds_left"]) == (True, 0)

        # A ledger row changed in Postgres behind the log's back is caught.
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(
                f'UPDATE "{platform.schema}_billing".usage_ledger'
                """ SET quantities = '{"calls": 7}' WHERE call_id = 'import-42'"""
            )
        tampered = cli(platform, "billing", "verify", invoice["invoice_id"], check=False)
        assert tampered.returncode == 1, tampered.stdout
        assert "ledger: event" in tampered.stdout
        assert "'calls': 7" in tampered.stdout
        assert Decimal(again.json()["total"]) == Decimal("0.00")
        differs = replay(admin)
        assert differs["status"] == "differs"
        assert any("usage_ledger" in line for line in differs["differences"]), differs
