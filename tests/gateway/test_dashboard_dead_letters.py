"""The dashboard's dead letters over the gateway, with the billing decider and the
billing projector running: a dead letter listed, and re-driven once, however many ask."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from schemas import billing, billing_requests, events
from schemas.envelope import Envelope, to_kafka
from tests.e2e.conftest import DATABASE_URL
from tests.gateway.conftest import Api
from tests.gateway.test_dashboard import signed_in
from tests.gateway.test_turns import CONFIG
from tests.topics import read_all
from workers.runner import run_roles


async def _plant_dead_letter(api: Api) -> Envelope[Any]:
    """A command that its consumer failed on (as during an outage), on the dead-letter
    topic as the consumer runtime writes it."""
    command = api.fact(events.AgentCreateRequested(agent_id="a-dead", config=CONFIG.model_copy()))
    key, value, headers = to_kafka(command)
    why = [
        ("dlq.reason", b"HANDLER_FAILED: OperationalError"),
        ("dlq.topic", api.catalog.commands.encode()),
        ("dlq.partition", b"0"),
        ("dlq.offset", b"7"),
        ("dlq.consumer", b"commands"),
    ]
    await api.gateway.publisher.send_raw(api.catalog.dead_letter, value, key, headers + why)
    return command


@contextlib.asynccontextmanager
async def deciding(api: Api) -> AsyncIterator[None]:
    """The gateway's deployment with its billing decider (the invoicer role, which
    decides re-drives) and its billing projector running, as ``agentlog up`` runs them.
    What the fixture folded by hand it folded at made-up offsets of topics that do not
    hold it: the projector reads the billing topic from its start, not past them."""
    async with await psycopg.AsyncConnection.connect(DATABASE_URL, autocommit=True) as conn:
        positions = sql.Identifier(api.settings.billing_schema, "projection_positions")
        await conn.execute(sql.SQL("DELETE FROM {}").format(positions))
    stop = asyncio.Event()
    roles = asyncio.create_task(
        run_roles(api.settings, ["invoicer", "billing"], stop, probes=False)
    )
    try:
        yield
    finally:
        stop.set()
        await roles


def _audit(records: list[Envelope[Any]]) -> list[type[Any]]:
    kinds = (
        billing.DeadLetterRedriveRequested,
        billing.DeadLetterRedriven,
        billing_requests.BillingCommandRejected,
    )
    return [type(env.data) for env in records if isinstance(env.data, kinds)]


async def test_a_dead_letter_is_listed_and_redriven_once_with_an_audit(api: Api) -> None:
    command = await _plant_dead_letter(api)
    listed = (await api.http.get("/dashboard/api/dead-letters", headers=api.as_operator)).json()
    [letter] = listed["items"]
    assert (letter["reason"], letter["consumer"], letter["record_id"]) == (
        "HANDLER_FAILED: OperationalError",
        "commands",
        command.id,
    )
    assert letter["redrive"] is None
    url = f"/dashboard/dead-letters/{letter['partition']}/{letter['offset']}/redrive"

    async with deciding(api):
        assert (await api.http.post(url)).status_code == 403  # a tenant's key
        async with signed_in(api) as client:
            refused = await client.post(url)  # the cookie alone, as a form of another site
            assert refused.status_code == 403
            assert refused.json()["code"] == "DASHBOARD_HEADER_REQUIRED"
            done = await client.post(url, headers={"X-Agentlog-Dashboard": "1"})
        assert done.status_code == 200, done.text

        # Back on its topic as it was, without the dead-letter headers.
        [again] = [env for env in await api.commands() if env.id == command.id]
        assert again.data == command.data
        bootstrap = api.settings.kafka_bootstrap_servers
        raw = await asyncio.to_thread(read_all, bootstrap, api.catalog.commands)
        assert not any(name.startswith("dlq.") for name, _value in raw[-1].headers)
        # Audited: who asked, then, decided, where it went.
        audit = [
            env
            for env in await api.records(api.catalog.billing)
            if isinstance(env.data, billing.DeadLetterRedriveRequested | billing.DeadLetterRedriven)
        ]
        assert [type(env.data) for env in audit] == [
            billing.DeadLetterRedriveRequested,
            billing.DeadLetterRedriven,
        ]
        assert audit[0].data.operator_id == audit[1].data.operator_id != ""
        assert audit[1].causation_id == audit[0].id
        assert done.json()["offset"] == audit[1].data.offset
        twice = await api.http.post(url, headers=api.as_operator)
        assert twice.status_code == 409
        assert twice.json()["code"] == "DEAD_LETTER_REDRIVEN"
        shown = (await api.http.get("/dashboard/api/dead-letters", headers=api.as_operator)).json()
        assert shown["items"][0]["redrive"]["to_offset"] == audit[1].data.offset
        missing = await api.http.post(
            "/dashboard/dead-letters/0/999999/redrive", headers=api.as_operator
        )
        assert missing.status_code == 404
        assert missing.json()["code"] == "DEAD_LETTER_NOT_FOUND"
    assert [env.id for env in await api.commands()].count(command.id) == 1
    assert _audit(await api.records(api.catalog.billing)) == [
        billing.DeadLetterRedriveRequested,
        billing.DeadLetterRedriven,
        billing.DeadLetterRedriveRequested,  # the second, refused: the 404 recorded nothing
        billing_requests.BillingCommandRejected,
    ]


async def _letter_url(api: Api, command: Envelope[Any]) -> str:
    """The re-drive URL of the dead letter holding ``command``."""
    listed = (await api.http.get("/dashboard/api/dead-letters", headers=api.as_operator)).json()
    [letter] = [d for d in listed["items"] if d["record_id"] == command.id]
    return f"/dashboard/dead-letters/{letter['partition']}/{letter['offset']}/redrive"


@pytest.mark.parametrize("at_once", [2, 6])
async def test_of_redrives_asked_for_at_once_one_writes_the_record_and_the_rest_get_409(
    api: Api, at_once: int
) -> None:
    """Asked for at once, through one gateway: the decider takes them one after the other."""
    command = await _plant_dead_letter(api)
    url = await _letter_url(api, command)
    async with deciding(api):
        answers = await asyncio.gather(
            *(api.http.post(url, headers=api.as_operator) for _ in range(at_once))
        )
    assert sorted(a.status_code for a in answers) == [200] + [409] * (at_once - 1)
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "DEAD_LETTER_REDRIVEN"

    assert [env.id for env in await api.commands()].count(command.id) == 1
    audit = _audit(await api.records(api.catalog.billing))
    assert audit.count(billing.DeadLetterRedriveRequested) == at_once
    assert audit.count(billing.DeadLetterRedriven) == 1
    assert audit.count(billing_requests.BillingCommandRejected) == at_once - 1
