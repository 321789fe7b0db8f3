"""Tools may not reach the platform's own networks: a tool URL on loopback or a private
range is refused at registration and again at call time, unless an operator allows its
network; `agentlog up` allows loopback for local development."""

from __future__ import annotations

import pytest

from schemas import events
from schemas.envelope import derived_id
from tests.e2e.conftest import Platform, ToolServer
from tests.e2e.test_turns import WEATHER_SCHEMA, open_session, setup_agent
from tests.e2e.test_unprocessable import record_tool, run_turn, tenant_of

SETTING = "AGENTLOG_TOOL_ALLOWED_NETWORKS"


@pytest.fixture
def loopback_not_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform whose operator allows one network, and not loopback."""
    monkeypatch.setenv(SETTING, "192.0.2.0/24")


@pytest.fixture
def setting_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform as `agentlog up` runs it by default."""
    monkeypatch.delenv(SETTING, raising=False)


def test_a_tool_on_loopback_is_refused_and_nothing_is_registered(
    loopback_not_allowed: None, platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        response = api.post(
            "/v1/tools",
            json={
                "name": "weather",
                "url": f"{tool_server.url}/weather",
                "parameters": WEATHER_SCHEMA,
                "secret_headers": {"X-Tool-Secret": "s3cr3t-value"},
            },
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "TOOL_ADDRESS_REFUSED"
        assert problem["title"] == "The tool's address is on a network tools may not reach"
        assert problem["detail"] == (
            "127.0.0.1 is a loopback address; an operator may allow it with " + SETTING
        )
        assert api.get("/v1/tools").json() == []
        # Nothing was recorded either: an agent cannot name the tool.
        agent = api.post("/v1/agents", json={"name": "a", "model": "dev", "tools": ["weather"]})
        assert agent.status_code == 422, agent.text
        assert agent.json()["code"] == "TOOL_UNKNOWN"
    assert tool_server.requests == []


def test_agentlog_up_lets_tools_on_loopback_be_registered_and_called(
    setting_unset: None, platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        session_id = open_session(api, setup_agent(api, tool_server)["agent_id"])
        turn = run_turn(api, session_id, 'call weather {"city": "Oslo"}')
    assert turn["status"] == "completed", turn
    assert "sunny" in turn["answer"]
    assert [r["body"] for r in tool_server.requests] == [{"city": "Oslo"}]


def test_a_tool_refused_at_call_time_fails_its_call_and_the_turn_goes_on(
    setting_unset: None, platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        # The tool now at an address on 10/8 (loopback is allowed, 10/8 is not), as a
        # gateway that did not check, or a name that resolves elsewhere now, would leave it.
        tenant_id = tenant_of(platform)
        moved = events.ToolDefinition(
            tool_id=derived_id(tenant_id, "tool/weather"),
            name="weather",
            url="http://10.0.0.1/x",
            parameters=WEATHER_SCHEMA,
            timeout_s=2,
        )
        record_tool(platform, api, moved)
        session_id = open_session(api, agent["agent_id"])

        turn = run_turn(api, session_id, 'call weather {"city": "Oslo"}')
        detail = api.get(f"/v1/turns/{turn['turn_id']}").json()

    refusal = f"10.0.0.1 is a private address; an operator may allow it with {SETTING}"
    assert [(c["tool"], c["status"], c["code"], c["detail"]) for c in detail["tool_calls"]] == [
        ("weather", "failed", "TOOL_ADDRESS_REFUSED", refusal)
    ]
    # The dev model answers after a tool result, failed or not: the turn completes.
    assert turn["status"] == "completed", turn
    assert turn["answer"] == f"tool weather returned: error TOOL_ADDRESS_REFUSED: {refusal}"
    assert tool_server.requests == []
