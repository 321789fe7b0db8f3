"""End to end over HTTP and the real broker: a tool-calling turn, streamed and recorded."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import jsonschema
import pytest

from schemas.envelope import from_kafka, trace_id
from schemas.export import committed_schemas
from tests.e2e.conftest import Platform, ToolServer
from tests.eventually import eventually
from tests.topics import read_all

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def setup_agent(api: httpx.Client, tool_server: ToolServer, **agent: Any) -> dict[str, Any]:
    tool = api.post(
        "/v1/tools",
        json={
            "name": "weather",
            "url": f"{tool_server.url}/weather",
            "parameters": WEATHER_SCHEMA,
            "timeout_s": 2,
            "secret_headers": {"X-Tool-Secret": "s3cr3t-value"},
        },
    )
    assert tool.status_code == 201, tool.text
    created = api.post(
        "/v1/agents", json={"name": "helper", "model": "dev", "tools": ["weather"], **agent}
    )
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def open_session(api: httpx.Client, agent_id: str) -> str:
    session = api.post("/v1/sessions", json={"agent_id": agent_id})
    assert session.status_code == 201, session.text
    return str(session.json()["session_id"])


class SseReader:
    """Reads a session's SSE stream in a thread, like a browser would."""

    def __init__(
        self,
        platform: Platform,
        session_id: str,
        last_event_id: str | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.events: list[dict[str, str]] = []
        self.connected = threading.Event()
        headers = {"Authorization": f"Bearer {platform.key}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self._stop_after = stop_after
        self._args = (f"{platform.url}/v1/sessions/{session_id}/stream", headers)
        self._closing = False
        self._response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.connected.wait(10), "SSE stream did not open"

    def __enter__(self) -> SseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing = True
        if self._response is not None:
            self._response.close()
        self.thread.join(5)

    def _run(self) -> None:
        url, headers = self._args
        try:
            with httpx.stream("GET", url, headers=headers, timeout=60) as response:
                self._response = response
                assert response.status_code == 200
                self._read(response)
        except httpx.HTTPError:
            if not self._closing:
                raise

    def _read(self, response: httpx.Response) -> None:
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                self.connected.set()  # the stream's start is fixed
                continue
            if not line:
                if "data" in event:
                    self.events.append(event)
                    if self._stop_after and len(self.events) >= self._stop_after:
                        return
                event = {}
                continue
            name, _, value = line.partition(":")
            event[name] = value.strip()

    def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        def seen() -> bool:
            assert predicate(self.events), f"SSE events so far: {self.events}"
            return True

        eventually(seen, "the SSE events wanted", timeout=timeout)


def read_topic(platform: Platform, name: str) -> list[Any]:
    """Every record of one of the platform's topics."""
    return read_all(platform.env["AGENTLOG_KAFKA_BOOTSTRAP_SERVERS"], f"{platform.prefix}{name}")


def test_tool_calling_turn_end_to_end(
    platform: Platform, tool_server: ToolServer, request: pytest.FixtureRequest
) -> None:
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        session_id = open_session(api, agent["agent_id"])
        sse = SseReader(platform, session_id)
        request.addfinalizer(sse.close)

        turn = api.post(
            f"/v1/sessions/{session_id}/turns?wait=30",
            json={"message": 'call weather {"city": "Oslo"}'},
        )
        assert turn.status_code == 200, turn.text
        body = turn.json()
        assert body["status"] == "completed"
        assert "sunny" in body["answer"]

        sse.wait_for(
            lambda evs: any(e["event"] == "message" and json.loads(e["data"])["final"] for e in evs)
        )
        kinds = [e["event"] for e in sse.events]
        assert "delta" in kinds
        final = [json.loads(e["data"]) for e in sse.events if e["event"] == "message"][-1]
        assert final["text"] == body["answer"]
        deltas = "".join(
            json.loads(e["data"])["text"]
            for e in sse.events
            if e["event"] == "delta" and json.loads(e["data"])["call_id"] == final["call_id"]
        )
        assert deltas == final["text"]

        messages = api.get(f"/v1/sessions/{session_id}/messages").json()["items"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[1]["tool_calls"][0]["arguments"] == {"city": "Oslo"}
        assert "sunny" in messages[2]["content"]

        detail = api.get(f"/v1/turns/{body['turn_id']}").json()
        assert [c["status"] for c in detail["tool_calls"]] == ["completed"]
        step_types = [s["type"].split(".")[1:3] for s in detail["events"]]
        assert ["model_call", "requested"] in step_types
        assert step_types[-1] == ["turn", "completed"]

    assert tool_server.requests[0]["headers"]["X-Tool-Secret"] == "s3cr3t-value"
    assert tool_server.requests[0]["body"] == {"city": "Oslo"}

    records = [r for r in read_topic(platform, "agentlog.events") if r.key == session_id.encode()]
    envs = [from_kafka(r.key, r.value, list(r.headers)) for r in records]
    assert [e.type.split(".", 1)[1].rsplit(".", 1)[0] for e in envs] == [
        "session.created",
        "turn.accepted",
        "turn.started",
        "message.appended",
        "model_call.requested",
        "model_call.completed",
        "message.appended",
        "tool_call.requested",
        "tool_call.completed",
        "message.appended",
        "model_call.requested",
        "model_call.completed",
        "message.appended",
        "turn.completed",
    ]
    schemas = committed_schemas()
    for record, env in zip(records, envs, strict=True):
        jsonschema.validate(json.loads(record.value), schemas[env.type])
        headers = dict(record.headers)
        for attribute in (
            "id",
            "source",
            "type",
            "subject",
            "time",
            "dataschema",
            "tenantid",
            "causationid",
            "correlationid",
            "sequence",
            "traceparent",
        ):
            assert headers[f"ce_{attribute}"], attribute
    turn_traces = {trace_id(e.traceparent) for e in envs[1:]}
    assert len(turn_traces) == 1, "every event of the turn shares one trace"
    everything = b"".join(
        r.value or b""
        for t in ("agentlog.events", "agentlog.commands", "agentlog.output")
        for r in read_topic(platform, t)
    )
    assert b"s3cr3t-value" not in everything
