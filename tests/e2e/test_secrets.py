"""A planted secret never leaks: two tool secrets, one ASCII and one not, through every
failure path the test can provoke, are in no log line, no record of any topic, no file
of the broker's data directory and no response body."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import psycopg
import pytest

from projections.secrets import SecretStore
from streams.catalog import SPECS, Catalog
from tests.e2e.conftest import DATABASE_URL, Platform, ToolServer
from tests.e2e.test_unprocessable import run_turn, tenant_of
from tests.kafka import BrokerProcess
from tests.topics import read_all

ASCII_SECRET = "tok-ascii-7f3a9c2e51d8"
UNICODE_SECRET = "clé-sécrète-ünïcødé-42"


@pytest.fixture
def broker_data(tmp_path: Path) -> Path:
    return tmp_path / "kafka"


@pytest.fixture
def bootstrap(broker_factory: type[BrokerProcess], broker_data: Path) -> str:
    """This test's own broker, so that its whole data directory can be searched."""
    return broker_factory(broker_data).start().bootstrap


def forms(secret: str) -> list[bytes]:
    """Every way bytes on disk or on the wire may spell the secret."""
    return sorted(
        {
            secret.encode(),
            json.dumps(secret)[1:-1].encode(),  # JSON with \\u escapes
            secret.encode("unicode_escape"),
            secret.encode("latin-1", "replace"),
        }
    )


def assert_nowhere(haystacks: dict[str, bytes]) -> None:
    for secret in (ASCII_SECRET, UNICODE_SECRET):
        for form in forms(secret):
            found = [where for where, data in haystacks.items() if form in data]
            assert not found, f"{secret!r} ({form!r}) leaked into {found}"


def test_planted_secrets_leak_nowhere(
    platform: Platform, tool_server: ToolServer, broker_data: Path
) -> None:
    bodies: list[bytes] = []

    def keep(response: httpx.Response) -> httpx.Response:
        bodies.append(response.read())
        return response

    with platform.client() as api:
        api.event_hooks["response"] = [keep]
        for name, path in (("echo", "/echo"), ("echoerror", "/echo-error")):
            registered = api.post(
                "/v1/tools",
                json={
                    "name": name,
                    "url": f"{tool_server.url}{path}",
                    "secret_headers": {"X-Tool-Secret": ASCII_SECRET},
                },
            )
            assert registered.status_code == 201, registered.text
        # Refused at registration, without quoting the value back.
        refused = api.post(
            "/v1/tools",
            json={
                "name": "unicode",
                "url": f"{tool_server.url}/echo",
                "secret_headers": {"X-Tool-Secret": UNICODE_SECRET},
            },
        )
        assert refused.status_code == 422
        # Planted as a secret stored before registration checked values: the call fails.
        unicode_tool = api.post(
            "/v1/tools", json={"name": "unicode", "url": f"{tool_server.url}/echo"}
        )
        assert unicode_tool.status_code == 201
        plant(platform, unicode_tool.json()["tool_id"], {"X-Tool-Secret": UNICODE_SECRET})

        agent = api.post(
            "/v1/agents",
            json={"name": "leaky", "model": "dev", "tools": ["echo", "echoerror", "unicode"]},
        ).json()
        session_id = api.post("/v1/sessions", json={"agent_id": agent["agent_id"]}).json()[
            "session_id"
        ]
        answers = {
            tool: run_turn(api, session_id, f"call {tool} {{}}")
            for tool in ("echo", "echoerror", "unicode")
        }
        for turn in answers.values():
            api.get(f"/v1/turns/{turn['turn_id']}")
            api.get(f"/v1/sessions/{session_id}/messages")

    # Each call happened, and the careless tool did quote the header it was sent.
    sent = [r["headers"].get("X-Tool-Secret") for r in tool_server.requests]
    assert sent.count(ASCII_SECRET) == 2
    assert "[REDACTED]" in answers["echo"]["answer"]
    assert answers["unicode"]["status"] == "completed"
    assert "TOOL_HEADERS_INVALID" in answers["unicode"]["answer"]

    bootstrap = platform.env["AGENTLOG_KAFKA_BOOTSTRAP_SERVERS"]
    records: dict[str, bytes] = {}
    catalog = Catalog(platform.prefix)
    for spec in SPECS:
        topic = catalog.name(spec)
        for r in read_all(bootstrap, topic):
            headers = b"".join(k.encode() + v for k, v in r.headers)
            records[f"{topic}@{r.partition}:{r.offset}"] = (r.value or b"") + headers
    assert records, "the topics hold the turns"
    files = {str(p): p.read_bytes() for p in broker_data.rglob("*") if p.is_file()}
    assert_nowhere(
        {
            "the platform's log": platform.log_path.read_bytes(),
            **{f"response {i}": body for i, body in enumerate(bodies)},
            **records,
            **files,
        }
    )


def plant(platform: Platform, tool_id: str, headers: dict[str, str]) -> None:
    store = SecretStore(DATABASE_URL, platform.schema, platform.env["AGENTLOG_SECRETS_KEY"])

    async def put() -> None:
        try:
            await store.put(tenant_of(platform), tool_id, headers)
        finally:
            await store.close()

    asyncio.run(put())
    with psycopg.connect(DATABASE_URL) as conn:
        (sealed,) = conn.execute(
            f'SELECT sealed FROM "{platform.schema}_secrets".tool_headers WHERE tool_id = %s',
            (tool_id,),
        ).fetchone() or (b"",)
    assert UNICODE_SECRET.encode() not in bytes(sealed)
