"""Two gateways, two billing deciders (invoicer instances) and two command handlers; 50
pairs of conflicting plan assignments and 50 pairs of registrations of one tool name,
the two of a pair sent at once, one through each gateway: exactly one of each pair is
accepted, the other refused with a registered code, and what the tenant has is what was
accepted (assignments each month in one currency; each name's tool, with its secrets
and no other registration's)."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
from confluent_kafka.admin import AdminClient

from agentlog_cli.up import LOCAL_TOOL_NETWORKS
from schemas.errors import ErrorCode
from tests.e2e.conftest import DATABASE_URL, Platform, ToolServer, start_gateway, stop_gateway
from tests.e2e.test_billing import cli, operator_client
from tests.eventually import eventually
from tests.kafka import REPO

TENANTS = 5
PAIRS_PER_TENANT = 10  # 50 pairs in all
FIRST_MONTH = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
REFUSED = {ErrorCode.PLAN_ASSIGNMENT_OVERLAPS, ErrorCode.CURRENCY_MISMATCH}


def month(n: int) -> datetime.datetime:
    return FIRST_MONTH.replace(year=FIRST_MONTH.year + n // 12, month=1 + n % 12)


def new_tenant(platform: Platform, name: str) -> tuple[str, str]:
    """Its id and a key."""
    key = cli(platform, "tenants", "create", name).stdout.strip().splitlines()[-1]
    found = httpx.get(f"{platform.url}/v1/tenant", headers={"Authorization": f"Bearer {key}"})
    assert found.status_code == 200, found.text
    return str(found.json()["tenant_id"]), key


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


async def register(
    gateways: list[httpx.AsyncClient], tool_url: str
) -> list[tuple[httpx.Response, httpx.Response]]:
    """The tenant's pairs: a name registered through both gateways at once, each with a
    URL and a secret of its own."""
    pairs = []
    for n in range(PAIRS_PER_TENANT):
        first, second = gateways if n % 2 else gateways[::-1]
        pairs.append(
            tuple(
                await asyncio.gather(
                    *(
                        client.post(
                            "/v1/tools",
                            json={
                                "name": f"tool-{n}",
                                "url": f"{tool_url}/{side}",
                                "secret_headers": {"X-Side": side},
                            },
                        )
                        for client, side in ((first, "first"), (second, "second"))
                    )
                )
            )
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


async def register_all(urls: list[str], keys: list[str], tool_url: str) -> list[Any]:
    clients = [
        [
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            for url in urls
        ]
        for key in keys
    ]
    try:
        return await asyncio.gather(*(register(gateways, tool_url) for gateways in clients))
    finally:
        for gateways in clients:
            for client in gateways:
                await client.aclose()


def sealed_tool_ids(platform: Platform) -> set[str]:
    """The tool ids the secret store holds headers for."""
    with psycopg.connect(DATABASE_URL) as conn:
        rows = conn.execute(f'SELECT tool_id FROM "{platform.schema}_secrets".tool_headers')
        return {row[0] for row in rows}


def test_conflicting_requests_through_two_gateways_and_two_deciders_of_each_kind(
    platform: Platform, tool_server: ToolServer, tmp_path: Path
) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "agentlog_cli", "worker", role],
            cwd=REPO,
            env=platform.env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"second-{role}.log").open("ab"),
        )
        for role in ("invoicer", "commands")
    ]
    # As agentlog up allows its own gateway: the tools are on this machine.
    gateway, url = start_gateway(platform, AGENTLOG_TOOL_ALLOWED_NETWORKS=LOCAL_TOOL_NETWORKS)
    try:
        for role in ("invoicer", "commands"):
            group = f"{platform.prefix}agentlog.{role}"
            eventually(
                lambda group=group: group_members(platform, group) == 2,  # type: ignore[misc]
                f"two members of {group} sharing its partitions",
                timeout=60,
            )
        created = [new_tenant(platform, f"race-{n}") for n in range(TENANTS)]
        tenants = [tenant_id for tenant_id, _key in created]

        registered = asyncio.run(
            register_all([platform.url, url], [key for _id, key in created], tool_server.url)
        )
        winners = set()
        for (_tenant_id, key), pairs in zip(created, registered, strict=True):
            accepted = {}
            for first, second in pairs:
                assert sorted((first.status_code, second.status_code)) == [201, 409], (
                    first.text,
                    second.text,
                )
                refused, winner = (first, second) if first.status_code == 409 else (second, first)
                assert refused.json()["code"] == ErrorCode.TOOL_EXISTS, refused.text
                accepted[winner.json()["name"]] = (winner.json()["tool_id"], winner.json()["url"])
            listed = httpx.get(
                f"{platform.url}/v1/tools", headers={"Authorization": f"Bearer {key}"}
            )
            assert listed.status_code == 200, listed.text
            assert {t["name"]: (t["tool_id"], t["url"]) for t in listed.json()} == accepted
            winners |= {tool_id for tool_id, _url in accepted.values()}
        # Each name's secrets are its winner's: a refused registration's are dropped.
        assert sealed_tool_ids(platform) == winners
        with operator_client(platform) as admin:
            for plan_id, currency in (("usd", "USD"), ("eur", "EUR")):
                plan = {"plan_id": plan_id, "currency": currency, "tools": {"t": {"per_call": "1"}}}
                published = admin.post("/v1/admin/price-plans", json=plan)
                assert published.status_code == 201, published.text
            key = str(admin.headers["Authorization"]).removeprefix("Bearer ")
            results = asyncio.run(send_all([platform.url, url], key, tenants))

            for tenant_id, pairs in zip(tenants, results, strict=True):
                assigned = []
                for usd, eur in pairs:
                    statuses = sorted((usd.status_code, eur.status_code))
                    assert statuses == [201, 409], (usd.text, eur.text)
                    refused = usd if usd.status_code == 409 else eur
                    assert refused.json()["code"] in REFUSED, refused.text
                    winner = usd if usd.status_code == 201 else eur
                    assigned.append((winner.json()["plan_id"], winner.json()["effective_from"]))
                listed = admin.get(f"/v1/admin/tenants/{tenant_id}/plan")
                assert listed.status_code == 200, listed.text
                in_force = [
                    (a["plan_id"], a["effective_from"])
                    for a in listed.json()
                    if a["withdrawn_at"] is None
                ]
                assert sorted(in_force) == sorted(assigned)
                assert len({plan_id for plan_id, _ in in_force}) == 1  # one currency
    finally:
        stop_gateway(gateway)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
