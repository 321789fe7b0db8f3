"""Two gateways and two billing deciders (invoicer instances), 50 pairs of conflicting
plan assignments sent at once, a request of each pair through each gateway: exactly one
of each pair is accepted, the other refused with a registered code, and the tenant's
assignments are the accepted ones, each month in one currency."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient

from schemas.errors import ErrorCode
from tests.e2e.conftest import Platform, start_gateway, stop_gateway
from tests.e2e.test_billing import cli, operator_client
from tests.eventually import eventually
from tests.kafka import REPO

TENANTS = 5
PAIRS_PER_TENANT = 10  # 50 pairs in all
FIRST_MONTH = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
REFUSED = {ErrorCode.PLAN_ASSIGNMENT_OVERLAPS, ErrorCode.CURRENCY_MISMATCH}


def month(n: int) -> datetime.datetime:
    return FIRST_MONTH.replace(year=FIRST_MONTH.year + n // 12, month=1 + n % 12)


def new_tenant(platform: Platform, name: str) -> str:
    key = cli(platform, "tenants", "create", name).stdout.strip().splitlines()[-1]
    found = httpx.get(f"{platform.url}/v1/tenant", headers={"Authorization": f"Bearer {key}"})
    assert found.status_code == 200, found.text
    return str(found.json()["tenant_id"])


def group_members(platform: Platform, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": platform.env["AGENTLOG_KAFKA_BOOTSTRAP_SERVERS"]})
    described = admin.describe_consumer_groups([group])[group].result(10)
    assert str(described.state).endswith("STABLE"), described.state
    return len(described.members)


async def race(
    gateways: list[httpx.AsyncClient], tenant_id: str
) -> list[tuple[httpx.Response, httpx.Response]]:
    """The tenant's pairs, one after the other; the two of a pair at once, USD from the
    month's start through one gateway, EUR an hour later through the other."""
    pairs = []
    for n in range(PAIRS_PER_TENANT):
        start = month(n)
        usd = {"plan_id": "usd", "version": 1, "effective_from": start.isoformat()}
        later = start + datetime.timedelta(hours=1)
        eur = {"plan_id": "eur", "version": 1, "effective_from": later.isoformat()}
        path = f"/v1/admin/tenants/{tenant_id}/plan"
        first, second = gateways if n % 2 else gateways[::-1]
        pairs.append(
            tuple(await asyncio.gather(first.post(path, json=usd), second.post(path, json=eur)))
        )
    return pairs  # type: ignore[return-value]


async def send_all(urls: list[str], key: str, tenants: list[str]) -> list[Any]:
    headers = {"Authorization": f"Bearer {key}"}
    gateways = [httpx.AsyncClient(base_url=url, headers=headers, timeout=30) for url in urls]
    try:
        return await asyncio.gather(*(race(gateways, t) for t in tenants))
    finally:
        for client in gateways:
            await client.aclose()


def test_conflicting_assignments_through_two_gateways_and_two_deciders(
    platform: Platform, tmp_path: Path
) -> None:
    log = tmp_path / "second-invoicer.log"
    invoicer = subprocess.Popen(
        [sys.executable, "-m", "agentlog_cli", "worker", "invoicer"],
        cwd=REPO,
        env=platform.env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    gateway, url = start_gateway(platform)
    try:
        group = f"{platform.prefix}agentlog.invoicer"
        eventually(
            lambda: group_members(platform, group) == 2,
            "two invoicers sharing the billing partitions",
            timeout=60,
        )
        tenants = [new_tenant(platform, f"race-{n}") for n in range(TENANTS)]
        with operator_client(platform) as admin:
            for plan_id, currency in (("usd", "USD"), ("eur", "EUR")):
                plan = {"plan_id": plan_id, "currency": currency, "tools": {"t": {"per_call": "1"}}}
                published = admin.post("/v1/admin/price-plans", json=plan)
                assert published.status_code == 201, published.text
            key = str(admin.headers["Authorization"]).removeprefix("Bearer ")
            results = asyncio.run(send_all([platform.url, url], key, tenants))

            for tenant_id, pairs in zip(tenants, results, strict=True):
                accepted = []
                for usd, eur in pairs:
                    statuses = sorted((usd.status_code, eur.status_code))
                    assert statuses == [201, 409], (usd.text, eur.text)
                    refused = usd if usd.status_code == 409 else eur
                    assert refused.json()["code"] in REFUSED, refused.text
                    winner = usd if usd.status_code == 201 else eur
                    accepted.append((winner.json()["plan_id"], winner.json()["effective_from"]))
                listed = admin.get(f"/v1/admin/tenants/{tenant_id}/plan")
                assert listed.status_code == 200, listed.text
                in_force = [
                    (a["plan_id"], a["effective_from"])
                    for a in listed.json()
                    if a["withdrawn_at"] is None
                ]
                assert sorted(in_force) == sorted(accepted)
                assert len({plan_id for plan_id, _ in in_force}) == 1  # one currency
    finally:
        stop_gateway(gateway)
        invoicer.terminate()
        invoicer.wait(30)
