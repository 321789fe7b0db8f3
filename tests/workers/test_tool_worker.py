"""The tool worker against a real HTTP tool: what it records for an answer, an error, a
timeout, an oversized answer, an address it may not call and a header it cannot send;
and that a tool's secret headers are sent but never recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from projections.secrets import SecretStore
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, envelope
from streams.catalog import Catalog
from streams.settings import parse_networks
from workers.tool_network import ToolNetworkPolicy
from workers.tool_worker import ToolWorker

from .conftest import ToolServer

TENANT = "tenant-tools"
SECRET = "Bearer s3cr3t-tool-token-7f41"
MAX_RESULT_BYTES = 1000


@pytest.fixture
async def worker(secrets: SecretStore) -> AsyncIterator[ToolWorker]:
    local = ToolNetworkPolicy(parse_networks("127.0.0.0/8"))
    worker = ToolWorker("127.0.0.1:9", Catalog("t."), secrets, MAX_RESULT_BYTES, local)
    yield worker
    await worker.http.aclose()


def request(url: str, *, timeout_s: float = 5.0, call_id: str = "call-1") -> Envelope[Any]:
    data = events.ToolCallRequested(
        session_id="s-1",
        turn_id="t-1",
        tool_call_id=call_id,
        step=1,
        tool="weather",
        tool_id="tool-weather",
        url=url,
        arguments={"city": "Oslo"},
        timeout_s=timeout_s,
    )
    return envelope(data, source="/tests", tenant_id=TENANT)


async def perform(worker: ToolWorker, env: Envelope[Any]) -> tuple[Fact, Envelope[Any]]:
    """The result fact, and the usage record, of one call."""
    result, usage = await worker.perform(env)
    assert result.causation_id == usage.causation_id == env.id
    assert isinstance(usage.data, events.UsageRecorded)
    assert (usage.data.kind, usage.data.resource) == ("tool", "weather")
    assert usage.data.quantities == {"calls": 1}
    assert usage.data.call_id == "call-1"
    return result.data, usage


async def test_an_answer_is_recorded_with_its_status(
    worker: ToolWorker, tool_server: ToolServer
) -> None:
    result, _usage = await perform(worker, request(f"{tool_server.url}/weather"))

    assert isinstance(result, events.ToolCallCompleted)
    assert (result.status_code, result.truncated) == (200, False)
    assert json.loads(result.result) == {"city": "Oslo", "forecast": "sunny"}
    (sent,) = tool_server.requests
    assert sent["body"] == {"city": "Oslo"}
    assert sent["headers"]["X-Agentlog-Tool-Call-Id"] == "call-1"


@pytest.mark.parametrize("status", [404, 422, 500, 503])
async def test_an_http_error_fails_the_call_with_its_status(
    worker: ToolWorker, tool_server: ToolServer, status: int
) -> None:
    result, _usage = await perform(worker, request(f"{tool_server.url}/status/{status}"))

    assert isinstance(result, events.ToolCallFailed)
    assert result.code == "TOOL_HTTP_ERROR"
    assert result.detail == f"HTTP {status}: failed /status/{status}"


async def test_a_tool_that_does_not_answer_in_time_fails_the_call(
    worker: ToolWorker, tool_server: ToolServer
) -> None:
    result, _usage = await perform(worker, request(f"{tool_server.url}/slow", timeout_s=0.2))

    assert isinstance(result, events.ToolCallFailed)
    assert (result.code, result.detail) == ("TOOL_TIMEOUT", "no answer within 0.2 s")


async def test_an_oversized_answer_is_cut_and_marked(
    worker: ToolWorker, tool_server: ToolServer
) -> None:
    result, _usage = await perform(worker, request(f"{tool_server.url}/big"))

    assert isinstance(result, events.ToolCallCompleted)
    assert result.truncated
    assert result.result == "x" * MAX_RESULT_BYTES


async def test_a_tool_that_cannot_be_reached_fails_the_call(worker: ToolWorker) -> None:
    result, _usage = await perform(worker, request("http://127.0.0.1:9/closed"))

    assert isinstance(result, events.ToolCallFailed)
    assert (result.code, result.detail) == ("TOOL_UNAVAILABLE", "ConnectError")


async def test_an_address_tools_may_not_reach_is_refused_before_the_call(
    secrets: SecretStore, tool_server: ToolServer
) -> None:
    public_only = ToolWorker("127.0.0.1:9", Catalog(), secrets, 1000, ToolNetworkPolicy())
    try:
        result, _usage = await perform(public_only, request(f"{tool_server.url}/weather"))
    finally:
        await public_only.http.aclose()

    assert isinstance(result, events.ToolCallFailed)
    assert result.code == "TOOL_ADDRESS_REFUSED"
    assert "loopback" in result.detail
    assert tool_server.requests == []


async def test_secret_headers_are_sent_but_never_recorded(
    worker: ToolWorker, secrets: SecretStore, tool_server: ToolServer
) -> None:
    await secrets.put(TENANT, "tool-weather", {"Authorization": SECRET})

    echoed, echoed_usage = await perform(worker, request(f"{tool_server.url}/echo"))
    failed, failed_usage = await perform(worker, request(f"{tool_server.url}/status/500"))

    assert [r["headers"]["Authorization"] for r in tool_server.requests] == [SECRET, SECRET]
    assert isinstance(echoed, events.ToolCallCompleted)
    assert "[REDACTED]" in echoed.result
    recorded = [echoed, echoed_usage.data, failed, failed_usage.data]
    assert all(SECRET not in fact.model_dump_json() for fact in recorded)
    assert all("s3cr3t" not in fact.model_dump_json() for fact in recorded)


async def test_a_secret_header_that_cannot_be_sent_fails_the_call_unsent(
    worker: ToolWorker, secrets: SecretStore, tool_server: ToolServer
) -> None:
    # Stored as an older gateway could have: a value HTTP cannot carry.
    await secrets.put(TENANT, "tool-weather", {"X-Token": "caf\u00e9-token"})

    result, _usage = await perform(worker, request(f"{tool_server.url}/weather"))

    assert isinstance(result, events.ToolCallFailed)
    assert result.code == "TOOL_HEADERS_INVALID"
    assert "café" not in result.detail
    assert tool_server.requests == []
