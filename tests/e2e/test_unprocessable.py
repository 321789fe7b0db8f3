"""A step no worker can process ends its turn: failed with a registered code, recorded in
the log, and the session takes its next turn. A turn that stops making progress fails
at its deadline."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet

from schemas import events
from schemas.envelope import derived_id, envelope, from_kafka, to_kafka
from tests.e2e.conftest import DATABASE_URL, Platform, ToolServer
from tests.e2e.test_turns import open_session, read_topic, setup_agent
from tests.eventually import eventually


def tenant_of(platform: Platform) -> str:
    digest = hashlib.sha256(platform.key.encode()).hexdigest()
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute(
            f'SELECT tenant_id FROM "{platform.schema}".api_keys WHERE key_hash = %s', (digest,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def publish(platform: Platform, fact: events.ToolRegistered) -> None:
    """Write a fact straight to the platform's log, as an older version of it might have."""
    key, value, headers = to_kafka(envelope(fact, source="/tests", tenant_id=fact.tenant_id))
    platform.produce("agentlog.events", value, key, headers)


def record_tool(platform: Platform, api: httpx.Client, tool: events.ToolDefinition) -> None:
    """Register ``tool`` by writing ``ToolRegistered`` straight to the log (bypassing
    the gateway's checks, as an older version of it might), and wait until it is listed."""
    publish(platform, events.ToolRegistered(tenant_id=tenant_of(platform), tool=tool))
    fields = events.ToolDefinition.model_fields

    def listed() -> bool:
        tools = [{k: t[k] for k in fields} for t in api.get("/v1/tools").json()]
        return tool.model_dump(mode="json") in tools

    eventually(listed, f"the recorded tool {tool.name} to be projected", timeout=10)


def run_turn(api: httpx.Client, session_id: str, message: str) -> dict[str, Any]:
    response = api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": message})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_failed_in_the_log(platform: Platform, turn: dict[str, Any], consumer: str) -> None:
    """The turn failed with STEP_UNPROCESSABLE because ``consumer`` could not process one
    of its records; the log holds the record's dead letter and both facts."""
    assert turn["status"] == "failed", turn
    assert turn["error_code"] == "STEP_UNPROCESSABLE"
    assert turn["error_detail"].startswith(f"{consumer} could not process ")
    facts = [
        from_kafka(r.key, r.value, list(r.headers)).data
        for r in read_topic(platform, "agentlog.events")
    ]
    (step,) = [
        f
        for f in facts
        if isinstance(f, events.TurnStepUnprocessable) and f.turn_id == turn["turn_id"]
    ]
    assert step.consumer == consumer
    assert step.reason.startswith("HANDLER_FAILED: ")
    (failed,) = [
        f for f in facts if isinstance(f, events.TurnFailed) and f.turn_id == turn["turn_id"]
    ]
    assert failed.code == "STEP_UNPROCESSABLE"
    dead = [
        dict(r.headers)
        for r in read_topic(platform, "agentlog.deadletter")
        if dict(r.headers).get("ce_id", b"").decode() == step.record_id
    ]
    assert [d["dlq.consumer"] for d in dead] == [consumer.encode()]


def test_a_model_request_the_model_worker_cannot_process_fails_its_turn(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        session_id = open_session(api, setup_agent(api, tool_server)["agent_id"])
        # The dev model reads the arguments as JSON: nested this deep, parsing them fails.
        turn = run_turn(api, session_id, "call weather " + "[" * 5000 + "]" * 5000)
        assert_failed_in_the_log(platform, turn, "model")

        assert run_turn(api, session_id, "hello")["answer"] == "echo: hello"


def test_a_tool_call_the_tool_worker_cannot_process_fails_its_turn(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        session_id = open_session(api, agent["agent_id"])
        # The tool's secrets sealed under a key the platform does not hold (a key rotated
        # out before `agentlog secrets rotate` ran): they cannot be opened.
        foreign = Fernet(Fernet.generate_key()).encrypt(b'{"X-Tool-Secret": "x"}')
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            updated = conn.execute(
                f'UPDATE "{platform.schema}_secrets".tool_headers SET sealed = %s', (foreign,)
            ).rowcount
        assert updated == 1

        turn = run_turn(api, session_id, 'call weather {"city": "Oslo"}')
        assert_failed_in_the_log(platform, turn, "tool")
        assert tool_server.requests == []

        assert run_turn(api, session_id, "hello")["status"] == "completed"


def test_a_model_answer_the_orchestrator_cannot_process_fails_its_turn(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        # A tool whose schema points at a definition it lacks: today's gateway refuses
        # it, an older one recorded it, and checking arguments against it raises.
        tenant_id = tenant_of(platform)
        tool = events.ToolDefinition(
            tool_id=derived_id(tenant_id, "tool/weather"),
            name="weather",
            url=f"{tool_server.url}/weather",
            parameters={"type": "object", "properties": {"city": {"$ref": "#/$defs/missing"}}},
        )
        record_tool(platform, api, tool)
        session_id = open_session(api, agent["agent_id"])

        turn = run_turn(api, session_id, 'call weather {"city": "Oslo"}')
        assert_failed_in_the_log(platform, turn, "orchestrator")

        assert run_turn(api, session_id, "hello")["status"] == "completed"


def test_the_gateway_refuses_a_schema_whose_references_do_not_resolve(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        response = api.post(
            "/v1/tools",
            json={
                "name": "lookup",
                "url": f"{tool_server.url}/weather",
                "parameters": {"type": "object", "properties": {"a": {"$ref": "#/$defs/gone"}}},
            },
        )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_FAILED"


@pytest.fixture
def impatient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLOG_TURN_DEADLINE_S", "1")


def test_a_turn_without_progress_fails_at_its_deadline(
    impatient: None, platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        slow = api.post(
            "/v1/tools",
            json={"name": "slow", "url": f"{tool_server.url}/slow", "timeout_s": 10},
        )
        assert slow.status_code == 201, slow.text
        agent = api.post("/v1/agents", json={"name": "a", "model": "dev", "tools": ["slow"]})
        assert agent.status_code == 201, agent.text
        session_id = open_session(api, agent.json()["agent_id"])

        # The tool answers after 3 s; the turn's deadline is 1 s without progress.
        turn = run_turn(api, session_id, "call slow {}")
        assert turn["status"] == "failed", turn
        assert turn["error_code"] == "TURN_TIMED_OUT"
        assert turn["error_detail"] == "no progress for 1 s"

        assert run_turn(api, session_id, "hello")["status"] == "completed"
