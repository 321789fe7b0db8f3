"""Bad input gets the documented error or event, and nothing is lost."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx

from schemas.envelope import from_kafka
from schemas.events import UsageValue
from tests.e2e.conftest import Platform, ToolServer
from tests.e2e.test_turns import open_session, read_topic, setup_agent
from tests.kafka import REPO
from workers.providers.protocol_server import ModelServer, Reply


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"].endswith(code.lower().replace("_", "-"))
    return body


def turn(api: httpx.Client, session_id: str, message: str) -> dict[str, Any]:
    response = api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": message})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_requests_that_cannot_be_served_get_problem_details(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        session_id = open_session(api, agent["agent_id"])

        problem(
            api.post("/v1/sessions", json={"agent_id": "no-such-agent"}), 404, "AGENT_NOT_FOUND"
        )
        problem(
            api.post(
                "/v1/agents", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            400,
            "MALFORMED_BODY",
        )
        invalid = problem(api.post("/v1/agents", json={"model": "dev"}), 422, "VALIDATION_FAILED")
        assert invalid["errors"][0]["loc"] == ["body", "name"]
        problem(
            api.post(f"/v1/sessions/{session_id}/turns", json={"message": "x" * 70_000}),
            413,
            "MESSAGE_TOO_LARGE",
        )
        problem(httpx.get(f"{platform.url}/v1/agents"), 401, "UNAUTHENTICATED")
        problem(api.get("/v1/no-such-thing"), 404, "NOT_FOUND")
        not_a_schema = {"name": "odd", "url": tool_server.url, "parameters": {"type": "objekt"}}
        invalid_tool = problem(api.post("/v1/tools", json=not_a_schema), 422, "VALIDATION_FAILED")
        assert "not a valid JSON Schema" in invalid_tool["errors"][0]["msg"]
        problem(api.delete("/v1/agents"), 405, "METHOD_NOT_ALLOWED")
        problem(api.get("/v1/agents", params={"cursor": "%%%"}), 400, "INVALID_CURSOR")

        # Another tenant sees nothing of this one.
        other_key = subprocess.run(
            [sys.executable, "-m", "agentlog_cli", "tenants", "create", "other"],
            cwd=REPO,
            env=platform.env,
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        other = httpx.Client(
            base_url=platform.url, headers={"Authorization": f"Bearer {other_key}"}
        )
        problem(other.get(f"/v1/sessions/{session_id}"), 404, "SESSION_NOT_FOUND")
        problem(
            other.post(f"/v1/sessions/{session_id}/turns", json={"message": "hi"}),
            404,
            "SESSION_NOT_FOUND",
        )
        problem(other.get(f"/v1/agents/{agent['agent_id']}"), 404, "AGENT_NOT_FOUND")
        assert other.get("/v1/agents").json()["items"] == []

        disabled = api.post(f"/v1/agents/{agent['agent_id']}/disable")
        assert disabled.json()["status"] == "disabled"
        problem(
            api.post("/v1/sessions", json={"agent_id": agent["agent_id"]}), 409, "AGENT_DISABLED"
        )
        problem(
            api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": "hi"}),
            409,
            "AGENT_DISABLED",
        )
        versions = api.get(f"/v1/agents/{agent['agent_id']}/versions").json()
        assert [v["change"] for v in versions] == ["created", "disabled"]


def test_tool_problems_are_recorded_and_fed_back_to_the_model(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        for name, path, timeout in (("flaky", "/broken", 2), ("sluggish", "/slow", 0.5)):
            created = api.post(
                "/v1/tools",
                json={"name": name, "url": f"{tool_server.url}{path}", "timeout_s": timeout},
            )
            assert created.status_code == 201, created.text
        agent = setup_agent(api, tool_server)
        updated = api.patch(
            f"/v1/agents/{agent['agent_id']}", json={"tools": ["weather", "flaky", "sluggish"]}
        )
        assert updated.json()["version"] == 2
        session_id = open_session(api, agent["agent_id"])

        outcomes = {}
        for message in (
            'call shell {"cmd": "rm -rf /"}',
            'call weather {"town": "Oslo"}',
            "call flaky",
            "call sluggish",
        ):
            done = turn(api, session_id, message)
            assert done["status"] == "completed", done
            detail = api.get(f"/v1/turns/{done['turn_id']}").json()
            (call,) = detail["tool_calls"]
            outcomes[call["tool"]] = (call["status"], call["code"])
            assert call["code"] in done["answer"], "the error went back to the model"

    assert outcomes == {
        "shell": ("rejected", "TOOL_NOT_ALLOWED"),
        "weather": ("rejected", "TOOL_SCHEMA_INVALID"),
        "flaky": ("failed", "TOOL_HTTP_ERROR"),
        "sluggish": ("failed", "TOOL_TIMEOUT"),
    }
    assert [r["path"] for r in tool_server.requests] == ["/broken", "/slow"]


def test_unreadable_command_goes_to_the_dead_letter_topic_and_work_goes_on(
    platform: Platform, tool_server: ToolServer
) -> None:
    platform.produce(
        "agentlog.commands", b"definitely not a cloudevent", b"junk", [("origin", b"test")]
    )
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        session_id = open_session(api, agent["agent_id"])
        assert turn(api, session_id, "still working?")["answer"] == "echo: still working?"

    (dead,) = [
        r
        for r in read_topic(platform, "agentlog.deadletter")
        if dict(r.headers).get("dlq.consumer") == b"commands"
    ]
    headers = dict(dead.headers)
    assert dead.value == b"definitely not a cloudevent"
    assert headers["origin"] == b"test"
    assert headers["dlq.topic"] == f"{platform.prefix}agentlog.commands".encode()
    assert b"not a CloudEvent" in headers["dlq.reason"]
    assert int(headers["dlq.offset"]) >= 0


def test_provider_failures_and_timeouts_fail_the_turn_and_are_billed_once(
    platform: Platform, model_server: ModelServer
) -> None:
    attempts = 1 + int(platform.env["AGENTLOG_MODEL_MAX_RETRIES"])
    with platform.client() as api:
        outcomes = {}
        for model in ("openai:gpt-test", "anthropic:claude-test"):
            created = api.post("/v1/agents", json={"name": model, "model": model})
            assert created.status_code == 201, created.text
            session_id = open_session(api, created.json()["agent_id"])

            model_server.script(*(Reply(status=500) for _ in range(attempts)))
            unavailable = turn(api, session_id, "hello")
            model_server.script(*(Reply(stall_s=3, usage=UsageValue()) for _ in range(attempts)))
            timed_out = turn(api, session_id, "hello again")
            model_server.script(
                Reply(chunks=("aban", "doned"), cut_after=1, usage=UsageValue(input_tokens=3)),
                Reply(chunks=("recovered",), usage=UsageValue(input_tokens=4, output_tokens=1)),
            )
            recovered = turn(api, session_id, "third time")
            outcomes[model] = [
                (t["status"], t["error_code"], t["answer"])
                for t in (unavailable, timed_out, recovered)
            ]
            if model.startswith("anthropic"):
                # The cut attempt's input tokens (told by message_start) are billed too.
                assert recovered["input_tokens"] == 3 + 4

        problem(
            api.post("/v1/agents", json={"name": "x", "model": "gpt-4o"}), 422, "VALIDATION_FAILED"
        )

    expected = [
        ("failed", "MODEL_UNAVAILABLE", None),
        ("failed", "MODEL_TIMEOUT", None),
        ("completed", None, "recovered"),
    ]
    assert outcomes == {"openai:gpt-test": expected, "anthropic:claude-test": expected}
    usage = [
        from_kafka(r.key, r.value, list(r.headers)).data
        for r in read_topic(platform, "agentlog.usage")
    ]
    model_usage = [u for u in usage if u.kind == "model"]
    assert len(model_usage) == 6, "one usage record per model call, failed ones included"
    assert len({u.call_id for u in model_usage}) == 6
